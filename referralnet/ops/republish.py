"""Refill ``referral-events`` from the stores: after the broker lost its log, or any time.

Safe at any time, under traffic too:

1. The broker must answer first; otherwise nothing is touched (``RepublishRefused``).
2. The outbox relays are fenced (``bus.relay.FENCE``, an advisory lock they hold shared
   per batch): republish waits for the batches in flight, then no relay publishes until
   it is done. So nothing the relay is sending is sent twice, and no stream's new events
   overtake the old ones being refilled.
3. What the broker lost is judged before anything changes: a topic is lost when a
   consumer's stored position is beyond its high watermark, and ``referral-events`` also
   when an event the relay had published (no outbox row any more) is not on it. A lost
   topic is deleted and created again, empty: records a client managed to publish to
   the fresh broker meanwhile would otherwise come before the older events refilled
   after them. Consumers of a lost topic read it again from the start (positions 0;
   for lost partner topics the distributor also forgets what it delivered, so it
   delivers it all again); they skip what they applied before by stream version.
4. Every stored event not on the topic goes out, merged across the stores by the time
   it was recorded (each store in position order, so every stream in version order),
   read from one snapshot of all three stores (a stream's later version cannot be in it
   without the earlier one). They go in rounds of one record batch per partition, each
   acknowledged before the next (``_Rounds``), so a send the broker fails cannot be
   overtaken by a later one of its partition. The outbox rows of those events are
   deleted while still fenced; the relays then publish only what was appended after the
   snapshot.

5. Nothing ``verify --all`` would call tampered is sent (``bus.seal_guard``): an event a
   database administrator inserted or edited, and the later events of its stream, are
   refused, kept in the store's ``refused_events`` (``status`` reports them) and named
   one line each in ``RepublishResult.refused``.

A failure after step 3 leaves nothing that a second ``republish`` does not mend
(``RepublishFailed`` says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.partitioner import DefaultPartitioner
from kafka.errors import KafkaError
from psycopg import AsyncConnection, errors, sql

from bus.relay import FENCE, to_cloudevent
from bus.seal_guard import REFUSED_TABLE, SealGuard, record_refusals
from bus.topics import Topics
from eventstore.anchor import AnchorError, AnchorPaths, read_anchor
from eventstore.records import StoredEvent
from eventstore.sealing import load_seal_key
from eventstore.store import EventStore
from infra.kafka_security import client_kwargs
from referralnet.lag import STORES, clear_log_losses, consumers, log_losses
from referralnet.ops import log
from referralnet.services_table import BUS_CONSUMERS
from referralnet.settings import settings
from schemas.envelope import to_kafka

BROKER_ERRORS = (AIOKafkaError, KafkaError, OSError, TimeoutError)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class RepublishRefused(RuntimeError):
    """Republish did not start (broker unreachable, relays not pausing): nothing changed."""


class RepublishFailed(RuntimeError):
    """Republish failed part-way; running it again finishes the job."""


Progress = Callable[[int, int], None]

BUS_CONSUMER_SCHEMAS = tuple(s.schema for s in BUS_CONSUMERS)
"""Schemas whose consumers read ``referral-events`` (and keep positions there)."""


@dataclass
class RepublishResult:
    """What a republish found and did."""

    in_stores: int = 0
    already_present: int = 0
    published: int = 0
    topics_created: list[str] = field(default_factory=list)
    topics_recreated: list[str] = field(default_factory=list)
    consumers_reset: list[str] = field(default_factory=list)
    partner_topics_refilled: bool = False
    refused: list[str] = field(default_factory=list)
    """One line per stream whose events were refused as tampered (``bus.seal_guard``)."""
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


async def merged_history(
    conns: Sequence[AsyncConnection[Any]], since: datetime | None = None
) -> AsyncIterator[tuple[EventStore, StoredEvent]]:
    """Every stored event of every store, oldest recorded first (one connection each)."""
    readers = [store.read_all(conn, since=since) for store, conn in zip(STORES, conns, strict=True)]
    buffers: list[list[StoredEvent]] = [[] for _ in STORES]
    done = [False] * len(STORES)

    async def head(i: int) -> StoredEvent | None:
        if not buffers[i] and not done[i]:
            try:
                buffers[i] = list(reversed(await anext(readers[i])))
            except StopAsyncIteration:
                done[i] = True
        return buffers[i][-1] if buffers[i] else None

    while True:
        heads = [(await head(i), i) for i in range(len(STORES))]
        live = [(e.recorded_at, i, e.position) for e, i in heads if e is not None]
        if not live:
            return
        _, i, _ = min(live)
        yield STORES[i], buffers[i].pop()


async def _present_ids(bootstrap_servers: str, topic: str) -> set[str]:
    """``ce_id`` of every record still on ``topic``."""
    highwater = await log.topic_highwaters(bootstrap_servers, [topic])
    ids: set[str] = set()
    async for _, messages in log.read_range(bootstrap_servers, {}, highwater):
        for m in messages:
            for key, value in m.headers or ():
                if key == "ce_id":
                    ids.add(bytes(value).decode("utf-8", "replace"))
    return ids


async def _positions_beyond(
    conn: AsyncConnection[Any], bootstrap_servers: str, topics: Topics
) -> set[str]:
    """Topics on which some consumer stored a position beyond the high watermark."""
    wanted = await consumers(conn, topics)
    highwater = await log.topic_highwaters(bootstrap_servers, [t for _, _, t in wanted])
    beyond: set[str] = set()
    for consumer, schema, topic in wanted:
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".positions',))
        row = await cur.fetchone()
        if not row or not row[0]:
            continue
        cur = await conn.execute(
            sql.SQL(
                "SELECT partition, next_offset FROM {}.positions WHERE consumer = %s AND topic = %s"
            ).format(sql.Identifier(schema)),
            (consumer, topic),
        )
        for partition, offset in await cur.fetchall():
            if offset > highwater.get((topic, partition), 0):
                beyond.add(topic)
    return beyond


async def _partner_topics_short(
    conn: AsyncConnection[Any], bootstrap_servers: str, partner_names: Sequence[str]
) -> set[str]:
    """Partner topics holding fewer records than the distributor delivered to them.

    A consumer that finds its partition's log gone resets its own position to 0 (so it
    does not stall on a fresh broker), which hides the loss from ``_positions_beyond``;
    the distributor's delivery record does not forget. Fewer records than deliveries
    means copies were lost (more is fine: re-deliveries after an earlier republish).
    """
    cur = await conn.execute("SELECT to_regclass('distributor.deliveries') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0] or not partner_names:
        return set()
    cur = await conn.execute(
        "SELECT topic, count(*) FROM distributor.deliveries WHERE topic = ANY(%s) GROUP BY topic",
        (list(partner_names),),
    )
    delivered = {str(t): int(n) for t, n in await cur.fetchall()}
    highwater = await log.topic_highwaters(bootstrap_servers, list(delivered))
    held: dict[str, int] = {}
    for (topic, _partition), hw in highwater.items():
        held[topic] = held.get(topic, 0) + hw
    return {t for t, n in delivered.items() if held.get(t, 0) < n}


async def _published_but_missing(
    conn: AsyncConnection[Any], present: set[str], since: datetime | None
) -> int:
    """Events the relay had published (their outbox rows are gone) that are not on the
    topic now: the broker lost them. (Relays are fenced: no outbox row goes meanwhile.)"""
    missing = 0
    ids = [UUID(i) for i in present if _UUID.fullmatch(i)]  # other clients' ids may be junk
    for store in STORES:
        cur = await conn.execute("SELECT to_regclass(%s)", (f'"{store.schema}".{REFUSED_TABLE}',))
        row = await cur.fetchone()
        refused = (
            sql.SQL(
                "AND NOT EXISTS (SELECT 1 FROM {} r WHERE r.event_position = e.position) "
            ).format(sql.Identifier(store.schema, REFUSED_TABLE))
            if row and row[0]
            else sql.SQL("")
        )
        cur = await conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {s}.events e WHERE NOT EXISTS "
                "(SELECT 1 FROM {s}.outbox o WHERE o.event_position = e.position) "
                "{refused}"
                "AND (%s::timestamptz IS NULL OR e.recorded_at >= %s) "
                # NOT IN over a subquery: a hashed anti-join, not a scan of the array per row
                "AND e.event_id NOT IN (SELECT unnest(%s::uuid[]))"
            ).format(s=sql.Identifier(store.schema), refused=refused),
            (since, since, ids),
        )
        row = await cur.fetchone()
        missing += int(row[0]) if row else 0
    return missing


async def reset_consumers(
    conn: AsyncConnection[Any],
    topics: Topics,
    events_lost: bool,
    partner_topics: bool,
    lock_timeout: float = 30.0,
) -> list[str]:
    """Positions to 0 (one transaction) of the consumers of lost topics; for lost
    partner topics also the distributor's memory of what it delivered and its position
    on ``referral-events``. Returns the consumers reset."""
    reset: list[str] = []
    views = [(c, s, t) for c, s, t in await consumers(conn, topics) if t != topics.referral_events]
    targets: list[tuple[str, str]] = []
    if events_lost:
        targets += [(s, topics.referral_events) for s in BUS_CONSUMER_SCHEMAS]
    if partner_topics:
        if not events_lost:
            targets.append(("distributor", topics.referral_events))
        targets += [(s, t) for _, s, t in views]
    async with conn.transaction():
        await conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout)}s"))
        )
        for schema, topic in targets:
            cur = await conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".positions',)
            )
            row = await cur.fetchone()
            if not row or not row[0]:
                continue
            s = sql.Identifier(schema)
            # Waits for a batch in flight; the consumer's next batch then sees position 0.
            await conn.execute(sql.SQL("LOCK TABLE {}.positions IN EXCLUSIVE MODE").format(s))
            cur = await conn.execute(
                sql.SQL(
                    "UPDATE {}.positions SET next_offset = 0, updated_at = now() "
                    "WHERE topic = %s AND next_offset > 0 RETURNING consumer"
                ).format(s),
                (topic,),
            )
            reset.extend(sorted({r[0] for r in await cur.fetchall()}))
        if partner_topics:
            # Forgetting what it delivered makes the distributor deliver it all again.
            await conn.execute("DELETE FROM distributor.applied")
            await conn.execute("DELETE FROM distributor.entitlements")
    return reset


@contextlib.asynccontextmanager
async def relays_fenced(
    conn: AsyncConnection[Any], wait_seconds: float = 30.0
) -> AsyncIterator[None]:
    """Hold the relays' fence for the block (session lock: a crash of ours lifts it)."""
    try:
        async with conn.transaction():
            await conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(
                    sql.Literal(f"{int(wait_seconds * 1000)}ms")
                )
            )
            await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (FENCE,))
    except errors.LockNotAvailable:
        raise RepublishRefused(
            f"the outbox relays did not pause within {wait_seconds:.0f}s; nothing was changed"
        ) from None
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (FENCE,))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}".rstrip(": ")


