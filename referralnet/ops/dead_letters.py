"""Dead letters, read from PostgreSQL across every consumer schema, and re-driven in bulk.

Each consumer keeps its dead letters in its own schema's ``dead_letter_outbox`` for
good (``bus.dead_letters``); the ``dead-letters`` topic only carries notices, so a
broker that lost its log loses nothing here. A letter's id is ``<schema>:<row id>``.

Re-driving publishes the original record to its source topic again with
``x-dead-letter-retry`` (``bus.tracking.RETRY_HEADER``: the letters and the consumers
that parked it), and stamps the rows ``retried_at`` / ``retried_to`` in the same
transaction that holds them locked while the broker acknowledges. So a letter is
re-driven at most once: retrying it again, or two operators retrying at the same time,
sends nothing more. One record parked by several consumers (every consumer group of
``referral-events`` refuses the same malformed record) is sent once, and only the
consumers that parked it take the copy: a record still poison is parked again once per
consumer that parked it, never multiplied. Records go out in their original order
(source topic, partition, offset), chunk by chunk, on one producer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from psycopg import AsyncConnection, sql

from bus import dead_letters as dlq
from bus.tracking import RETRY_HEADER
from infra.kafka_security import client_kwargs
from referralnet.ops import log

Progress = Callable[[int, int], None]

SCRATCH_SUFFIXES = ("__replay", "__old", "__chaos")
"""Schemas being built or thrown away (replay, chaos checks): their rows are not letters."""

CHUNK = 500


class NoSuchDeadLetter(LookupError):
    """The id names no dead letter (or is not of the form ``<schema>:<row id>``)."""


class RetryRefused(RuntimeError):
    """Re-driving cannot start (broker unreachable, source topic missing): nothing sent."""


@dataclass(frozen=True)
class DeadLetter:
    """One parked event: where it came from, why, and whether it was re-driven."""

    schema: str
    row_id: int
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    consumer: str
    type: str | None
    subject: str | None
    parked_at: datetime
    published_at: datetime | None
    retried_at: datetime | None
    retried_to: str | None
    discarded_at: datetime | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def id(self) -> str:
        """``<schema>:<row id>``: what ``retry`` takes."""
        return dlq.letter_id(self.schema, self.row_id)

    @property
    def pending(self) -> bool:
        """Neither re-driven nor discarded: something an operator still has to decide."""
        return self.retried_at is None and self.discarded_at is None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "consumer": self.consumer,
            "type": self.type,
            "subject": self.subject,
            "parked_at": self.parked_at.isoformat(),
            "notified": self.published_at is not None,
            "retried_at": self.retried_at.isoformat() if self.retried_at else None,
            "retried_to": self.retried_to,
            "discarded_at": self.discarded_at.isoformat() if self.discarded_at else None,
        }


@dataclass(frozen=True)
class Selection:
    """Which letters to list or re-drive: by id, by reason text, or all pending ones
    (``include_retried``: also those re-driven or discarded before)."""

    ids: tuple[str, ...] = ()
    reason: str | None = None
    include_retried: bool = False


async def consumer_schemas(conn: AsyncConnection[Any]) -> list[str]:
    """Every schema that has a dead-letter table (services and partner views), each
    with the durability columns (added here to tables older than them)."""
    cur = await conn.execute(
        "SELECT n.nspname, (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid "
        "AND a.attname = 'discarded_at' AND NOT a.attisdropped) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %s AND c.relkind IN ('r', 'p') ORDER BY n.nspname",
        (dlq.TABLE,),
    )
    found = [(r[0], r[1]) for r in await cur.fetchall() if not r[0].endswith(SCRATCH_SUFFIXES)]
    for schema, has_columns in found:
        if not has_columns:
            await dlq.ensure_columns(conn, schema)
    return [schema for schema, _ in found]


def _parse_id(ident: str) -> tuple[str, int]:
    schema, sep, number = ident.strip().rpartition(":")
    if not sep or not schema or not number.isdigit():
        raise NoSuchDeadLetter(
            f"not a dead-letter id: {ident!r} (expected SCHEMA:N, see `referralnet dead-letters`)"
        )
    return schema, int(number)


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("utf-8", "replace") or None
    return None


def _letter(schema: str, row: tuple[Any, ...]) -> DeadLetter:
    (row_id, topic, partition, offset, key, value, headers, reason, consumer, parked,
     published, retried, retried_to, discarded) = row  # fmt: skip
    pairs = [(str(k), str(v).encode()) for k, v in headers]
    return DeadLetter(
        schema=schema,
        row_id=int(row_id),
        reason=reason,
        source_topic=topic,
        source_partition=int(partition),
        source_offset=int(offset),
        consumer=consumer,
        type=_header(pairs, "ce_type"),
        subject=_header(pairs, "ce_subject"),
        parked_at=parked,
        published_at=published,
        retried_at=retried,
        retried_to=retried_to,
        discarded_at=discarded,
        key=bytes(key) if key is not None else None,
        value=bytes(value) if value is not None else None,
        headers=pairs,
    )


_COLUMNS = (
    'id, topic, partition, "offset", key, value, headers, reason, consumer, parked_at, '
    "published_at, retried_at, retried_to, discarded_at"
)
PENDING = "retried_at IS NULL AND discarded_at IS NULL"


def _where(schema: str, selection: Selection) -> tuple[sql.Composable, list[Any]] | None:
    """The filter for one schema's rows, or None when the selection names none of them."""
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if selection.ids:
        mine = [n for s, n in map(_parse_id, selection.ids) if s == schema]
        if not mine:
            return None
        clauses.append(sql.SQL("id = ANY(%s)"))
        params.append(mine)
    if not selection.include_retried:
        clauses.append(sql.SQL(PENDING))
    if selection.reason is not None:
        clauses.append(sql.SQL("strpos(lower(reason), lower(%s)) > 0"))
        params.append(selection.reason)
    where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("true")
    return where, params


