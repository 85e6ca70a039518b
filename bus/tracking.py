"""Consumer positions and gap-safe application, kept in PostgreSQL with what a consumer writes.

A consumer that writes to PostgreSQL records, in the same transaction as its writes,
(1) the next offset of each partition it read, (2) per stream the last version it
applied and a digest of what it applied at each version, and (3) the records it holds
because an earlier version of their stream has not arrived (``bus.held``). (1) makes the
stored position the source of truth: the broker's group offsets may be lost (the
embedded broker forgets them) and a kill -9 may land anywhere. (2) and (3) implement the
rule of ``bus.ordering``: a stream is applied in version order, never skipping one; a
re-delivery is ignored, a conflicting one is dead-lettered. Re-reading any part of a
log is therefore harmless, as it must be after ``republish`` refills a broker.

Every tracked consumer (the view runner, the faust agents, replay) goes through
``apply_batches``: one decode, one rule, one dead-letter path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from bus import held as held_store
from bus.held import HeldRecord
from bus.ordering import Candidate, StreamKey, plan
from infra.migrations.catalog import TRACKING
from infra.migrations.runner import Target, migrate
from schemas.envelope import CloudEvent, EnvelopeError, Headers, digest, from_kafka
from schemas.registry import SchemaError, decode, parse_dataschema

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Record:
    """A Kafka record, independent of the client library that fetched it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def record_of(message: Any) -> Record:
    """A ``Record`` from an aiokafka or faust message (headers as a list or a dict).

    The one conversion every consumer uses: header values are kept as they came, null
    included, so the envelope codec judges them (never ``str(None)``).
    """
    raw = message.headers
    items = () if raw is None else raw.items() if isinstance(raw, dict) else raw
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        [(k, v.encode() if isinstance(v, str) else v) for k, v in items],
    )


class Rejected(Exception):
    """A well-formed event the consumer cannot apply (it goes to dead letters, with why)."""


@dataclass(frozen=True)
class Outgoing:
    """An event a consumer emits to another topic before it commits its position."""

    topic: str
    event: CloudEvent


STREAM_VERSION = "stream-version"
"""Streams are (subject, ce_source) numbered by ``ce_streamversion`` (``referral-events``)."""
ORG_SEQUENCE = "org-sequence"
"""Streams are (subject, topic) numbered by ``ce_orgsequence`` (partner topics)."""


class Projection(Protocol):
    """Something that applies bus events to its PostgreSQL tables.

    ``interested_in`` (None: every type) lets a consumer skip the journey events it does
    not care about: they still take their place in their stream (so a later version is
    not held for them) but are not schema-checked nor handed to ``apply``. ``apply`` may
    raise ``Rejected`` before it has written anything; ``may_reject`` says it may also
    do so after writing, and only then does each event pay for a savepoint. A rejected
    event is dead-lettered and its stream waits for it (the later versions are held)
    until it is re-driven.

    A projection may also offer ``apply_all(conn, [(event, model), ...])``: the new
    events of a whole transaction at once, in order (set-based SQL instead of
    statements per event), used instead of ``apply`` when ``may_reject`` is false.

    Or, keeping ``apply`` per event (each may be rejected alone), ``prepare(conn,
    events)`` before the first and ``finish(conn)`` after the last of a transaction's
    new events: state is read once and written once per batch, not per event.

    ``ordering`` (optional, default ``STREAM_VERSION``): ``ORG_SEQUENCE`` for consumers
    of a partner topic, which carries a filtered subset of each stream. And
    ``number_outgoing(conn, outgoing) -> outgoing`` (optional): a last look at a
    transaction's outgoing events before they are published (the distributor numbers
    the copies per partner topic there).
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
    """What one transaction over a partition's batch did.

    ``duplicates`` counts records before the stored position and exact re-deliveries;
    ``held`` the records now waiting for an earlier version; ``skipped`` the events of
    types the consumer does not apply.
    """

    applied: int = 0
    skipped: int = 0
    duplicates: int = 0
    dead: int = 0
    held: int = 0
    next_offset: int | None = None
    seek_to: int | None = None


class Probe(Protocol):
    """What the broker says about a partition (``bus.offsets.OffsetProbe``)."""

    async def __call__(self, topic: str, partition: int, offset: int) -> int | None:
        """The offset of the first record at or after ``offset`` (None: none yet)."""
        ...

    async def highwater(self, topic: str, partition: int) -> int | None:
        """The partition's high watermark (None: no answer)."""
        ...

    async def record_at(self, topic: str, partition: int, offset: int) -> Record | None:
        """The record at exactly ``offset`` (None: none there, or no answer)."""
        ...