async def republish(
    database_url: str,
    bootstrap_servers: str,
    topics: Topics,
    since: datetime | None = None,
    progress: Progress | None = None,
    fence_timeout: float = 30.0,
    attempts: int = 5,
    home: Path | None = None,
) -> RepublishResult:
    """Refill the bus from the stores (see the module docstring).

    ``home`` (default ``REFERRALNET_HOME``) holds the services' seal key and the anchor
    the events are checked against; without one only the hash chain is checked.
    Raises ``RepublishRefused`` (nothing changed) or ``RepublishFailed`` (run it again).
    """
    started = time.monotonic()
    result = RepublishResult()
    problem = await log.broker_reachable(bootstrap_servers)
    if problem is not None:
        raise RepublishRefused(
            f"broker unreachable at {bootstrap_servers} ({problem.split(':')[0]}); "
            "nothing was changed"
        )
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT id FROM directory.organisations ORDER BY id")
        orgs = [r[0] for r in await cur.fetchall()]
        partner_names = [topics.org(o) for o in orgs]
        names = [topics.referral_events, topics.dead_letters, *partner_names]
        seals = await _seals(conn, home)
        async with relays_fenced(conn, fence_timeout):
            try:
                noted = await log_losses(conn, topics)
                beyond = await _positions_beyond(conn, bootstrap_servers, topics)
                # A consumer that found the log lost reset its own position: its note
                # still says the topic lost what it held.
                beyond |= {loss.topic for loss in noted}
                events_lost = topics.referral_events in beyond
                if not events_lost and log.partition_counts(
                    bootstrap_servers, [topics.referral_events]
                ):
                    present = await _present_ids(bootstrap_servers, topics.referral_events)
                    events_lost = await _published_but_missing(conn, present, since) > 0
                short = await _partner_topics_short(conn, bootstrap_servers, partner_names)
                partners_lost = bool((beyond | short) & set(partner_names))
                lost = ([topics.referral_events] if events_lost else []) + (
                    partner_names if partners_lost else []
                )
                repair = await asyncio.to_thread(
                    log.repair_topics, bootstrap_servers, topics.layout(names), recreate=lost
                )
                present = await _present_ids(bootstrap_servers, topics.referral_events)
            except BROKER_ERRORS as exc:
                raise RepublishRefused(
                    f"the broker failed before anything was changed ({_one_line(exc)}); "
                    "run republish again"
                ) from None
            result.topics_created, result.topics_recreated = repair.created, repair.recreated
            # A topic re-made for its partition count (a client auto-created it) lost
            # what it held too: its consumers read it again, the distributor refills it.
            recreated = set(repair.recreated)
            events_lost = events_lost or topics.referral_events in recreated
            partners_lost = partners_lost or bool(recreated & set(partner_names))
            if events_lost or partners_lost:
                result.consumers_reset = await reset_consumers(
                    conn, topics, events_lost, partners_lost
                )
                result.partner_topics_refilled = partners_lost
            await _publish_fenced(
                conn, database_url, bootstrap_servers, topics, since, present, result, progress,
                attempts, seals,
            )  # fmt: skip
        await clear_log_losses(conn, topics)  # refilled: status stops reporting them
    result.seconds = time.monotonic() - started
    return result