async def list_letters(conn: AsyncConnection[Any], selection: Selection) -> list[DeadLetter]:
    """The selected dead letters of every consumer schema, oldest parked first."""
    letters: list[DeadLetter] = []
    for schema in await consumer_schemas(conn):
        found = _where(schema, selection)
        if found is None:
            continue
        where, params = found
        cur = await conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY id").format(
                sql.SQL(_COLUMNS), sql.Identifier(schema, dlq.TABLE), where
            ),
            params,
        )
        letters.extend(_letter(schema, r) for r in await cur.fetchall())
    return sorted(letters, key=lambda d: (d.parked_at, d.schema, d.row_id))


async def pending_counts(conn: AsyncConnection[Any]) -> dict[str, int]:
    """Pending (never re-driven) dead letters per consumer name."""
    counts: dict[str, int] = {}
    for schema in await consumer_schemas(conn):
        cur = await conn.execute(
            sql.SQL("SELECT consumer, count(*) FROM {} WHERE {} GROUP BY consumer").format(
                sql.Identifier(schema, dlq.TABLE), sql.SQL(PENDING)
            )
        )
        for consumer, n in await cur.fetchall():
            counts[consumer] = counts.get(consumer, 0) + int(n)
    return counts


async def list_dead_letters(
    database_url: str, *, include_retried: bool = False, reason: str | None = None
) -> list[DeadLetter]:
    """Pending dead letters (or all of them), from PostgreSQL."""
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await list_letters(conn, Selection(reason=reason, include_retried=include_retried))


@dataclass
class RetryResult:
    """What one ``retry`` (or ``discard``) did: letters it acted on, letters it found
    already re-driven or discarded (and left alone)."""

    retried: list[DeadLetter] = field(default_factory=list)
    already: list[DeadLetter] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return len(self.retried) / self.seconds if self.seconds > 0 else 0.0


def _retry_marker(letters: Sequence[DeadLetter]) -> bytes:
    return json.dumps(
        {
            "dead_letters": [d.id for d in letters],
            "consumers": sorted({d.consumer for d in letters}),
            "reason": letters[0].reason,
        }
    ).encode()


def _origin(letter: DeadLetter) -> tuple[str, int, int]:
    """The record a letter parked: letters of several consumers may share one."""
    return letter.source_topic, letter.source_partition, letter.source_offset


async def _check_topics(bootstrap_servers: str, letters: Sequence[DeadLetter]) -> None:
    """Refuse before sending anything when a source topic is gone (a fresh broker would
    auto-create it with its own partition count, and keyed records would land elsewhere)."""
    wanted = sorted({d.source_topic for d in letters})
    try:
        counts = await asyncio.to_thread(log.partition_counts, bootstrap_servers, wanted)
    except Exception as exc:  # kafka-python raises several unrelated types here
        raise RetryRefused(f"broker unreachable at {bootstrap_servers}: {exc}") from None
    missing = [t for t in wanted if t not in counts]
    if missing:
        raise RetryRefused(
            f"source topic(s) missing on the broker: {', '.join(missing)}; "
            "run `referralnet republish` first"
        )


async def retry(
    database_url: str,
    bootstrap_servers: str,
    selection: Selection,
    progress: Progress | None = None,
) -> RetryResult:
    """Re-drive the selected letters, each at most once (see the module docstring).

    Raises ``NoSuchDeadLetter`` when an id names nothing, ``RetryRefused`` when the
    broker or a source topic is not there (before anything was sent).
    """
    started = time.monotonic()
    result = RetryResult()
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        everything = await _selected(conn, selection)
        result.already = [d for d in everything if not d.pending]
        todo = [d for d in everything if d.pending]
        if not todo:
            result.seconds = time.monotonic() - started
            return result
        await _check_topics(bootstrap_servers, todo)
        producer = AIOKafkaProducer(
            **client_kwargs("aiokafka"),
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=5,
            request_timeout_ms=15_000,
            client_id="referralnet-dead-letters",
        )
        try:
            await producer.start()
        except KafkaError as exc:
            raise RetryRefused(f"broker unreachable at {bootstrap_servers}: {exc}") from None
        try:
            # Chunks by record, so the letters of one record are re-driven together.
            by_origin: dict[tuple[str, int, int], list[DeadLetter]] = {}
            for d in todo:
                by_origin.setdefault(_origin(d), []).append(d)
            groups = [by_origin[o] for o in sorted(by_origin)]
            done = 0
            for i in range(0, len(groups), CHUNK):
                chunk = [d for group in groups[i : i + CHUNK] for d in group]
                result.retried += await _retry_chunk(conn, producer, chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(todo))
        finally:
            await producer.stop()
    result.seconds = time.monotonic() - started
    return result


