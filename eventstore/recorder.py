"""The recorder: what a service's decisions need of its stream of record, and no more.

``append(stream, expected_version, events)`` and ``read(stream, after)``, with a typed
``VersionConflict`` when another writer got there first. Two implementations behind the
one interface (after John Bywater's ``eventsourcing`` recorders): ``PostgresRecorder``
over a service's ``EventStore`` (chain, seal and outbox exactly as before, in the
caller's transaction) and ``MemoryRecorder`` for the fast tests. Both chain their events
with the same format-2 hash (``eventstore.records.chain_link``), so what verifies in one
verifies in the other; ``tests/store/test_recorder.py`` runs one contract over both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from eventstore.records import GENESIS_HASH, NewEvent, StoredEvent
from eventstore.rows import chained_rows
from eventstore.store import EVENT_COLUMNS, ConcurrencyError, EventStore, stored_event


class VersionConflict(ConcurrencyError):
    """The stream is not at ``expected`` any more (or never was): reload, decide again.

    A ``ConcurrencyError``, so code that already catches the store's error keeps working.
    """


class Recorder(Protocol):
    """A service's streams of record, as its command handlers see them."""

    async def append(
        self, stream: UUID, expected_version: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent]:
        """Store ``events`` as versions ``expected_version + 1 ...`` of ``stream``.

        Returns them as stored (versions, hashes). Raises ``VersionConflict`` and stores
        nothing when the stream's head is not ``expected_version``. No events: no-op.
        """
        ...

    async def read(self, stream: UUID, after: int = 0) -> list[StoredEvent]:
        """The stream's events with version > ``after``, oldest first ([] if none)."""
        ...


class PostgresRecorder:
    """``Recorder`` over one service's ``EventStore``, in the caller's connection.

    The append is the store's own (one statement: events, outbox rows, relay wake-up),
    so chain format, sealing and outbox are exactly those of every other writer; it runs
    in whatever transaction ``conn`` is in, beside the projection rows the caller writes.
    """

    def __init__(self, store: EventStore, conn: AsyncConnection[Any]) -> None:
        self.store, self.conn = store, conn
        self._read = sql.SQL(
            "SELECT " + EVENT_COLUMNS + " FROM {}.events WHERE stream_id = %s AND version > %s "
            "ORDER BY version"
        ).format(sql.Identifier(store.schema))

    async def append(
        self, stream: UUID, expected_version: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent]:
        try:
            return await self.store.append(self.conn, stream, expected_version, events)
        except VersionConflict:
            raise
        except ConcurrencyError as exc:
            raise VersionConflict(stream, expected_version, exc.actual) from exc

    async def read(self, stream: UUID, after: int = 0) -> list[StoredEvent]:
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self._read, (stream, after))
            return [stored_event(r) for r in await cur.fetchall()]


class MemoryRecorder:
    """``Recorder`` in a dict, for tests with no database: same versions, same chain.

    Not thread-safe and not durable; an append is all-or-nothing because it checks the
    head before it changes anything (asyncio runs it without a switch in between).
    """

    def __init__(self) -> None:
        self.streams: dict[UUID, list[StoredEvent]] = {}
        self.position = 0

    async def append(
        self, stream: UUID, expected_version: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent]:
        if not events:
            return []
        held = self.streams.get(stream, [])
        if len(held) != expected_version:
            raise VersionConflict(stream, expected_version, len(held))
        prev = held[-1].hash if held else GENESIS_HASH
        positions = list(range(self.position + 1, self.position + 1 + len(events)))
        recorded = datetime.now(UTC)
        rows, _ = chained_rows(stream, expected_version, prev, events, positions, recorded, b"")
        stored = [
            StoredEvent(
                position=row[0],
                stream_id=stream,
                version=row[2],
                event_id=event.event_id,
                type=event.type,
                schema_version=event.schema_version,
                occurred_at=event.occurred_at,
                recorded_at=recorded,
                actor=event.actor,
                correlation_id=event.correlation_id,
                causation_id=event.causation_id,
                data=event.data,
                prev_hash=row[12],
                hash=row[13],
            )
            for row, event in zip(rows, events, strict=True)
        ]
        self.position = positions[-1]
        self.streams[stream] = [*held, *stored]
        return stored

    async def read(self, stream: UUID, after: int = 0) -> list[StoredEvent]:
        return [e for e in self.streams.get(stream, []) if e.version > after]