async def _publish_fenced(
    conn: AsyncConnection[Any],
    database_url: str,
    bootstrap_servers: str,
    topics: Topics,
    since: datetime | None,
    present: set[str],
    result: RepublishResult,
    progress: Progress | None,
    attempts: int,
    seals: tuple[bytes | None, dict[str, int]],
) -> None:
    """``_publish_missing``, again on a broker error, all under the caller's fence.

    A broker that just restarted fails some sends for a moment (Tansu: ``UnknownError``).
    Giving up would lift the fence with part of the history sent, and the relays would
    then publish new events ahead of the older ones still missing; so each attempt reads
    what is on the topic now and sends the rest, before the relays may go on.
    """
    for attempt in range(1, attempts + 1):
        try:
            guard = SealGuard(*seals)
            await _publish_missing(
                conn, database_url, bootstrap_servers, topics, since, present, result, progress,
                guard,
            )  # fmt: skip
            result.refused = guard.lines()
            return
        except BROKER_ERRORS as exc:
            if attempt == attempts:
                raise RepublishFailed(
                    f"publishing failed {attempts} times ({_one_line(exc)}); consumers are "
                    "reading the log again from where it holds events: run republish again "
                    "to send the rest"
                ) from None
            await asyncio.sleep(min(2.0**attempt, 10.0))  # retry backoff on a broker error
            try:
                present = await _present_ids(bootstrap_servers, topics.referral_events)
            except BROKER_ERRORS:
                continue
            result.already_present = result.in_stores = 0  # read again; sent ones add up


