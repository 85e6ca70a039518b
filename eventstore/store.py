"""A service's append-only event store and its outbox, in one PostgreSQL schema.

Each service owns one schema. An append writes the events and their outbox rows in the
caller's transaction, so an event is published if and only if it was stored. Optimistic
concurrency on (stream_id, version) means two writers cannot both append version N.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row

from eventstore.records import GENESIS_HASH, NewEvent, StoredEvent
from eventstore.rows import ROW_COLUMNS, ROW_TYPES, Row, chained_rows
from infra.migrations.catalog import EVENTS
from infra.migrations.runner import Target, migrate

EVENT_COLUMNS = (
    "position, stream_id, version, event_id, type, schema_version, occurred_at, "
    "recorded_at, actor, correlation_id, causation_id, data, prev_hash, hash, chain_format, seal"
)


APPEND = (
    "WITH ins AS (INSERT INTO {s}.events ("
    + ", ".join(ROW_COLUMNS)
    + ") OVERRIDING SYSTEM VALUE SELECT * FROM unnest("
    + ", ".join(f"%s::{t}[]" for t in ROW_TYPES)
    + ") RETURNING "
    + EVENT_COLUMNS
    + "), box AS (INSERT INTO {s}.outbox (event_position) "
    "SELECT position FROM ins ORDER BY position) "
    "SELECT ins.*, pg_notify(%s, '') AS notified FROM ins ORDER BY position"
)
"""Events, their outbox rows (in event order) and a NOTIFY for the relay, at once.

Positions are given (taken from the identity sequence before hashing, because chain
format 2 covers them), hence ``OVERRIDING SYSTEM VALUE``."""

HEAD_AND_POSITIONS = (
    "SELECT h.version, h.hash, p.positions FROM (SELECT array_agg(nextval("
    "pg_get_serial_sequence({table}, 'position'))) AS positions "
    "FROM generate_series(1, %s)) p LEFT JOIN LATERAL (SELECT version, hash FROM {s}.events "
    "WHERE stream_id = %s ORDER BY version DESC LIMIT 1) h ON true"
)
"""A stream's head and ``n`` fresh positions in one round trip."""

POSITIONS = (
    "SELECT array_agg(nextval(pg_get_serial_sequence({table}, 'position'))) "
    "FROM generate_series(1, %s)"
)


class ConcurrencyError(Exception):
    """Another writer appended to the stream first; reload and decide again."""

    def __init__(self, stream_id: UUID, expected: int, actual: int | None = None) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        super().__init__(
            f"stream {stream_id} expected at version {expected}, found {actual}"
            if actual is not None
            else f"stream {stream_id}: version {expected + 1} was taken by another writer"
        )


