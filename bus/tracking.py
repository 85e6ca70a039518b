"""Consumer positions and idempotency, kept in PostgreSQL with what a consumer writes.

A consumer that writes to PostgreSQL records, in the same transaction as its writes,
(1) the next offset of each partition it read and (2) the highest stream version it has
applied per (referral, producing service). (1) makes the stored position the source of
truth: the broker's group offsets may be lost (the embedded broker forgets them) and a
kill -9 may land anywhere. (2) makes re-delivery harmless even when offsets change, as
they do after ``republish`` refills a broker that lost its log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from schemas.envelope import CloudEvent, EnvelopeError, from_kafka
from schemas.registry import SchemaError, decode, parse_dataschema

log = structlog.get_logger(__name__)

TRACKING_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.positions (
    consumer    text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
CREATE TABLE IF NOT EXISTS {schema}.applied (
    stream_id text    NOT NULL,
    source    text    NOT NULL,
    version   integer NOT NULL,
    PRIMARY KEY (stream_id, source)
);
CREATE TABLE IF NOT EXISTS {schema}.dead_letter_outbox (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic     text    NOT NULL,
    partition integer NOT NULL,
    "offset"  bigint  NOT NULL,
    key       bytea,
    value     bytea,
    headers   jsonb   NOT NULL,
    reason    text    NOT NULL,
    consumer  text    NOT NULL
);
"""


@dataclass(frozen=True)
class Record:
    """A Kafka record, independent of the client library that fetched it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class Rejected(Exception):
    """A well-formed event the consumer cannot apply (it goes to dead letters, with why)."""


@dataclass(frozen=True)
class Outgoing:
    """An event a consumer emits to another topic before it commits its position."""

    topic: str
    event: CloudEvent


class Projection(Protocol):
    """Something that applies bus events to its PostgreSQL tables.

    ``interested_in`` (None: every type) lets a consumer skip, at the cost of only a
    position update, the many journey events it does not care about. ``apply`` may
    raise ``Rejected`` before it has written anything; ``may_reject`` says it may also
    do so after writing, and only then does each event pay for a savepoint.

    A projection may also offer ``apply_all(conn, [(event, model), ...])``: the new
    events of a whole transaction at once, in order (set-based SQL instead of
    statements per event), used instead of ``apply`` when ``may_reject`` is false.

    Or, keeping ``apply`` per event (each may be rejected alone), ``prepare(conn,
    events)`` before the first and ``finish(conn)`` after the last of a transaction's
    new events: state is read once and written once per batch, not per event.
    """

    consumer: str
    schema: str
    interested_in: frozenset[str] | None
    may_reject: bool

    async def apply(
        self, conn: AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]: ...


@dataclass
class BatchResult:
    """What one transaction over a partition's batch did."""

    applied: int = 0
    skipped: int = 0
    duplicates: int = 0
    dead: int = 0
    next_offset: int | None = None
    seek_to: int | None = None
    outgoing: list[Outgoing] = field(default_factory=list)


async def create_tracking(conn: AsyncConnection[Any], schema: str) -> None:
    """Create the tracking tables in a consumer's schema (idempotent)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('referralnet-ddl'))")
        await conn.execute(sql.SQL(TRACKING_DDL).format(schema=sql.Identifier(schema)))


async def stored_positions(
    conn: AsyncConnection[Any], schema: str, consumer: str
) -> dict[tuple[str, int], int]:
    """Next offset per (topic, partition) as recorded by ``consumer``."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT topic, partition, next_offset FROM {}.positions WHERE consumer = %s"
        ).format(sql.Identifier(schema)),
        (consumer,),
    )
    return {(t, p): o for t, p, o in await cur.fetchall()}


async def _lock_positions(
    conn: AsyncConnection[Any], schema: str, consumer: str, topic: str, partitions: list[int]
) -> dict[int, int | None]:
    """Create-or-lock the position rows; each stored next offset, or None where it is new.

    A new consumer has no position yet: it starts wherever the log starts (which is not
    offset 0 on a cluster whose retention has deleted old segments).
    """
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO {s}.positions AS p (consumer, topic, partition, next_offset) "
            "SELECT %s, %s, part, 0 FROM unnest(%s::int4[]) AS part "
            "ON CONFLICT (consumer, topic, partition) "
            "DO UPDATE SET next_offset = p.next_offset RETURNING partition, next_offset, (xmax = 0)"
        ).format(s=sql.Identifier(schema)),
        (consumer, topic, partitions),
    )
    return {int(r[0]): None if r[2] else int(r[1]) for r in await cur.fetchall()}