async def _seals(
    conn: AsyncConnection[Any], home: Path | None
) -> tuple[bytes | None, dict[str, int]]:
    """The services' seal key and, per store, where sealing began (the anchor's word, or
    the store's first sealed event if earlier), as ``verify --all`` takes them."""
    given = settings()
    where = home or (given.home if given.given("home") else None)
    if where is None:
        return None, {}
    paths = AnchorPaths.under(where)
    key = load_seal_key(paths.seal_key) if paths.seal_key else None
    sealed_from: dict[str, int] = {}
    with contextlib.suppress(AnchorError, OSError, ValueError):
        state = read_anchor(paths, keep_events=False)
        sealed_from = dict(state.sealed_from) if state else {}
    for store in STORES:
        cur = await conn.execute(
            sql.SQL("SELECT min(position) FROM {}.events WHERE seal IS NOT NULL").format(
                sql.Identifier(store.schema)
            )
        )
        row = await cur.fetchone()
        if row and row[0] is not None:
            sealed_from[store.schema] = min(int(row[0]), sealed_from.get(store.schema, int(row[0])))
    return key, sealed_from


ROUND_EVENTS = 500
"""Events sent per round: each round is one record batch per partition, acknowledged
before the next round is built."""
ROUND_BATCH_BYTES = 1_000_000
"""A round's batch for one partition holds at most this much (under Kafka's default
``message.max.bytes``); a fuller partition ends the round early."""