async def create_tracking(conn: AsyncConnection[Any], schema: str) -> None:
    """Create or migrate the tracking tables in a consumer's schema (``infra.migrations``)."""
    await migrate(conn, Target(TRACKING, schema))


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
) -> dict[int, tuple[int | None, int | None]]:
    """Create-or-lock the position rows; each (stored next offset, or None where it is
    new; the mark of the log it was read from, or None where unknown).

    A new consumer has no position yet: it starts wherever the log starts (which is not
    offset 0 on a cluster whose retention has deleted old segments).
    """
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO {s}.positions AS p (consumer, topic, partition, next_offset) "
            "SELECT %s, %s, part, 0 FROM unnest(%s::int4[]) AS part "
            "ON CONFLICT (consumer, topic, partition) "
            "DO UPDATE SET next_offset = p.next_offset "
            "RETURNING partition, next_offset, (xmax = 0), mark"
        ).format(s=sql.Identifier(schema)),
        (consumer, topic, partitions),
    )
    return {
        int(r[0]): (None if r[2] else int(r[1]), None if r[3] is None else int(r[3]))
        for r in await cur.fetchall()
    }


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


async def move_positions(
    conn: AsyncConnection[Any], projection: Projection, topic: str, moves: Mapping[int, int]
) -> None:
    """Set stored positions outright (e.g. back to the log's start after the broker lost
    it; re-reading is harmless under the stream rule)."""
    parts = list(moves)
    await conn.execute(
        sql.SQL(
            "INSERT INTO {}.positions AS p (consumer, topic, partition, next_offset) "
            "SELECT %s, %s, * FROM unnest(%s::int4[], %s::int8[]) "
            "ON CONFLICT (consumer, topic, partition) DO UPDATE "
            "SET next_offset = EXCLUDED.next_offset, mark = NULL, updated_at = now()"
        ).format(sql.Identifier(projection.schema)),
        (projection.consumer, topic, parts, [moves[p] for p in parts]),
    )


async def reset_lost_log(
    conn: AsyncConnection[Any],
    projection: Projection,
    topic: str,
    found: Mapping[int, tuple[int, int]],
) -> set[int]:
    """The broker lost its log (per partition: (stored position, high watermark), the
    first beyond the second): positions back to 0 (re-reading is harmless under the
    stream rule), and the loss noted in ``log_losses``, where ``status`` and
    ``republish`` see it after the position no longer shows it.

    Only where the stored position is *still* beyond the high watermark (read again,
    locked): a caller's reading may be stale (``republish`` reset and refilled
    meanwhile), and a stale reset would note a loss that was already mended. Returns the
    partitions reset.
    """
    parts = list(found)
    async with conn.transaction():
        cur = await conn.execute(
            sql.SQL(
                "UPDATE {s}.positions AS p SET next_offset = 0, mark = NULL, updated_at = now() "
                "FROM (SELECT q.partition, q.next_offset AS old, m.hw FROM {s}.positions q "
                "JOIN unnest(%s::int4[], %s::int8[]) AS m(part, hw) ON q.partition = m.part "
                "WHERE q.consumer = %s AND q.topic = %s AND q.next_offset > m.hw FOR UPDATE) o "
                "WHERE p.consumer = %s AND p.topic = %s AND p.partition = o.partition "
                "RETURNING p.partition, o.old, o.hw"
            ).format(s=sql.Identifier(projection.schema)),
            (
                parts,
                [found[p][1] for p in parts],
                projection.consumer,
                topic,
                projection.consumer,
                topic,
            ),
        )
        reset = [(int(r[0]), int(r[1]), int(r[2])) for r in await cur.fetchall()]
        if reset:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.log_losses AS l (consumer, topic, partition, stored, "
                    "highwater) SELECT %s, %s, * FROM unnest(%s::int4[], %s::int8[], %s::int8[]) "
                    "ON CONFLICT (consumer, topic, partition) DO UPDATE SET "
                    "stored = GREATEST(l.stored, EXCLUDED.stored), "
                    "highwater = EXCLUDED.highwater, found_at = now()"
                ).format(sql.Identifier(projection.schema)),
                (
                    projection.consumer,
                    topic,
                    [r[0] for r in reset],
                    [r[1] for r in reset],
                    [r[2] for r in reset],
                ),
            )
    return {r[0] for r in reset}


