"""The outbox relay's seal guard on a real store: forged events stay off the bus, sealed
ones go out in order, and the guard costs no round trips of its own (issue 14).

On a real PostgreSQL with a producer that records what it is given (the broker is not
what is tested here: ``tests/ops/test_republish.py`` runs the whole stack).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import AsyncCursor, sql

from bench.tamper import as_dba, forge_append
from bus.relay import OutboxRelay
from eventstore.store import EventStore
from tests.store.outbox import outbox_positions
from tests.store.test_event_store import event

pytestmark = pytest.mark.infra


class RecordingProducer:
    """What the relay asks of an ``AIOKafkaProducer``: ``send``, acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[UUID, int]] = []
        """(stream, version) of each event sent, in order."""

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        given = dict(headers)
        self.sent.append((UUID(given["ce_subject"].decode()), int(given["ce_streamversion"])))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@pytest.fixture(autouse=True)
def sealing_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Appends sealed with the key under ``tmp_path``, which the relay checks with."""
    monkeypatch.setenv("REFERRALNET_HOME", str(tmp_path))
    monkeypatch.delenv("REFERRALNET_SEAL_KEY_FILE", raising=False)
    return tmp_path


@pytest.fixture
async def store(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[EventStore]:
    s = EventStore(f"r_{uuid4().hex[:8]}", "/services/test")
    await s.create(conn)
    yield s
    await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s.schema)))


def relay_of(store: EventStore, database_url: str) -> tuple[OutboxRelay, RecordingProducer]:
    producer = RecordingProducer()
    relay = OutboxRelay(store, database_url, producer, "events", partitions=None)
    return relay, producer


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of every statement executed from now on (``conn.execute`` included)."""
    seen: list[str] = []
    execute = AsyncCursor.execute

    async def counted(self: AsyncCursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(query if isinstance(query, str) else query.as_string(self.connection))
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(AsyncCursor, "execute", counted)
    return seen


async def test_sealed_streams_go_out_in_order_across_batches(
    conn: psycopg.AsyncConnection[Any], store: EventStore, database_url: str
) -> None:
    relay, producer = relay_of(store, database_url)
    streams = [uuid4() for _ in range(3)]
    for s in streams:
        await store.append(conn, s, 0, [event(1), event(2)])
    assert await relay.drain(conn) == 6
    for s in streams:  # each stream's next batch starts after an event already sent
        await store.append(conn, s, 2, [event(3)])
        await store.append(conn, s, 3, [event(4)])
    assert await relay.drain(conn) == 6
    for s in streams:
        assert [v for sid, v in producer.sent if sid == s] == [1, 2, 3, 4]
    assert await outbox_positions(conn, store) == []


async def test_a_forged_event_and_what_follows_it_are_refused_in_later_batches_too(
    conn: psycopg.AsyncConnection[Any], store: EventStore, database_url: str
) -> None:
    relay, producer = relay_of(store, database_url)
    honest, forged = uuid4(), uuid4()
    for s in (honest, forged):
        await store.append(conn, s, 0, [event(1)])
    assert await relay.drain(conn) == 2
    await as_dba(conn)  # a perfect chain, but no seal: the DBA has no seal key
    await forge_append(conn, store, forged)
    await conn.execute("SET session_replication_role = DEFAULT")
    await conn.execute(
        sql.SQL(
            "INSERT INTO {s}.outbox (event_position) SELECT position FROM {s}.events "
            "WHERE stream_id = %s AND version = 2"
        ).format(s=sql.Identifier(store.schema)),
        (forged,),
    )
    await store.append(conn, honest, 1, [event(2)])
    assert await relay.drain(conn) == 2
    assert (forged, 2) not in producer.sent and (honest, 2) in producer.sent

    # the service appends after the forgery (sealed, chained to it): refused as well,
    # in a batch of its own, because the event before it was refused
    await store.append(conn, forged, 2, [event(3)])
    await store.append(conn, honest, 2, [event(3)])
    assert await relay.drain(conn) == 2
    assert [v for s, v in producer.sent if s == forged] == [1]
    assert [v for s, v in producer.sent if s == honest] == [1, 2, 3]
    cur = await conn.execute(
        sql.SQL("SELECT version, kind FROM {}.refused_events ORDER BY version").format(
            sql.Identifier(store.schema)
        )
    )
    assert [r[0] for r in await cur.fetchall()] == [2, 3]
    assert await outbox_positions(conn, store) == []


async def test_a_batch_costs_three_statements_however_many_streams_it_holds(
    conn: psycopg.AsyncConnection[Any],
    store: EventStore,
    database_url: str,
    statements: list[str],
) -> None:
    relay, producer = relay_of(store, database_url)
    streams = [uuid4() for _ in range(5)]
    for s in streams:
        await store.append(conn, s, 0, [event(1)])
    await relay.drain(conn)  # the first batch also learns where sealing began
    for s in streams:
        await store.append(conn, s, 1, [event(2), event(3)])
    statements.clear()
    assert await relay.drain(conn) == 10
    # one batch (fence, rows with their predecessors, delete) and the empty look after it
    # (fence, rows): the guard adds none
    assert len(statements) == 5, statements
    assert len(producer.sent) == 15