class _Rounds:
    """Sends in rounds of at most one record batch per partition, each round
    acknowledged before the next is built.

    Why: a produce the broker fails for good (Tansu answers ``UnknownError`` while it
    restarts) fails its batch, yet the client goes on to send that partition's later
    batches, so a referral's session could land before its creation and consumers would
    dead-letter it ("never created"). With one batch per partition in flight and nothing
    built after a failure, the events that did land are a prefix of each partition's
    order, and the next attempt sends the rest after them.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: list[int]) -> None:
        self._producer, self._topic, self._partitions = producer, topic, partitions
        self._batches: dict[int, Any] = {}
        self._in_flight: list[Any] = []
        self.queued = 0

    async def add(self, key: bytes | None, value: bytes | None, headers: Any) -> int:
        """Queue one record; returns how many records were acknowledged meanwhile."""
        partition = DefaultPartitioner()(key, self._partitions, self._partitions)
        sent = 0
        batch = self._batches.get(partition)
        if (
            batch is None
            or batch.append(key=key, value=value, timestamp=None, headers=headers) is None
        ):
            if batch is not None:  # that partition's batch is full: this round ends here
                sent = await self.flush()
            batch = self._batches[partition] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"an event larger than {ROUND_BATCH_BYTES} bytes")
        self.queued += 1
        if self.queued >= ROUND_EVENTS:
            sent += await self.flush()
        return sent

    async def flush(self) -> int:
        """Send the round and wait for every acknowledgement (raises the first failure)."""
        batches, self._batches = self._batches, {}
        queued, self.queued = self.queued, 0
        for partition, batch in batches.items():
            self._in_flight.append(
                await self._producer.send_batch(batch, self._topic, partition=partition)
            )
        futures, self._in_flight = self._in_flight, []
        try:
            for future in futures:
                await future
        except BaseException:
            await asyncio.gather(*futures, return_exceptions=True)  # none left unread
            raise
        return queued

    async def settle(self) -> None:
        """Collect sends still in flight after a failure, so none is left unread."""
        await asyncio.gather(*self._in_flight, return_exceptions=True)


@contextlib.asynccontextmanager
async def _snapshot(database_url: str) -> AsyncIterator[list[AsyncConnection[Any]]]:
    """One connection per store, all reading one snapshot of the database."""
    async with contextlib.AsyncExitStack() as stack:
        conns: list[AsyncConnection[Any]] = []
        snapshot: str | None = None
        for _ in STORES:
            c = await stack.enter_async_context(
                await AsyncConnection.connect(database_url, autocommit=True)
            )
            await stack.enter_async_context(c.transaction())
            await c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if snapshot is None:
                cur = await c.execute("SELECT pg_export_snapshot()")
                row = await cur.fetchone()
                assert row is not None
                snapshot = str(row[0])
            else:
                await c.execute(
                    sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
                )
            conns.append(c)
        yield conns


async def _publish_missing(
    conn: AsyncConnection[Any],
    database_url: str,
    bootstrap_servers: str,
    topics: Topics,
    since: datetime | None,
    present: set[str],
    result: RepublishResult,
    progress: Progress | None,
    guard: SealGuard,
) -> None:
    producer = AIOKafkaProducer(
        **client_kwargs("aiokafka"),
        bootstrap_servers=bootstrap_servers,
        acks="all",
        request_timeout_ms=15_000,
        max_batch_size=ROUND_BATCH_BYTES,
        client_id="referralnet-republish",
    )
    await producer.start()
    read: dict[str, list[int]] = {store.schema: [] for store in STORES}
    topic = topics.referral_events
    # The partitions the topic is created with (``repair_topics`` made it so), not a
    # metadata reading: keys must land where the relays and the runners expect them.
    rounds = _Rounds(producer, topic, list(range(topics.partitions_of(topic))))
    try:
        async with _snapshot(database_url) as conns:
            for store, c in zip(STORES, conns, strict=True):
                cur = await c.execute(
                    sql.SQL(
                        "SELECT count(*) FROM {}.events "
                        "WHERE (%s::timestamptz IS NULL OR recorded_at >= %s)"
                    ).format(sql.Identifier(store.schema)),
                    (since, since),
                )
                row = await cur.fetchone()
                result.in_stores += int(row[0]) if row else 0
            done = 0
            async for store, event in merged_history(conns, since):
                done += 1
                if not guard.admit(store.schema, event):
                    continue  # tampered, or after a tampered event of its stream
                read[store.schema].append(event.position)
                if str(event.event_id) in present:
                    result.already_present += 1
                    continue
                result.published += await rounds.add(*to_kafka(to_cloudevent(store, event)))
                if progress is not None and rounds.queued == 0:
                    progress(done, result.in_stores)
            result.published += await rounds.flush()
            if progress is not None:
                progress(done, max(done, result.in_stores))
    finally:
        await rounds.settle()
        await producer.stop()
    # Still fenced: these events are on the bus now; the relays must not send them again,
    # nor the refused ones (kept for ``status`` instead).
    for store in STORES:
        await record_refusals(
            conn, store.schema, guard.positions.get(store.schema, []), "republish"
        )
        await conn.execute(
            sql.SQL(
                "DELETE FROM {}.outbox o USING unnest(%s::int8[]) AS p(pos) "
                "WHERE o.event_position = p.pos"
            ).format(sql.Identifier(store.schema)),
            (read[store.schema],),
        )