async def _store_positions(
    conn: AsyncConnection[Any],
    projection: Projection,
    topic: str,
    moves: dict[int, int],
    marks: dict[int, int],
) -> None:
    """Set the next offset (and the mark of the record before it) of several partitions
    in one statement."""
    parts = list(moves)
    await conn.execute(
        sql.SQL(
            "UPDATE {}.positions AS p SET next_offset = m.next, mark = m.mark, "
            "updated_at = now() "
            "FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS m(part, next, mark) "
            "WHERE p.consumer = %s AND p.topic = %s AND p.partition = m.part"
        ).format(sql.Identifier(projection.schema)),
        (
            parts,
            [moves[p] for p in parts],
            [marks.get(p) for p in parts],
            projection.consumer,
            topic,
        ),
    )


def log_mark(record: Record) -> int:
    """What identifies a record of a log: the digest of its key, value and envelope
    headers. A position remembers the mark of the record before it; the same offset of
    another log (a broker that lost its log and was refilled, a recreated topic) holds
    another record, so a stale position cannot pass for a position in the new log."""
    return digest(record.key, record.value, record.headers)


async def _stream_heads(
    conn: AsyncConnection[Any], schema: str, keys: set[StreamKey]
) -> tuple[dict[StreamKey, int], set[StreamKey]]:
    """Last applied version per stream, and the streams with held records, one query
    (the held records themselves are read only when there are some: rarely)."""
    if not keys:
        return {}, set()
    subjects, sources = zip(*keys, strict=True)
    cur = await conn.execute(
        sql.SQL(
            "SELECT k.stream_id, k.source, a.version, EXISTS (SELECT 1 FROM {s}.held h "
            "WHERE h.stream_id = k.stream_id AND h.source = k.source) "
            "FROM unnest(%s::text[], %s::text[]) AS k(stream_id, source) "
            "LEFT JOIN {s}.applied a USING (stream_id, source)"
        ).format(s=sql.Identifier(schema)),
        (list(subjects), list(sources)),
    )
    heads: dict[StreamKey, int] = {}
    waiting: set[StreamKey] = set()
    for stream_id, source, version, held in await cur.fetchall():
        if version is not None:
            heads[(stream_id, source)] = version
        if held:
            waiting.add((stream_id, source))
    return heads, waiting


async def _applied_digests(
    conn: AsyncConnection[Any], schema: str, wanted: set[tuple[StreamKey, int]]
) -> dict[tuple[StreamKey, int], int]:
    """Digest of what was applied at each (stream, version) asked for, one query."""
    if not wanted:
        return {}
    items = list(wanted)
    cur = await conn.execute(
        sql.SQL(
            "SELECT k.stream_id, k.source, k.version, a.digests[k.version] "
            "FROM unnest(%s::text[], %s::text[], %s::int4[]) AS k(stream_id, source, version) "
            "JOIN {}.applied a USING (stream_id, source)"
        ).format(sql.Identifier(schema)),
        ([k[0][0] for k in items], [k[0][1] for k in items], [k[1] for k in items]),
    )
    return {((r[0], r[1]), r[2]): int(r[3]) for r in await cur.fetchall() if r[3] is not None}