async def keep_start(
    conn: AsyncConnection[Any], projection: Projection, topic: str, firsts: Mapping[int, int]
) -> None:
    """Record where partitions without a position start, outside any batch transaction.

    A consumer's first batch sets its position in the batch's own transaction; if that
    rolls back (a failed publish) and the client re-delivers later records first, the
    consumer would take them for its start. Called on that failure path.
    """
    parts = list(firsts)
    await conn.execute(
        sql.SQL(
            "INSERT INTO {}.positions (consumer, topic, partition, next_offset) "
            "SELECT %s, %s, * FROM unnest(%s::int4[], %s::int8[]) ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(projection.schema)),
        (projection.consumer, topic, parts, [firsts[p] for p in parts]),
    )


async def _store_positions(
    conn: AsyncConnection[Any],
    projection: Projection,
    topic: str,
    moves: dict[int, int],
    expected: dict[int, int] | None = None,
) -> set[int]:
    """Set the next offset of several partitions in one statement; the ones it moved.

    With ``expected`` it is a compare-and-set: a partition moves only from where the
    caller thinks it stands (a fresh fetch position that another writer did not move).
    """
    parts = list(moves)
    cur = await conn.execute(
        sql.SQL(
            "UPDATE {}.positions AS p SET next_offset = m.next, updated_at = now() "
            "FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS m(part, next, expected) "
            "WHERE p.consumer = %s AND p.topic = %s AND p.partition = m.part "
            "AND (m.expected IS NULL OR p.next_offset = m.expected) RETURNING p.partition"
        ).format(sql.Identifier(projection.schema)),
        (
            parts,
            [moves[p] for p in parts],
            [expected[p] if expected else None for p in parts],
            projection.consumer,
            topic,
        ),
    )
    return {int(r[0]) for r in await cur.fetchall()}


async def _applied_versions(
    conn: AsyncConnection[Any], schema: str, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Highest applied stream version per (referral, producing service), one query."""
    if not keys:
        return {}
    subjects, sources = zip(*keys, strict=True)
    cur = await conn.execute(
        sql.SQL(
            "SELECT a.stream_id, a.source, a.version FROM {}.applied a "
            "JOIN unnest(%s::text[], %s::text[]) AS k(stream_id, source) "
            "USING (stream_id, source)"
        ).format(sql.Identifier(schema)),
        (list(subjects), list(sources)),
    )
    return {(r[0], r[1]): r[2] for r in await cur.fetchall()}


async def _record_applied(
    conn: AsyncConnection[Any], schema: str, versions: dict[tuple[str, str], int]
) -> None:
    if not versions:
        return
    keys = list(versions)
    await conn.execute(
        sql.SQL(
            "INSERT INTO {}.applied AS a (stream_id, source, version) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::int4[]) "
            "ON CONFLICT (stream_id, source) DO UPDATE "
            "SET version = GREATEST(a.version, EXCLUDED.version)"
        ).format(sql.Identifier(schema)),
        ([k[0] for k in keys], [k[1] for k in keys], [versions[k] for k in keys]),
    )


async def _dead_letter(
    conn: AsyncConnection[Any], schema: str, consumer: str, record: Record, reason: str
) -> None:
    log.warning(
        "dead_letter",
        consumer=consumer,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
    )
    await conn.execute(
        sql.SQL(
            'INSERT INTO {}.dead_letter_outbox (topic, partition, "offset", key, value, headers, '
            "reason, consumer) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(sql.Identifier(schema)),
        (
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            Jsonb([[k, v.decode("utf-8", "replace")] for k, v in record.headers]),
            reason,
            consumer,
        ),
    )


RETRY_HEADER = "x-dead-letter-retry"

Publish = Callable[[Sequence[Outgoing]], Awaitable[None]]


async def apply_batch(
    conn: AsyncConnection[Any],
    projection: Projection,
    topic: str,
    partition: int,
    records: Sequence[Record],
    publish: Publish | None = None,
) -> BatchResult:
    """``apply_batches`` for one partition."""
    results = await apply_batches(conn, projection, topic, {partition: records}, publish)
    return results[partition]


async def apply_batches(
    conn: AsyncConnection[Any],
    projection: Projection,
    topic: str,
    batches: Mapping[int, Sequence[Record]],
    publish: Publish | None = None,
) -> dict[int, BatchResult]:
    """Apply the records of several partitions of a topic in one transaction.

    Per partition: records before the stored position are skipped (re-delivery); a
    first record after it means the fetch position ran ahead of the truth (positions
    were reset, e.g. by ``republish``): nothing of that partition is applied and
    ``seek_to`` tells the caller where to go. Outgoing events are published (and
    acknowledged) before the transaction commits, so a crash re-publishes rather than
    loses; consumers downstream deduplicate. One transaction for all partitions: a
    fetch spread over many partitions costs one commit, not one per partition.
    """
    results = {p: BatchResult() for p in batches}
    pending = {p: list(recs) for p, recs in batches.items() if recs}
    if projection.interested_in is not None:
        dull = {
            p: recs
            for p, recs in pending.items()
            if not any(_maybe_interesting(projection, r) for r in recs)
        }
        if dull:
            moved = await _store_positions(
                conn,
                projection,
                topic,
                {p: recs[-1].offset + 1 for p, recs in dull.items()},
                expected={p: recs[0].offset for p, recs in dull.items()},
            )
            for p in moved:
                results[p].skipped = len(pending[p])
                results[p].next_offset = pending.pop(p)[-1].offset + 1
    if not pending:
        return results
    async with conn.transaction():
        stored = await _lock_positions(
            conn, projection.schema, projection.consumer, topic, sorted(pending)
        )
        decoded: list[tuple[int, Record, CloudEvent, Any]] = []
        moves: dict[int, int] = {}
        for p, recs in sorted(pending.items()):
            start = stored.get(p)
            start = recs[0].offset if start is None else start
            fresh = [r for r in recs if r.offset >= start]
            results[p].duplicates = len(recs) - len(fresh)
            if not fresh:
                continue
            if fresh[0].offset > start:
                results[p].seek_to = start
                continue
            for r in fresh:
                if projection.interested_in is not None and not _maybe_interesting(projection, r):
                    results[p].skipped += 1  # a header peek: no envelope to parse
                    continue
                if d := await _decode(conn, projection, r, results[p]):
                    decoded.append((p, *d))
            moves[p] = results[p].next_offset = fresh[-1].offset + 1
        if not moves:
            return results
        outgoing = await _apply_new(conn, projection, decoded, results)
        await _store_positions(conn, projection, topic, moves)
        if outgoing and publish is not None:
            await publish(outgoing)
    return results


async def _apply_new(
    conn: AsyncConnection[Any],
    projection: Projection,
    decoded: list[tuple[int, Record, CloudEvent, Any]],
    results: dict[int, BatchResult],
) -> list[Outgoing]:
    """Apply what was not applied before (by stream version) and remember it."""
    seen = await _applied_versions(
        conn, projection.schema, {(e.subject, e.source) for _, _, e, _ in decoded}
    )
    changed: dict[tuple[str, str], int] = {}
    fresh: list[tuple[int, Record, CloudEvent, Any]] = []
    for p, record, event, model in decoded:
        key = (event.subject, event.source)
        if seen.get(key, 0) >= event.streamversion and not _retried(record):
            results[p].duplicates += 1
            continue
        fresh.append((p, record, event, model))
        seen[key] = max(seen.get(key, 0), event.streamversion)
    outgoing: list[Outgoing] = []
    apply_all = getattr(projection, "apply_all", None)
    if apply_all is not None and not projection.may_reject:
        outgoing.extend(await apply_all(conn, [(e, m) for _, _, e, m in fresh]))
        for p, _, event, _ in fresh:
            results[p].applied += 1
            key = (event.subject, event.source)
            changed[key] = max(changed.get(key, 0), event.streamversion)
    else:
        prepare, finish = getattr(projection, "prepare", None), getattr(projection, "finish", None)
        if prepare is not None:
            await prepare(conn, [e for _, _, e, _ in fresh])
        for p, record, event, model in fresh:
            if await _apply_one(conn, projection, record, event, model, results[p]):
                key = (event.subject, event.source)
                changed[key] = max(changed.get(key, 0), event.streamversion)
        if finish is not None:
            await finish(conn)
    for result in results.values():
        outgoing.extend(result.outgoing)
    await _record_applied(conn, projection.schema, changed)
    return outgoing


def _retried(record: Record) -> bool:
    """A dead letter re-driven by ``dead-letters retry`` (it was never applied)."""
    return any(k == RETRY_HEADER for k, _ in record.headers)


def _maybe_interesting(projection: Projection, record: Record) -> bool:
    """Cheap header peek; anything unreadable counts as interesting (it may be poison)."""
    assert projection.interested_in is not None
    for key, value in record.headers:
        if key == "ce_type":
            return value.decode("utf-8", "replace") in projection.interested_in
    return True


async def _decode(
    conn: AsyncConnection[Any], projection: Projection, record: Record, result: BatchResult
) -> tuple[Record, CloudEvent, Any] | None:
    """Envelope and schema check; poison goes to dead letters, other types are skipped."""
    try:
        event = from_kafka(record.key, record.value, record.headers)
        if projection.interested_in is not None and event.type not in projection.interested_in:
            result.skipped += 1  # not this consumer's business, valid or not
            return None
        event_type, version = parse_dataschema(event.dataschema)
        if event_type != event.type:
            raise SchemaError(f"ce_dataschema names {event_type!r} but ce_type is {event.type!r}")
        model = decode(event.type, version, event.data)
    except (EnvelopeError, SchemaError) as exc:
        await _dead_letter(conn, projection.schema, projection.consumer, record, str(exc))
        result.dead += 1
        return None
    return record, event, model


async def _apply_one(
    conn: AsyncConnection[Any],
    projection: Projection,
    record: Record,
    event: CloudEvent,
    model: Any,
    result: BatchResult,
) -> bool:
    """Apply one new event; False when it was rejected (and dead-lettered instead)."""
    try:
        if projection.may_reject:
            # A savepoint, so a rejected event leaves no half-applied rows behind and can
            # be re-driven later (a retried dead letter was never applied, so skips dedup).
            async with conn.transaction():
                result.outgoing.extend(await projection.apply(conn, event, model))
        else:
            result.outgoing.extend(await projection.apply(conn, event, model))
    except Rejected as exc:
        await _dead_letter(conn, projection.schema, projection.consumer, record, str(exc))
        result.dead += 1
        return False
    result.applied += 1
    return True
