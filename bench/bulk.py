"""Appending the events of many streams in one transaction, with binary COPY.

``EventStore.append`` costs a few round trips per stream, which caps a service at about
a thousand streams a second. Seeding the benchmarks needs the rate of ``COPY`` (which
``bench/append.py`` and ``bench/peer.py`` also measure; no service uses it): positions
are taken from the identity sequence in one query (``COPY`` writes given identity
values, like ``OVERRIDING SYSTEM VALUE``), the hash chain is computed here, and events
and outbox rows go in by two binary ``COPY`` statements. The guarantees are those of
``append``: every stream is checked against its expected version, the primary key
catches a racing writer, and an event is in the outbox if and only if it was stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, errors, sql
from psycopg.types.json import set_json_loads

from eventstore.records import (
    GENESIS_HASH,
    NewEvent,
    StoredEvent,
)
from eventstore.rows import ROW_COLUMNS, ROW_TYPES, chained_rows
from eventstore.store import EVENT_COLUMNS, ConcurrencyError, EventStore

COPY_COLUMNS = ROW_COLUMNS
COPY_TYPES = ROW_TYPES


@dataclass(frozen=True)
class StreamAppend:
    """The events to append to one stream, after the version the caller last saw."""

    stream_id: UUID
    expected_version: int
    events: Sequence[NewEvent]


async def stream_heads(
    conn: AsyncConnection[Any], store: EventStore, stream_ids: Iterable[UUID]
) -> dict[UUID, tuple[int, bytes]]:
    """Version and hash of the last event of each stream that has any, in one query."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT DISTINCT ON (stream_id) stream_id, version, hash FROM {}.events "
            "WHERE stream_id = ANY(%s) ORDER BY stream_id, version DESC"
        ).format(sql.Identifier(store.schema)),
        (list(set(stream_ids)),),
    )
    return {r[0]: (r[1], bytes(r[2])) for r in await cur.fetchall()}


async def heads_and_positions(
    conn: AsyncConnection[Any], store: EventStore, stream_ids: Iterable[UUID], count: int
) -> tuple[dict[UUID, tuple[int, bytes]], list[int]]:
    """``stream_heads`` and ``count`` fresh positions (ascending), in one round trip."""
    table = sql.Literal(f'"{store.schema}".events')
    cur = await conn.execute(
        sql.SQL(
            "SELECT * FROM (SELECT DISTINCT ON (stream_id) stream_id, version, hash, "
            "NULL::int8[] FROM {}.events WHERE stream_id = ANY(%s) "
            "ORDER BY stream_id, version DESC) h "
            "UNION ALL SELECT NULL, NULL, NULL, (SELECT array_agg(nextval("
            "pg_get_serial_sequence({}, 'position'))) FROM generate_series(1, %s))"
        ).format(sql.Identifier(store.schema), table),
        (list(set(stream_ids)), count),
    )
    heads: dict[UUID, tuple[int, bytes]] = {}
    positions: list[int] = []
    for stream_id, version, head, fresh in await cur.fetchall():
        if stream_id is None:
            positions = sorted(fresh or ())
        else:
            heads[stream_id] = (version, bytes(head))
    return heads, positions


async def next_positions(conn: AsyncConnection[Any], store: EventStore, count: int) -> list[int]:
    """``count`` fresh values of the events' identity sequence, ascending (one array)."""
    return await store.next_positions(conn, count)