async def _record_applied(
    conn: AsyncConnection[Any], schema: str, applied: Sequence[Candidate[_Entry]]
) -> None:
    """Each stream's new head and the digests of the versions applied, one statement.

    The versions a batch applies to a stream are consecutive (the rule), so its digests
    replace the stream's from the first of them on (after a reset of the head, e.g. by
    ``republish``, that is from version 1).
    """
    if not applied:
        return
    first: dict[StreamKey, int] = {}
    digests: dict[StreamKey, list[int]] = {}
    for c in applied:
        first.setdefault(c.stream, c.version)
        digests.setdefault(c.stream, []).append(c.digest)
    keys = list(first)
    await conn.execute(
        sql.SQL(
            "INSERT INTO {}.applied AS a (stream_id, source, version, digests) "
            "SELECT s, src, f + cardinality(d) - 1, d "
            "FROM unnest(%s::text[], %s::text[], %s::int4[], %s::jsonb[]) AS r(s, src, f, j), "
            "LATERAL (SELECT ARRAY(SELECT x::int8 FROM jsonb_array_elements_text(j) "
            "WITH ORDINALITY AS e(x, i) ORDER BY i)) AS z(d) "
            "ON CONFLICT (stream_id, source) DO UPDATE SET "
            "version = EXCLUDED.version, "
            # Versions before the batch's first keep their digests; a stream applied
            # before digests were kept gets NULLs there (unknown: a duplicate).
            "digests = (a.digests || array_fill(NULL::int8, ARRAY[GREATEST(0, "
            "EXCLUDED.version - cardinality(EXCLUDED.digests) - cardinality(a.digests))]))"
            "[1:EXCLUDED.version - cardinality(EXCLUDED.digests)] || EXCLUDED.digests"
        ).format(sql.Identifier(schema)),
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [first[k] for k in keys],
            [Jsonb(digests[k]) for k in keys],
        ),
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
            # A null header value is kept as empty text: the outbox's format is text, and
            # the reason says it was null.
            Jsonb([[k, (v or b"").decode("utf-8", "replace")] for k, v in record.headers]),
            reason,
            consumer,
        ),
    )


MAX_VERSION = 2**31 - 1
"""Stream versions and partner sequences are kept as PostgreSQL ``integer``."""

RETRY_HEADER = "x-dead-letter-retry"
"""Marks a record re-driven by ``dead-letters retry``: JSON ``{"dead_letters": [ids],
"consumers": [names], "reason": ...}``. The stream rule needs no exception for it (a dead
letter was never applied, so it arrives as the version its stream waits for). Only the
consumers named take it: the others applied or skipped the original already, or parked
it in a letter of their own, so a poison record retried while still poison is parked
again once per consumer that parked it, not once per consumer of the topic."""


def retried_for_others(record: Record, consumer: str) -> bool:
    """Whether ``record`` is a dead-letter retry addressed to other consumers only.

    A marker without ``consumers`` (an older retry) is addressed to every consumer; an
    unreadable one too (the envelope codec then judges the record as any other).
    """
    for key, value in record.headers:
        if key != RETRY_HEADER or value is None:
            continue
        try:
            marker = json.loads(value)
        except ValueError:
            return False
        names = marker.get("consumers") if isinstance(marker, dict) else None
        return isinstance(names, list) and consumer not in names
    return False


Publish = Callable[[Sequence[Outgoing]], Awaitable[None]]


@dataclass(frozen=True)
class _Entry:
    """A record that passed the envelope, placed in its stream."""

    partition: int
    record: Record
    event: CloudEvent
    model: Any  # the schema-checked data; None for a type the consumer skips
    interesting: bool


async def apply_batch(
    conn: AsyncConnection[Any],
    projection: Projection,
    topic: str,
    partition: int,
    records: Sequence[Record],
    publish: Publish | None = None,
    probe: Probe | None = None,
) -> BatchResult:
    """``apply_batches`` for one partition."""
    results = await apply_batches(
        conn, projection, topic, {partition: records}, publish, probe=probe
    )
    return results[partition]