def stored_event(row: dict[str, Any]) -> StoredEvent:
    """Build a ``StoredEvent`` from a dict row of ``EVENT_COLUMNS``."""
    return StoredEvent(
        position=row["position"],
        stream_id=row["stream_id"],
        version=row["version"],
        event_id=row["event_id"],
        type=row["type"],
        schema_version=row["schema_version"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        actor=row["actor"],
        correlation_id=row["correlation_id"],
        causation_id=row["causation_id"],
        data=row["data"],
        prev_hash=bytes(row["prev_hash"]),
        hash=bytes(row["hash"]),
        chain_format=row["chain_format"],
        seal=None if row["seal"] is None else bytes(row["seal"]),
    )


class EventStore:
    """One service's stream of record: append with expected version, read back in order."""

    def __init__(self, schema: str, source: str) -> None:
        self.schema = schema
        self.source = source
        self._s = sql.Identifier(schema)
        self.notify_channel = f"{schema}_outbox"
        self._append = sql.SQL(APPEND).format(s=self._s)
        table = sql.Literal(f'"{schema}".events')
        self._head_and_positions = sql.SQL(HEAD_AND_POSITIONS).format(s=self._s, table=table)
        self._positions = sql.SQL(POSITIONS).format(table=table)

    async def create(self, conn: AsyncConnection[Any]) -> None:
        """Create or migrate the schema, tables and append-only trigger (``infra.migrations``)."""
        await migrate(conn, Target(EVENTS, self.schema))

    async def stream_head(self, conn: AsyncConnection[Any], stream_id: UUID) -> tuple[int, bytes]:
        """Current version and hash of a stream (0 and the genesis hash when empty)."""
        cur = await conn.execute(
            sql.SQL(
                "SELECT version, hash FROM {}.events WHERE stream_id = %s "
                "ORDER BY version DESC LIMIT 1"
            ).format(self._s),
            (stream_id,),
        )
        row = await cur.fetchone()
        return (row[0], bytes(row[1])) if row else (0, GENESIS_HASH)

    async def append(
        self,
        conn: AsyncConnection[Any],
        stream_id: UUID,
        expected_version: int,
        events: Sequence[NewEvent],
    ) -> list[StoredEvent]:
        """Append ``events`` after ``expected_version`` in the caller's transaction.

        Raises ``ConcurrencyError`` when the stream moved on; the primary key catches
        the race in which two writers both read the same head.
        """
        if not events:
            return []
        if expected_version == 0:  # a new stream: version 1's key catches an existing one
            version, prev = 0, GENESIS_HASH
            positions = await self.next_positions(conn, len(events))
        else:
            version, prev, positions = await self._head_and_fresh(conn, stream_id, len(events))
        if version != expected_version:
            raise ConcurrencyError(stream_id, expected_version, version)
        return await self._chain_and_insert(conn, stream_id, version, prev, events, positions)

    async def extend(
        self, conn: AsyncConnection[Any], stream_id: UUID, events: Sequence[NewEvent]
    ) -> list[StoredEvent]:
        """Append after the stream's current head, for callers that already serialise the
        stream's writers (they hold a lock on its row); the primary key still guards."""
        if not events:
            return []
        version, prev, positions = await self._head_and_fresh(conn, stream_id, len(events))
        return await self._chain_and_insert(conn, stream_id, version, prev, events, positions)

    async def next_positions(self, conn: AsyncConnection[Any], count: int) -> list[int]:
        """``count`` fresh values of the events' identity sequence, ascending."""
        cur = await conn.execute(self._positions, (count,))
        row = await cur.fetchone()
        return sorted(row[0]) if row and row[0] else []

    async def _head_and_fresh(
        self, conn: AsyncConnection[Any], stream_id: UUID, count: int
    ) -> tuple[int, bytes, list[int]]:
        cur = await conn.execute(self._head_and_positions, (count, stream_id))
        row = await cur.fetchone()
        version, head, positions = row if row else (None, None, [])
        if version is None:
            return 0, GENESIS_HASH, sorted(positions)
        return version, bytes(head), sorted(positions)

    async def _chain_and_insert(
        self,
        conn: AsyncConnection[Any],
        stream_id: UUID,
        version: int,
        prev: bytes,
        events: Sequence[NewEvent],
        positions: Sequence[int],
    ) -> list[StoredEvent]:
        rows, _ = chained_rows(stream_id, version, prev, events, positions)
        try:
            return await self.insert_rows(conn, rows)
        except errors.UniqueViolation as exc:
            raise ConcurrencyError(stream_id, version) from exc

    async def insert_rows(
        self, conn: AsyncConnection[Any], rows: Sequence[Row]
    ) -> list[StoredEvent]:
        """Insert chained rows, their outbox rows and the relay's wake-up: one statement.

        One statement, so it is atomic without a savepoint and costs one round trip; a
        taken (stream, version) raises ``UniqueViolation`` and stores nothing.
        """
        columns = [list(c) for c in zip(*rows, strict=True)]
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self._append, [*columns, self.notify_channel])
            return [stored_event(r) for r in await cur.fetchall()]

    async def read_stream(self, conn: AsyncConnection[Any], stream_id: UUID) -> list[StoredEvent]:
        """Every event of one stream, oldest first."""
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                sql.SQL(
                    "SELECT " + EVENT_COLUMNS + " FROM {}.events WHERE stream_id = %s "
                    "ORDER BY version"
                ).format(self._s),
                (stream_id,),
            )
            return [stored_event(r) for r in await cur.fetchall()]

    async def read_all(
        self,
        conn: AsyncConnection[Any],
        after_position: int = 0,
        batch: int = 5000,
        since: datetime | None = None,
    ) -> AsyncIterator[list[StoredEvent]]:
        """Every event in position order, in batches (for republish and audits)."""
        position = after_position
        while True:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    sql.SQL(
                        "SELECT " + EVENT_COLUMNS + " FROM {}.events WHERE position > %s "
                        "AND (%s::timestamptz IS NULL OR recorded_at >= %s) "
                        "ORDER BY position LIMIT %s"
                    ).format(self._s),
                    (position, since, since, batch),
                )
                rows = [stored_event(r) for r in await cur.fetchall()]
            if not rows:
                return
            yield rows
            position = rows[-1].position

    async def count(self, conn: AsyncConnection[Any]) -> int:
        """How many events the store holds."""
        cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}.events").format(self._s))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def outbox_backlog(self, conn: AsyncConnection[Any]) -> int:
        """Events stored but not yet acknowledged by the broker."""
        cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}.outbox").format(self._s))
        row = await cur.fetchone()
        return int(row[0]) if row else 0
