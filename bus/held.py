"""Records a consumer holds until the versions before them arrive (``bus.ordering``).

Held records live in the consumer's own schema (table ``held``), written in the same
transaction as its position, so a crash neither loses nor releases them. Each row keeps
the record as it came (topic, partition, offset, key, value, headers) so it is decoded
and applied exactly like a fresh one when its turn comes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql

from bus.ordering import StreamKey


@dataclass(frozen=True)
class HeldRecord:
    """One held record, as stored."""

    stream: StreamKey
    version: int
    digest: int
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class HeldSummary:
    """What ``status`` shows: held records, the oldest's time, how many streams wait."""

    count: int
    oldest_held_at: datetime | None
    streams: int


async def held_summary(conn: AsyncConnection[Any], schema: str) -> HeldSummary:
    """Held records of one consumer schema (zeros when it has no ``held`` table yet)."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".held',))
    row = await cur.fetchone()
    if not row or not row[0]:
        return HeldSummary(0, None, 0)
    cur = await conn.execute(
        sql.SQL(
            "SELECT count(*), min(held_at), count(DISTINCT (stream_id, source)) FROM {}.held"
        ).format(sql.Identifier(schema))
    )
    row = await cur.fetchone()
    assert row is not None  # an aggregate always returns a row
    return HeldSummary(int(row[0]), row[1], int(row[2]))


async def load(
    conn: AsyncConnection[Any], schema: str, streams: Collection[StreamKey]
) -> list[HeldRecord]:
    """Every held record of ``streams``, locked for this transaction, in version order."""
    if not streams:
        return []
    ids, sources = zip(*streams, strict=True)
    cur = await conn.execute(
        sql.SQL(
            "SELECT h.stream_id, h.source, h.version, h.digest, h.topic, h.partition, "
            'h."offset", h.key, h.value, h.header_names, h.header_values FROM {}.held h '
            "JOIN unnest(%s::text[], %s::text[]) AS k(stream_id, source) "
            "USING (stream_id, source) ORDER BY h.stream_id, h.source, h.version FOR UPDATE"
        ).format(sql.Identifier(schema)),
        (list(ids), list(sources)),
    )
    return [
        HeldRecord(
            (r[0], r[1]),
            r[2],
            int(r[3]),
            r[4],
            r[5],
            r[6],
            None if r[7] is None else bytes(r[7]),
            None if r[8] is None else bytes(r[8]),
            [(n, None if v is None else bytes(v)) for n, v in zip(r[9], r[10], strict=True)],
        )
        for r in await cur.fetchall()
    ]


async def hold(conn: AsyncConnection[Any], schema: str, records: Sequence[HeldRecord]) -> None:
    """Store records to apply later (rare: only gaps are held, so one statement each)."""
    if not records:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            sql.SQL(
                "INSERT INTO {}.held (stream_id, source, version, digest, topic, partition, "
                '"offset", key, value, header_names, header_values) '
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::text[], %s::bytea[]) "
                "ON CONFLICT DO NOTHING"
            ).format(sql.Identifier(schema)),
            [
                (
                    *r.stream,
                    r.version,
                    r.digest,
                    r.topic,
                    r.partition,
                    r.offset,
                    r.key,
                    r.value,
                    [k for k, _ in r.headers],
                    [v for _, v in r.headers],
                )
                for r in records
            ],
        )


async def release(
    conn: AsyncConnection[Any], schema: str, held: Sequence[tuple[StreamKey, int]]
) -> None:
    """Delete held records that were applied or dead-lettered, in one statement."""
    if not held:
        return
    await conn.execute(
        sql.SQL(
            "DELETE FROM {}.held h USING unnest(%s::text[], %s::text[], %s::int4[]) "
            "AS r(s, src, v) WHERE h.stream_id = r.s AND h.source = r.src AND h.version = r.v"
        ).format(sql.Identifier(schema)),
        ([s[0] for s, _ in held], [s[1] for s, _ in held], [v for _, v in held]),
    )
