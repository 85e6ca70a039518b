"""One recorder contract, run against every implementation: in memory, the embedded
PostgreSQL and the external PostgreSQL 15 (as ``eventsourcing`` runs one abstract test
case per backend)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import psycopg
import pytest

from eventstore.recorder import MemoryRecorder, PostgresRecorder, Recorder, VersionConflict
from eventstore.records import NewEvent, hash_of
from eventstore.store import ConcurrencyError, EventStore
from tests.services.databases import BACKENDS, fresh_database

RecorderFactory = Callable[[], Recorder]
"""A fresh recorder over the same backing streams (a second writer, or a later reader)."""


def _event(n: int) -> NewEvent:
    return NewEvent(
        type="session-held",
        schema_version=2,
        data={"n": n, "note": "ü"},
        actor="lw",
        occurred_at=datetime(2026, 5, 1, 9, n, tzinfo=UTC),
        correlation_id=uuid.uuid4(),
    )


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.service), *BACKENDS])
async def recorders(request: pytest.FixtureRequest) -> AsyncIterator[RecorderFactory]:
    if request.param == "memory":
        memory = MemoryRecorder()
        yield lambda: memory
        return
    url = fresh_database(request.param, request)
    store = EventStore("contract", "/services/contract")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as first:
        await store.create(first)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as second:
            conns = iter([first, second, second, second])
            yield lambda: PostgresRecorder(store, next(conns))


async def test_append_then_read_in_order_with_versions(recorders: RecorderFactory) -> None:
    recorder, stream = recorders(), uuid.uuid4()
    stored = await recorder.append(stream, 0, [_event(1), _event(2)])
    more = await recorder.append(stream, 2, [_event(3)])
    assert [e.version for e in [*stored, *more]] == [1, 2, 3]
    read = await recorders().read(stream)
    assert [(e.version, e.data["n"], e.event_id) for e in read] == [
        (1, 1, stored[0].event_id),
        (2, 2, stored[1].event_id),
        (3, 3, more[0].event_id),
    ]
    assert [e.position for e in read] == sorted(e.position for e in read)
    assert [e.version for e in await recorder.read(stream, after=1)] == [2, 3]
    assert await recorder.read(stream, after=3) == []


async def test_events_are_chained_and_verifiable(recorders: RecorderFactory) -> None:
    recorder, stream = recorders(), uuid.uuid4()
    await recorder.append(stream, 0, [_event(1), _event(2)])
    await recorder.append(stream, 2, [_event(3)])
    read = await recorder.read(stream)
    assert read[0].prev_hash == bytes(32)
    assert [e.prev_hash for e in read[1:]] == [e.hash for e in read[:-1]]
    assert all(hash_of(e) == e.hash for e in read)


@pytest.mark.parametrize("expected", [0, 1, 3])
async def test_a_stale_expected_version_conflicts_and_stores_nothing(
    recorders: RecorderFactory, expected: int
) -> None:
    recorder, stream = recorders(), uuid.uuid4()
    await recorder.append(stream, 0, [_event(1), _event(2)])
    with pytest.raises(VersionConflict) as caught:
        await recorders().append(stream, expected, [_event(9)])
    assert isinstance(caught.value, ConcurrencyError)  # old callers still catch it
    assert caught.value.stream_id == stream and caught.value.expected == expected
    assert [e.data["n"] for e in await recorder.read(stream)] == [1, 2]


async def test_two_writers_from_the_same_head_one_wins(recorders: RecorderFactory) -> None:
    stream = uuid.uuid4()
    first, second = recorders(), recorders()
    await first.append(stream, 0, [_event(1)])
    await first.append(stream, 1, [_event(2)])
    with pytest.raises(VersionConflict):
        await second.append(stream, 1, [_event(3)])
    assert [e.data["n"] for e in await second.read(stream)] == [1, 2]


async def test_streams_are_independent_and_nothing_is_a_no_op(
    recorders: RecorderFactory,
) -> None:
    recorder, one, other = recorders(), uuid.uuid4(), uuid.uuid4()
    assert await recorder.read(one) == []
    assert await recorder.append(one, 0, []) == []
    await recorder.append(one, 0, [_event(1)])
    await recorder.append(other, 0, [_event(2)])
    assert [e.version for e in await recorder.read(other)] == [1]
    assert [e.data["n"] for e in await recorder.read(one)] == [1]
