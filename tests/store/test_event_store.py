"""The event store on a real PostgreSQL (embedded 18 and external 15): the system of record.

Each test gets its own schema, so the tests share one database per server without
seeing each other's events.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from eventstore.records import GENESIS_HASH, NewEvent, StoredEvent, hash_of
from eventstore.store import ConcurrencyError, EventStore
from tests.store.outbox import outbox_positions

pytestmark = pytest.mark.infra

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def event(n: int, **data: Any) -> NewEvent:
    return NewEvent(
        type="session-held",
        schema_version=2,
        data={"n": n, **data},
        actor="lw-test",
        occurred_at=T0 + timedelta(minutes=n),
        correlation_id=uuid4(),
    )


async def test_append_and_read_back(conn: psycopg.AsyncConnection[Any], store: EventStore) -> None:
    stream = uuid4()
    first = [event(1), event(2, note="ünïcode ✓", nested={"a": [1, 2.5, None, True]})]
    stored = await store.append(conn, stream, 0, first)
    stored += await store.append(conn, stream, 2, [event(3, score=23.21)])

    assert [e.version for e in stored] == [1, 2, 3]
    back = await store.read_stream(conn, stream)
    assert back == stored
    for new, got in zip([*first, event(3)], back, strict=True):
        assert got.stream_id == stream
        assert got.type == new.type and got.schema_version == new.schema_version
        assert got.actor == new.actor
    assert back[0].event_id == first[0].event_id
    assert back[1].data == {"n": 2, "note": "ünïcode ✓", "nested": {"a": [1, 2.5, None, True]}}
    assert back[1].occurred_at == first[1].occurred_at
    assert await store.stream_head(conn, stream) == (3, back[-1].hash)
    assert await store.stream_head(conn, uuid4()) == (0, GENESIS_HASH)
    assert await store.read_stream(conn, uuid4()) == []
    assert await store.count(conn) == 3


async def test_every_event_gets_one_outbox_row(
    conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    a, b = uuid4(), uuid4()
    stored = await store.append(conn, a, 0, [event(1), event(2), event(3)])
    stored += await store.append(conn, b, 0, [event(4)])
    stored += await store.append(conn, a, 3, [event(5)])
    assert await outbox_positions(conn, store) == [e.position for e in stored]
    assert await store.outbox_backlog(conn) == 5


async def test_rollback_leaves_neither_event_nor_outbox_row(
    conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    kept = await store.append(conn, uuid4(), 0, [event(1)])
    stream = uuid4()

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with conn.transaction():  # the caller's transaction, e.g. a command handler
            stored = await store.append(conn, stream, 0, [event(2), event(3)])
            assert len(stored) == 2
            assert len(await outbox_positions(conn, store)) == 3  # visible inside
            raise Abort

    assert await store.read_stream(conn, stream) == []
    assert await outbox_positions(conn, store) == [kept[0].position]
    assert await store.count(conn) == 1


async def test_stale_expected_version_is_refused(
    conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    stream = uuid4()
    await store.append(conn, stream, 0, [event(1), event(2)])
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(conn, stream, 1, [event(3)])
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    with pytest.raises(ConcurrencyError):
        await store.append(conn, stream, 3, [event(3)])  # ahead of the stream, too
    assert [e.version for e in await store.read_stream(conn, stream)] == [1, 2]
    assert await store.outbox_backlog(conn) == 2


async def test_two_writers_who_read_the_same_head_one_wins(
    conn: psycopg.AsyncConnection[Any], database_url: str, store: EventStore
) -> None:
    """Both writers read head N, then both append N+1: exactly one succeeds."""
    stream = uuid4()
    await store.append(conn, stream, 0, [event(1)])
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as a,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as b,
    ):
        head_a, _ = await store.stream_head(a, stream)
        head_b, _ = await store.stream_head(b, stream)
        assert head_a == head_b == 1
        winner = await store.append(a, stream, head_a, [event(2)])
        with pytest.raises(ConcurrencyError) as caught:
            await store.append(b, stream, head_b, [event(3)])
        assert caught.value.actual == 2
    assert [e.event_id for e in await store.read_stream(conn, stream)][1] == winner[0].event_id
    assert await store.outbox_backlog(conn) == 2


async def test_concurrent_append_race_is_caught_by_the_primary_key(
    conn: psycopg.AsyncConnection[Any], database_url: str, store: EventStore
) -> None:
    """The tight race: B checks the head while A's insert of N+1 is not yet committed,
    so B's version check passes; B then blocks on A's key and fails when A commits."""
    stream = uuid4()
    await store.append(conn, stream, 0, [event(1)])
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as a,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as b,
    ):
        tx_a = a.transaction()
        await tx_a.__aenter__()
        won = await store.append(a, stream, 1, [event(2)])  # inserted, not committed

        async def writer_b() -> list[StoredEvent]:
            async with b.transaction():
                return await store.append(b, stream, 1, [event(3), event(4)])

        b_task = asyncio.create_task(writer_b())
        b_pid = b.info.backend_pid

        async def b_waits_on_lock() -> bool:
            cur = await conn.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (b_pid,)
            )
            row = await cur.fetchone()
            return row is not None and row[0] == "Lock"

        deadline = asyncio.get_running_loop().time() + 10
        while not await b_waits_on_lock():
            assert not b_task.done(), "writer B finished without waiting for writer A"
            assert asyncio.get_running_loop().time() < deadline, "B never blocked on A"
            await asyncio.sleep(0.01)  # polling pg_stat_activity with a deadline
        await tx_a.__aexit__(None, None, None)  # commit A

        with pytest.raises(ConcurrencyError):
            await asyncio.wait_for(b_task, timeout=10)

    events = await store.read_stream(conn, stream)
    assert [(e.version, e.event_id) for e in events] == [
        (1, events[0].event_id),
        (2, won[0].event_id),
    ]
    assert await outbox_positions(conn, store) == [e.position for e in events]


async def test_update_and_delete_are_refused_by_the_trigger(
    conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    stream = uuid4()
    await store.append(conn, stream, 0, [event(1), event(2)])
    s = sql.Identifier(store.schema)
    statements = [
        sql.SQL("UPDATE {}.events SET data = '{{}}'::jsonb WHERE stream_id = %s").format(s),
        sql.SQL("UPDATE {}.events SET actor = 'someone-else' WHERE stream_id = %s").format(s),
        sql.SQL("DELETE FROM {}.events WHERE stream_id = %s").format(s),
    ]
    for statement in statements:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            await conn.execute(statement, (stream,))
    # TRUNCATE fires no row trigger, and a whole stream gone leaves no broken chain.
    with pytest.raises(psycopg.errors.RaiseException, match=r"append-only \(TRUNCATE refused\)"):
        await conn.execute(sql.SQL("TRUNCATE {}.events CASCADE").format(s))
    events = await store.read_stream(conn, stream)
    assert [e.data["n"] for e in events] == [1, 2]
    assert {e.actor for e in events} == {"lw-test"}


async def test_hash_chain_links_every_event_to_its_predecessor(
    conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    stream, other = uuid4(), uuid4()
    paris = timezone(timedelta(hours=1))
    await store.append(conn, stream, 0, [event(1), event(2, score=12.5)])
    await store.append(conn, other, 0, [event(3)])
    late = NewEvent(
        type="outcome-recorded",
        schema_version=1,
        data={"measure": "swemwbs", "score": 23.21, "items": [3, 4, 2, 5, 3, 4, 1], "x": "é"},
        actor="lw-test",
        occurred_at=datetime(2026, 2, 1, 11, 30, 0, 123456, tzinfo=paris),
        correlation_id=uuid4(),
        causation_id=uuid4(),
    )
    await store.append(conn, stream, 2, [late])

    events = await store.read_stream(conn, stream)
    assert [e.version for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    for previous, current in itertools.pairwise(events):
        assert current.prev_hash == previous.hash
    for e in events:
        assert hash_of(e) == e.hash, f"version {e.version} does not verify after a round trip"
        assert len(e.hash) == 32
    assert len({e.hash for e in events}) == 3
    (first_other,) = await store.read_stream(conn, other)
    assert first_other.prev_hash == GENESIS_HASH and hash_of(first_other) == first_other.hash

    # An edit that got past the trigger (e.g. by its owner disabling it) is detected.
    tampered = StoredEvent(**{**events[1].__dict__, "data": {**events[1].data, "score": 99.0}})
    assert hash_of(tampered) != tampered.hash


async def test_read_all_is_in_position_order_in_batches(
    conn: psycopg.AsyncConnection[Any], store: EventStore
) -> None:
    streams = [uuid4() for _ in range(3)]
    versions = dict.fromkeys(streams, 0)
    appended: list[StoredEvent] = []
    for i in range(11):  # interleave the streams
        s = streams[i % 3]
        appended += await store.append(conn, s, versions[s], [event(i)])
        versions[s] += 1

    batches = [b async for b in store.read_all(conn, batch=4)]
    assert [len(b) for b in batches] == [4, 4, 3]
    read = [e for b in batches for e in b]
    assert read == appended
    positions = [e.position for e in read]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    after = appended[5].position
    rest = [e async for b in store.read_all(conn, after_position=after) for e in b]
    assert rest == appended[6:]
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert [b async for b in store.read_all(conn, since=tomorrow)] == []


def test_concurrency_error_names_stream_and_versions() -> None:
    stream = UUID(int=7)
    assert "expected at version 2, found 3" in str(ConcurrencyError(stream, 2, 3))
    assert "version 3 was taken" in str(ConcurrencyError(stream, 2))