async def apply_batches(
    conn: AsyncConnection[Any],
    projection: Projection,
    topic: str,
    batches: Mapping[int, Sequence[Record]],
    publish: Publish | None = None,
    probe: Probe | None = None,
) -> dict[int, BatchResult]:
    """Apply the records of several partitions of a topic in one transaction.

    Per partition: records before the stored position are skipped (re-delivery). A first
    record after it means either that the fetch position ran ahead of the truth
    (positions were reset, e.g. by ``republish``): nothing of that partition is applied
    and ``seek_to`` tells the caller where to go; or that the offsets in between do not
    exist (Kafka offsets are not contiguous: transaction markers, compaction, a broker's
    quirks). ``probe`` asks the broker which: with it, a position naming a missing offset
    moves on to the next record that exists instead of seeking back to it forever.

    The records then go through the stream rule (``bus.ordering``): applied in version
    order, duplicates ignored, conflicts and anything the envelope or the schemas refuse
    dead-lettered with the reason, early versions held. Outgoing events are published
    (and acknowledged) before the transaction commits, so a crash re-publishes rather
    than loses; consumers downstream deduplicate. One transaction for all partitions: a
    fetch spread over many partitions costs one commit, not one per partition.
    """
    results = {p: BatchResult() for p in batches}
    pending = {p: list(recs) for p, recs in batches.items() if recs}
    if not pending:
        return results
    async with conn.transaction():
        stored = await _lock_positions(
            conn, projection.schema, projection.consumer, topic, sorted(pending)
        )
        fresh_records: list[tuple[int, Record]] = []
        moves: dict[int, int] = {}
        lost: dict[int, tuple[int, int]] = {}
        marks: dict[int, int] = {}
        for p, recs in sorted(pending.items()):
            start, mark = stored.get(p, (None, None))
            start = recs[0].offset if start is None else start
            fresh = [r for r in recs if r.offset >= start]
            results[p].duplicates = len(recs) - len(fresh)
            if not fresh:
                highwater = None if probe is None else await _log_lost(probe, topic, p, start)
                if highwater is None and await _log_replaced(probe, topic, p, start, mark, recs):
                    highwater = REPLACED
                if highwater is not None:
                    results[p].duplicates, results[p].seek_to = 0, 0
                    lost[p] = (start, highwater)
                continue
            if (len(fresh) < len(recs) or fresh[0].offset > start) and (
                await _log_replaced(probe, topic, p, start, mark, recs)
            ):
                # Records below the position (or a gap before it) in *another* log than
                # the position was read from: all of it is new. Read it from the start.
                results[p].duplicates, results[p].seek_to = 0, 0
                lost[p] = (start, REPLACED)
                continue
            if fresh[0].offset > start and probe is not None:
                found = await probe(topic, p, start)
                if found is not None and found > start:
                    where = (projection.schema, projection.consumer, topic, p)
                    if not _hole_confirmed(where, start, found):
                        # Not yet: apply nothing and leave the fetch alone (a seek per
                        # batch races the client's fetcher); the consumer's follow timer
                        # brings it back to the stored position to look again.
                        log.info("offset_hole_suspected", topic=topic, partition=p,
                                 missing=start, next=found)  # fmt: skip
                        continue
                    log.warning("offset_hole", topic=topic, partition=p, missing=start, next=found)
                    start = found
            if fresh[0].offset > start:
                results[p].seek_to = start
                continue
            fresh_records.extend((p, r) for r in fresh)
            moves[p] = results[p].next_offset = fresh[-1].offset + 1
            marks[p] = log_mark(fresh[-1])
        if lost:
            await reset_lost_log(conn, projection, topic, lost)
        if not moves:
            return results
        outgoing = await _apply_in_order(conn, projection, topic, fresh_records, results)
        await _store_positions(conn, projection, topic, moves, marks)
        if outgoing and publish is not None:
            await publish(outgoing)
    return results


REPLACED = -1
"""The high watermark noted in ``log_losses`` when the log was not short but another one."""

HOLE_CONFIRM_SECONDS = 2.0
"""How long the broker must keep saying that the offsets after a position are missing
before the consumer moves past them. A log being refilled under the consumer (republish
sending while it reads) answered "no record from 4 until 67" twice in a row on the
embedded broker, and skipping then lost 63 events; a real hole (compaction) is still
there seconds later. A one-offset hole (a transaction marker) is taken at once."""

_suspected_holes: dict[tuple[str, str, str, int], tuple[int, int, float]] = {}


def _hole_confirmed(where: tuple[str, str, str, int], start: int, found: int) -> bool:
    """Whether to move past the hole ``start`` up to ``found``: at once for one offset,
    else when the same hole was already seen at least ``HOLE_CONFIRM_SECONDS`` ago (the
    first sighting only starts the clock; the caller seeks back and reads again)."""
    if found == start + 1:
        return True  # one offset: a transaction marker's, the common hole, taken at once
    now = time.monotonic()
    seen = _suspected_holes.get(where)
    if seen is not None and seen[:2] == (start, found):
        if now - seen[2] >= HOLE_CONFIRM_SECONDS:
            del _suspected_holes[where]
            return True
        return False
    _suspected_holes[where] = (start, found, now)
    return HOLE_CONFIRM_SECONDS <= 0