async def _selected(conn: AsyncConnection[Any], selection: Selection) -> list[DeadLetter]:
    """Everything the selection names, done or not; unknown ids are refused."""
    everything = await list_letters(
        conn, Selection(selection.ids, selection.reason, include_retried=True)
    )
    if selection.ids:
        known = {d.id for d in everything}
        unknown = [i for i in selection.ids if dlq.letter_id(*_parse_id(i)) not in known]
        if unknown:
            raise NoSuchDeadLetter(
                f"no dead letter {unknown[0]!r} (see `referralnet dead-letters --all`)"
            )
    return everything


async def discard(database_url: str, selection: Selection) -> RetryResult:
    """Mark the selected pending letters as decided without re-driving them (poison that
    no fix will make valid); they stay listed with ``--all``."""
    started = time.monotonic()
    result = RetryResult()
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        everything = await _selected(conn, selection)
        result.already = [d for d in everything if not d.pending]
        by_schema: dict[str, list[DeadLetter]] = {}
        for d in everything:
            if d.pending:
                by_schema.setdefault(d.schema, []).append(d)
        for schema, letters in sorted(by_schema.items()):
            cur = await conn.execute(
                sql.SQL(
                    "UPDATE {} SET discarded_at = now() WHERE id = ANY(%s) AND {} "
                    "RETURNING id, discarded_at"
                ).format(sql.Identifier(schema, dlq.TABLE), sql.SQL(PENDING)),
                ([d.row_id for d in letters],),
            )
            stamped: dict[int, datetime] = dict(await cur.fetchall())
            result.retried += [
                replace(d, discarded_at=stamped[d.row_id]) for d in letters if d.row_id in stamped
            ]
    result.seconds = time.monotonic() - started
    return result


async def _retry_chunk(
    conn: AsyncConnection[Any], producer: AIOKafkaProducer, letters: list[DeadLetter]
) -> list[DeadLetter]:
    """Lock the chunk's still-pending rows, send each record once in source order, stamp
    every letter of it."""
    by_schema: dict[str, dict[int, DeadLetter]] = {}
    for d in letters:
        by_schema.setdefault(d.schema, {})[d.row_id] = d
    async with conn.transaction():
        mine: list[DeadLetter] = []
        for schema, by_row in sorted(by_schema.items()):
            # SKIP LOCKED: a concurrent retry of the same letters takes them, not both of us.
            cur = await conn.execute(
                sql.SQL(
                    "SELECT id FROM {} WHERE id = ANY(%s) AND {} FOR UPDATE SKIP LOCKED"
                ).format(sql.Identifier(schema, dlq.TABLE), sql.SQL(PENDING)),
                (list(by_row),),
            )
            mine += [by_row[r[0]] for r in await cur.fetchall()]
        records: dict[tuple[str, int, int], list[DeadLetter]] = {}
        for d in sorted(mine, key=lambda d: (_origin(d), d.schema, d.row_id)):
            records.setdefault(_origin(d), []).append(d)
        futures = []
        for group in records.values():
            first = group[0]
            futures.append(
                await producer.send(
                    first.source_topic,
                    value=first.value,
                    key=first.key,
                    headers=[*first.headers, (RETRY_HEADER, _retry_marker(group))],
                )
            )
        sent = [await f for f in futures]
        destination: dict[str, str] = {}
        for group, m in zip(records.values(), sent, strict=True):
            for d in group:
                destination[d.id] = f"{m.topic}[{m.partition}]@{m.offset}"
        stamped: dict[str, datetime] = {}
        for schema in sorted({d.schema for d in mine}):
            rows = [d for d in mine if d.schema == schema]
            cur = await conn.execute(
                sql.SQL(
                    "UPDATE {} AS d SET retried_at = now(), retried_to = w.dest "
                    "FROM unnest(%s::int8[], %s::text[]) AS w(id, dest) WHERE d.id = w.id "
                    "RETURNING d.id, d.retried_at"
                ).format(sql.Identifier(schema, dlq.TABLE)),
                ([d.row_id for d in rows], [destination[d.id] for d in rows]),
            )
            stamped |= {dlq.letter_id(schema, r[0]): r[1] for r in await cur.fetchall()}
    return [
        replace(d, retried_at=stamped[d.id], retried_to=destination[d.id])
        for group in records.values()
        for d in group
    ]
