"""Bulk appends (COPY) and group commit keep every guarantee of ``EventStore.append``.

Same chain, same outbox, same optimistic concurrency: a reader cannot tell which path
wrote an event, and a writer that loses a race is told so, alone.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from bench.bulk import StreamAppend, append_many, read_streams
from bench.group_commit import GroupCommitter
from eventstore.records import NewEvent, hash_of
from eventstore.store import ConcurrencyError, EventStore
from tests.store.outbox import outbox_positions

pytestmark = pytest.mark.infra

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def event(n: int, **data: Any) -> NewEvent:
    return NewEvent(
        type="session-held",
        schema_version=2,
        data={"n": n, "note": "ünïcode ✓", "nested": {"b": [1, 2.5, None], "a": True}, **data},
        actor="lw-test",
        occurred_at=T0 + timedelta(minutes=n),
        correlation_id=uuid4(),
    )


async def test_append_many_chains_like_append_and_fills_the_outbox(
    conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    a, b = uuid4(), uuid4()
    await store.append(conn, a, 0, [event(0)])
    positions = await append_many(
        conn,
        store,
        [
            StreamAppend(a, 1, [event(1), event(2)]),
            StreamAppend(b, 0, [event(3)]),
            StreamAppend(a, 3, [event(4)]),  # the same stream again, after the first part
        ],
    )
    assert positions == sorted(positions) and len(positions) == 4
    await store.append(conn, a, 4, [event(5)])  # the per-stream path continues the chain
    streams = await read_streams(conn, store, [a, b])
    assert [e.version for e in streams[a]] == [1, 2, 3, 4, 5]
    assert [e.data["n"] for e in streams[a]] == [0, 1, 2, 4, 5]
    for events in streams.values():
        assert all(hash_of(e) == e.hash for e in events)
        assert all(x.hash == y.prev_hash for x, y in itertools.pairwise(events))
    assert streams[a] == await store.read_stream(conn, a)
    assert await outbox_positions(conn, store) == sorted(
        e.position for s in streams.values() for e in s
    )


async def test_append_many_is_all_or_nothing_on_a_stale_version(
    conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    a, b = uuid4(), uuid4()
    await store.append(conn, a, 0, [event(1)])
    with pytest.raises(ConcurrencyError):
        await append_many(conn, store, [StreamAppend(b, 0, [event(2)]), StreamAppend(a, 0, [])])
    assert await store.read_stream(conn, b) == []
    assert len(await outbox_positions(conn, store)) == 1


async def test_group_commit_shares_commits_and_fails_only_the_loser(
    database_url: str, conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    streams = [uuid4() for _ in range(20)]
    async with GroupCommitter(database_url, store) as gc:
        first = await asyncio.gather(*(gc.append(s, 0, [event(i)]) for i, s in enumerate(streams)))
        # Two commands race for version 2 of one stream; others carry on.
        results = await asyncio.gather(
            gc.append(streams[0], 1, [event(100)]),
            gc.append(streams[0], 1, [event(101)]),
            *(gc.append(s, 1, [event(200), event(201)]) for s in streams[1:]),
            return_exceptions=True,
        )
        assert gc.batches < gc.appends  # commits were shared
    assert [len(r) for r in first] == [1] * 20
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(losers) == 1 and isinstance(losers[0], ConcurrencyError)
    stored = await read_streams(conn, store, streams)
    assert [e.version for e in stored[streams[0]]] == [1, 2]
    assert all([e.version for e in stored[s]] == [1, 2, 3] for s in streams[1:])
    returned = {e.event_id: e for r in [*first, *results] if isinstance(r, list) for e in r}
    for events in stored.values():
        for e in events:
            assert returned[e.event_id] == e  # what append returned is what was stored
            assert hash_of(e) == e.hash
    assert len(await outbox_positions(conn, store)) == 20 + 1 + 19 * 2


async def test_group_commit_survives_a_writer_outside_it(
    database_url: str, conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    """Version 1 taken behind the committer's back (uncommitted when it checked): the
    batch falls back to one transaction per append, and only that append fails."""
    taken, free = uuid4(), uuid4()
    other: psycopg.AsyncConnection[Any]
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other,
        GroupCommitter(database_url, store) as gc,
    ):
        async with other.transaction():
            await store.append(other, taken, 0, [event(1)])
            both = asyncio.gather(
                gc.append(taken, 0, [event(2)]),
                gc.append(free, 0, [event(3)]),
                return_exceptions=True,
            )
            await _until_someone_waits_for_a_lock(conn)
        results = await both
    assert isinstance(results[0], ConcurrencyError)
    assert isinstance(results[1], list) and results[1][0].version == 1
    assert [e.data["n"] for e in await store.read_stream(conn, taken)] == [1]
    assert len(await store.read_stream(conn, free)) == 1


async def _until_someone_waits_for_a_lock(conn: psycopg.AsyncConnection[Any]) -> None:
    for _ in range(200):
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        row = await cur.fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.05)  # polling the server's view of lock waits, with a bound
    raise AssertionError("the committer never waited for the outside writer's lock")