async def _log_replaced(
    probe: Probe | None,
    topic: str,
    partition: int,
    start: int,
    mark: int | None,
    records: Sequence[Record],
) -> bool:
    """Whether the record before the stored position is not the one the position was
    read after (``mark``): the broker holds another log now. Unknown (no mark, no
    record there, no answer) counts as the same log."""
    if mark is None or start <= 0:
        return False
    before = next((r for r in records if r.offset == start - 1), None)
    if before is None and probe is not None:
        before = await probe.record_at(topic, partition, start - 1)
    if before is None or log_mark(before) == mark:
        return False
    log.warning("log_replaced", topic=topic, partition=partition, stored=start)
    return True


async def _log_lost(probe: Probe, topic: str, partition: int, stored: int) -> int | None:
    """The high watermark, when the broker's log ends before the stored position: it
    lost its log (a restart of a memory-only broker, a recreated topic). Records below
    the position are then new, not re-deliveries: the consumer reads the log again from
    its start (the stream rule makes that harmless). None: the log is there."""
    highwater = await probe.highwater(topic, partition)
    if highwater is None or highwater >= stored:
        return None
    log.warning("log_lost", topic=topic, partition=partition, stored=stored, highwater=highwater)
    return highwater


async def _apply_in_order(
    conn: AsyncConnection[Any],
    projection: Projection,
    topic: str,
    fresh: list[tuple[int, Record]],
    results: dict[int, BatchResult],
) -> list[Outgoing]:
    """Decode, plan by the stream rule, apply, and write back the streams' state."""
    schema = projection.schema
    incoming: list[Candidate[_Entry]] = []
    for p, r in fresh:
        if retried_for_others(r, projection.consumer):
            _count(results, p).duplicates += 1
            continue
        c = await _candidate(conn, projection, topic, p, r)
        if c is None:
            _count(results, p).dead += 1
        else:
            incoming.append(c)
    streams = {c.stream for c in incoming}
    heads, waiting = await _stream_heads(conn, schema, streams)
    digests = await _applied_digests(
        conn,
        schema,
        {(c.stream, c.version) for c in incoming if c.version <= heads.get(c.stream, 0)},
    )
    held_rows = await held_store.load(conn, schema, waiting)
    held: list[Candidate[_Entry]] = []
    for row in held_rows:
        c = await _candidate(conn, projection, topic, row.partition, _record_of_held(row))
        if c is None:  # no longer decodes (a schema withdrawn): dead-lettered, let go
            await held_store.release(conn, schema, [(row.stream, row.version)])
        else:
            held.append(Candidate(c.stream, c.version, c.digest, c.item, held=True))
    decided = plan(incoming, heads, digests, held)
    for c in decided.duplicates:
        _count(results, c.item.partition).duplicates += 1
    for c, reason in decided.dead:
        await _dead_letter(conn, schema, projection.consumer, c.item.record, reason)
        _count(results, c.item.partition).dead += 1
    applied, blocked, outgoing = await _execute(conn, projection, decided.apply, results)
    stuck = {id(c) for c in blocked}
    to_hold = decided.hold + [c for c in blocked if not c.held]
    released = [c for c in decided.unhold if id(c) not in stuck]
    for c in to_hold:
        _count(results, c.item.partition).held += 1
    await held_store.hold(conn, schema, [_held_row(c) for c in to_hold])
    await held_store.release(conn, schema, [(c.stream, c.version) for c in released])
    await _record_applied(conn, schema, applied)
    number = getattr(projection, "number_outgoing", None)
    return outgoing if number is None or not outgoing else await number(conn, outgoing)