async def copy_rows(
    conn: AsyncConnection[Any],
    store: EventStore,
    appends: Sequence[StreamAppend],
    heads: dict[UUID, tuple[int, bytes]],
    notify: bool = True,
) -> list[int]:
    """COPY the events of ``appends`` (chained after ``heads``) and their outbox rows.

    Rows are hashed while the COPY streams, so the server indexes one part of the batch
    while Python hashes the next. Runs in the caller's transaction; returns positions.
    """
    total = sum(len(a.events) for a in appends)
    if not total:
        return []
    positions = await next_positions(conn, store, total)
    s = sql.Identifier(store.schema)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in COPY_COLUMNS)
    start = 0
    async with conn.cursor() as cur:
        async with cur.copy(
            sql.SQL("COPY {}.events ({}) FROM STDIN (FORMAT BINARY)").format(s, columns)
        ) as copy:
            copy.set_types(list(COPY_TYPES))
            for append in appends:
                version, prev = heads.get(append.stream_id, (0, GENESIS_HASH))
                end = start + len(append.events)
                rows, prev = chained_rows(
                    append.stream_id, version, prev, append.events, positions[start:end]
                )
                start = end
                heads[append.stream_id] = (version + len(rows), prev)
                for row in rows:
                    await copy.write_row(row)
        await cur.execute(
            sql.SQL("INSERT INTO {}.outbox (event_position) SELECT unnest(%s::int8[])").format(s),
            (positions,),
        )
        if notify:
            await cur.execute("SELECT pg_notify(%s, '')", (store.notify_channel,))
    return positions


async def append_many(
    conn: AsyncConnection[Any],
    store: EventStore,
    appends: Sequence[StreamAppend],
    *,
    notify: bool = True,
) -> list[int]:
    """Append to many streams in one transaction; return the new events' positions.

    All or nothing: a stream that is not at its expected version raises
    ``ConcurrencyError`` and nothing is stored. A stream may appear more than once; its
    later appends then expect the version its earlier ones reached.
    """
    try:
        async with conn.transaction():
            heads = await stream_heads(conn, store, (a.stream_id for a in appends))
            versions = {sid: v for sid, (v, _) in heads.items()}
            for append in appends:
                version = versions.get(append.stream_id, 0)
                if version != append.expected_version:
                    raise ConcurrencyError(append.stream_id, append.expected_version, version)
                versions[append.stream_id] = version + len(append.events)
            return await copy_rows(conn, store, appends, heads, notify=notify)
    except errors.UniqueViolation as exc:  # a writer outside this batch took a version
        first = appends[0]
        raise ConcurrencyError(first.stream_id, first.expected_version) from exc


def _json_from_bytes(data: str | bytes) -> Any:
    # json.loads(bytes) sniffs the encoding and strips whitespace on every call; the
    # server always sends UTF-8 jsonb output without surrounding whitespace.
    return _DECODER.raw_decode(data.decode() if isinstance(data, bytes) else data)[0]


_DECODER = json.JSONDecoder()


async def read_streams(
    conn: AsyncConnection[Any], store: EventStore, stream_ids: Sequence[UUID]
) -> dict[UUID, list[StoredEvent]]:
    """Every event of each of ``stream_ids``, oldest first, in one query.

    ``read_stream`` costs a round trip per stream; a consumer, an audit or an export
    that needs hundreds of streams asks for them together.
    """
    result: dict[UUID, list[StoredEvent]] = {sid: [] for sid in stream_ids}
    async with conn.cursor() as cur:
        set_json_loads(_json_from_bytes, cur)
        await cur.execute(
            sql.SQL(
                "SELECT " + EVENT_COLUMNS + " FROM {}.events WHERE stream_id = ANY(%s) "
                "ORDER BY stream_id, version"
            ).format(sql.Identifier(store.schema)),
            (list(stream_ids),),
        )
        for row in await cur.fetchall():  # in EVENT_COLUMNS order
            result[row[1]].append(
                StoredEvent(
                    position=row[0],
                    stream_id=row[1],
                    version=row[2],
                    event_id=row[3],
                    type=row[4],
                    schema_version=row[5],
                    occurred_at=row[6],
                    recorded_at=row[7],
                    actor=row[8],
                    correlation_id=row[9],
                    causation_id=row[10],
                    data=row[11],
                    prev_hash=bytes(row[12]),
                    hash=bytes(row[13]),
                    chain_format=row[14],
                    seal=None if row[15] is None else bytes(row[15]),
                )
            )
    return result