async def _execute(
    conn: AsyncConnection[Any],
    projection: Projection,
    planned: list[Candidate[_Entry]],
    results: dict[int, BatchResult],
) -> tuple[list[Candidate[_Entry]], list[Candidate[_Entry]], list[Outgoing]]:
    """Apply the planned events in order: (applied, blocked behind a rejected one, what
    to publish)."""
    wanted = [c for c in planned if c.item.interesting]
    for c in planned:
        if not c.item.interesting:
            _count(results, c.item.partition).skipped += 1
    outgoing: list[Outgoing] = []
    apply_all = getattr(projection, "apply_all", None)
    if apply_all is not None and not projection.may_reject:
        if wanted:
            outgoing.extend(await apply_all(conn, [(c.item.event, c.item.model) for c in wanted]))
        for c in wanted:
            _count(results, c.item.partition).applied += 1
        return planned, [], outgoing
    prepare, finish = getattr(projection, "prepare", None), getattr(projection, "finish", None)
    if prepare is not None and wanted:
        await prepare(conn, [c.item.event for c in wanted])
    applied: list[Candidate[_Entry]] = []
    blocked: list[Candidate[_Entry]] = []
    stopped: set[StreamKey] = set()
    for c in planned:
        if c.stream in stopped:
            blocked.append(c)  # its stream waits for the rejected version
        elif not c.item.interesting or await _apply_one(
            conn, projection, c.item, _count(results, c.item.partition), outgoing
        ):
            applied.append(c)
        else:
            stopped.add(c.stream)
    if finish is not None and wanted:
        await finish(conn)
    return applied, blocked, outgoing


def _count(results: dict[int, BatchResult], partition: int) -> BatchResult:
    """The partition's result; a held record may come from a partition not in this fetch
    (a stray copy produced to another partition), counted where it came from."""
    return results.setdefault(partition, BatchResult())


async def _candidate(
    conn: AsyncConnection[Any], projection: Projection, topic: str, partition: int, record: Record
) -> Candidate[_Entry] | None:
    """The record placed in its stream, or None once dead-lettered with the reason.

    The envelope is checked for every record (an event of a type this consumer skips
    still takes its place in its stream); the data against its schema only for types
    the consumer applies.
    """
    try:
        event = from_kafka(record.key, record.value, record.headers)
        interesting = projection.interested_in is None or event.type in projection.interested_in
        model = None
        if interesting:
            event_type, version = parse_dataschema(event.dataschema)
            if event_type != event.type:
                raise SchemaError(
                    f"ce_dataschema names {event_type!r} but ce_type is {event.type!r}"
                )
            model = decode(event.type, version, event.data)
        if getattr(projection, "ordering", STREAM_VERSION) == ORG_SEQUENCE:
            header, number = "ce_orgsequence", event.orgsequence
            if number is None:
                raise EnvelopeError(header, f"is required on a partner topic ({topic})")
            stream = (event.subject, topic)
        else:
            header, number = "ce_streamversion", event.streamversion
            stream = (event.subject, event.source)
        if number > MAX_VERSION:  # tracked as int4: a larger one could never be applied
            raise EnvelopeError(header, f"{number} is beyond {MAX_VERSION}")
    except (EnvelopeError, SchemaError) as exc:
        await _dead_letter(conn, projection.schema, projection.consumer, record, str(exc))
        return None
    entry = _Entry(partition, record, event, model, interesting)
    return Candidate(stream, number, digest(record.key, record.value, record.headers), entry)


def _record_of_held(row: HeldRecord) -> Record:
    return Record(row.topic, row.partition, row.offset, row.key, row.value, row.headers)


def _held_row(c: Candidate[_Entry]) -> HeldRecord:
    r = c.item.record
    return HeldRecord(
        c.stream, c.version, c.digest, r.topic, r.partition, r.offset, r.key, r.value,
        list(r.headers),
    )  # fmt: skip


async def _apply_one(
    conn: AsyncConnection[Any],
    projection: Projection,
    entry: _Entry,
    result: BatchResult,
    outgoing: list[Outgoing],
) -> bool:
    """Apply one new event; False when it was rejected (and dead-lettered instead)."""
    try:
        if projection.may_reject:
            # A savepoint, so a rejected event leaves no half-applied rows behind and can
            # be re-driven later (its stream waits for it meanwhile).
            async with conn.transaction():
                outgoing.extend(await projection.apply(conn, entry.event, entry.model))
        else:
            outgoing.extend(await projection.apply(conn, entry.event, entry.model))
    except Rejected as exc:
        await _dead_letter(conn, projection.schema, projection.consumer, entry.record, str(exc))
        result.dead += 1
        return False
    result.applied += 1
    return True
