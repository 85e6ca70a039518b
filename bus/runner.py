"""Run projections over Kafka topics from the positions stored in PostgreSQL.

Partitions are assigned explicitly and each is sought to its stored next offset, so one
process can host the consumers of many partner organisations (adding a partner adds a
topic and a schema, not a process) and no group rebalance stands between a restart
and the first event. Lag is the high watermark minus the stored position.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from bus import dead_letters
from bus.admin import TopicMaker
from bus.offsets import OffsetProbe
from bus.tracking import (
    Outgoing,
    Projection,
    apply_batches,
    create_tracking,
    record_of,
    reset_lost_log,
    stored_positions,
)
from infra.kafka_security import client_kwargs
from schemas.envelope import to_kafka

log = structlog.get_logger(__name__)

ProjectionsByTopic = Callable[[], Awaitable[Mapping[str, Projection]]]


@dataclass
class RunnerStats:
    """Counters a status page or a test can read."""

    applied: int = 0
    duplicates: int = 0
    dead: int = 0
    held: int = 0
    seeks: int = 0
    batches: int = 0
    assigned: int = 0  # partitions assigned at the last reassignment
    highwater: dict[tuple[str, int], int] = field(default_factory=dict)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)


async def publish_outgoing(
    producer: AIOKafkaProducer, outgoing: Sequence[Outgoing], topics: TopicMaker | None = None
) -> None:
    """Send and wait for every acknowledgement (acks=all) before the caller commits;
    ``topics`` first creates any topic this process has not published to before."""
    if topics is not None and outgoing:
        await topics.ensure({item.topic for item in outgoing})
    futures = []
    for item in outgoing:
        key, value, headers = to_kafka(item.event)
        futures.append(await producer.send(item.topic, value=value, key=key, headers=headers))
    for future in futures:
        await future


METADATA_MAX_AGE_MS = 10_000
"""How stale the runner's knowledge of each topic's partitions may get."""

LINGER_SECONDS = 0.1
"""As faust's take window (``bus.faust_agent.TAKE_WITHIN_SECONDS``), and measured with it."""


class TrackedRunner:
    """Consumes a changing set of topics, one projection per topic, positions in Postgres.

    ``partitions_of(topic)`` is how many partitions the topic is created with
    (``Topics.partitions_of``): the runner always assigns those, whatever the broker's
    metadata said when it (re)started, and any further partitions the metadata shows.
    A broker that lost its log auto-creates a topic for any client's metadata request
    with its own count (Tansu: 4); a runner that started then and assigned only what it
    saw read nobody's partitions 4 and 5 after ``republish`` created the topic again with
    6, so it stood still behind the refilled log (issue 11, "lag 10 for 90 s"). The other
    way round, a partner topic auto-created with 4 partitions instead of 1 holds records
    in all 4 until republish makes it right: they are read too. A partition the broker
    does not have yet is fetched once it does.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        projections: ProjectionsByTopic,
        partitions_of: Callable[[str], int],
        dead_letter_topic: str,
        refresh_seconds: float = 2.0,
        max_records: int = 2000,
        client_id: str = "referralnet-runner",
        linger_seconds: float = LINGER_SECONDS,
        tracking_created: bool = False,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._pool = pool
        self._projections_source = projections
        self._partitions_of = partitions_of
        self._topic_maker = TopicMaker(bootstrap_servers, partitions_of)
        self._dead_letter_topic = dead_letter_topic
        self._refresh = refresh_seconds
        self._max_records = max_records
        self._client_id = client_id
        self._linger = linger_seconds
        self._projections: dict[str, Projection] = {}
        self._shape: dict[str, frozenset[int]] = {}  # the partitions assigned, per topic
        self._tracked: set[str] = set()
        self._tracking_created = tracking_created  # the source made every tracking table
        self._probe = OffsetProbe(bootstrap_servers)
        self.stats = RunnerStats()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; re-reads the projection set every few seconds."""
        consumer = AIOKafkaConsumer(
            **client_kwargs("aiokafka"),
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # A topic's partitions can change under us (auto-created, then made right by
            # republish): cached metadata older than this is refreshed, and ``_reassign``
            # compares it with the assignment on every refresh (default: 5 minutes).
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        producer = AIOKafkaProducer(
            **client_kwargs("aiokafka"),
            bootstrap_servers=self._bootstrap,
            acks="all",
            linger_ms=2,
            client_id=self._client_id,
            request_timeout_ms=5000,
        )
        await consumer.start()
        await producer.start()
        try:
            next_refresh = 0.0
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                if loop.time() >= next_refresh:
                    await self._reassign(consumer)
                    await self._follow_stored_positions(consumer)
                    next_refresh = loop.time() + self._refresh
                if not self._projections:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self._refresh)
                    continue
                batches = await self._fetch(consumer)
                by_topic: dict[str, dict[int, Sequence[Any]]] = defaultdict(dict)
                for tp, messages in batches.items():
                    by_topic[tp.topic][tp.partition] = messages
                    self.stats.highwater[(tp.topic, tp.partition)] = consumer.highwater(tp) or 0
                for topic, partitions in by_topic.items():
                    await self._apply(consumer, producer, topic, partitions)
        finally:
            await consumer.stop()
            await producer.stop()
            await self._probe.close()

    async def _fetch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """What the broker has; a small first batch lingers briefly to let more arrive.

        Every batch costs a transaction and a few statements per topic whatever its
        size, so under load a short linger shares them among many events; an idle
        consumer pays it once, on the record that wakes it.
        """
        batches: dict[TopicPartition, list[Any]] = await consumer.getmany(
            timeout_ms=200, max_records=self._max_records
        )
        count = sum(len(m) for m in batches.values())
        if 0 < count < self._max_records // 4 and self._linger > 0:
            await asyncio.sleep(self._linger)  # a batching delay, not synchronisation
            more = await consumer.getmany(timeout_ms=0, max_records=self._max_records - count)
            for tp, messages in more.items():
                batches[tp] = [*batches.get(tp, ()), *messages]
        return batches

    def _partitions(self, consumer: AIOKafkaConsumer, topic: str) -> frozenset[int]:
        """The partitions ``topic`` is created with, and any more the broker has."""
        found = consumer.partitions_for_topic(topic) or set()
        return frozenset(range(self._partitions_of(topic))) | frozenset(found)

    async def _reassign(self, consumer: AIOKafkaConsumer) -> None:
        wanted = dict(await self._projections_source())
        shape = {t: self._partitions(consumer, t) for t in wanted}
        if wanted.keys() == self._projections.keys() and shape == self._shape:
            return
        async with self._pool.connection() as conn:
            for topic, projection in wanted.items():
                if topic not in self._tracked and not self._tracking_created:
                    await create_tracking(conn, projection.schema)  # once, not per reassign
                    self._tracked.add(topic)
            partitions: list[TopicPartition] = []
            seeks: dict[TopicPartition, int] = {}
            positions = await positions_of(conn, wanted)
            for topic in wanted:
                stored = positions[topic]
                for p in sorted(shape[topic]):
                    tp = TopicPartition(topic, p)
                    partitions.append(tp)
                    seeks[tp] = stored.get((topic, p), 0)
        consumer.assign(partitions)
        for tp, offset in seeks.items():
            consumer.seek(tp, offset)
        self._projections, self._shape = wanted, shape
        self.stats.assigned = len(partitions)
        log.info("runner_assigned", topics=len(wanted), partitions=len(partitions))

    async def _follow_stored_positions(self, consumer: AIOKafkaConsumer) -> None:
        """Seek to the stored position wherever it no longer matches the fetch position.

        Between batches the two are equal unless someone moved the stored one: republish
        resets positions to 0 after refilling a broker that lost its log, and replay swaps
        in a view whose positions may be ahead. Without this, a consumer that is already at
        the end of a refilled log would wait for a new record before noticing.
        """
        assigned = consumer.assignment()
        async with self._pool.connection() as conn:
            positions = await positions_of(conn, self._projections)
            for topic, projection in self._projections.items():
                stored = positions[topic]
                for (t, p), offset in stored.items():
                    tp = TopicPartition(t, p)
                    if t != topic or tp not in assigned:
                        continue
                    try:  # no valid fetch position (broker gone): nothing to compare yet
                        fetching = await asyncio.wait_for(consumer.position(tp), timeout=0.5)
                    except (TimeoutError, KafkaError):
                        continue
                    highwater = consumer.highwater(tp)
                    if highwater is not None and highwater < offset:
                        confirmed = await self._probe.highwater(t, p)
                        if confirmed is not None and confirmed < offset:
                            # The broker lost its log: read it again from its start (the
                            # stream rule ignores what was applied before).
                            log.warning("log_lost", topic=t, partition=p, stored=offset,
                                        highwater=confirmed)  # fmt: skip
                            if await reset_lost_log(conn, projection, t, {p: (offset, confirmed)}):
                                consumer.seek(tp, 0)
                            continue
                    if fetching != offset:
                        # Read again: a position republish reset meanwhile must not be
                        # sought back to the stale value read above.
                        now = await stored_positions(conn, projection.schema, projection.consumer)
                        if now.get((t, p)) != offset:
                            continue
                        log.info("position_moved_seek", topic=t, partition=p, offset=offset)
                        consumer.seek(tp, offset)

    async def _apply(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topic: str,
        partitions: dict[int, Sequence[Any]],
    ) -> None:
        projection = self._projections.get(topic)
        if projection is None:
            return
        batches = {p: [record_of(m) for m in messages] for p, messages in partitions.items()}

        async def publish(outgoing: Sequence[Outgoing]) -> None:
            await publish_outgoing(producer, outgoing, self._topic_maker)

        async with self._pool.connection() as conn:
            results = await apply_batches(
                conn, projection, topic, batches, publish, probe=self._probe
            )
            if any(r.dead for r in results.values()):
                await dead_letters.flush(conn, projection.schema, producer, self._dead_letter_topic)
        self.stats.batches += 1
        for p, result in results.items():
            self.stats.applied += result.applied
            self.stats.duplicates += result.duplicates
            self.stats.dead += result.dead
            self.stats.held += result.held
            tp = TopicPartition(topic, p)
            if result.seek_to is not None:
                self.stats.seeks += 1
                consumer.seek(tp, result.seek_to)
            elif result.next_offset is not None:
                self.stats.positions[(topic, p)] = result.next_offset


POSITIONS_PER_QUERY = 250


async def positions_of(
    conn: AsyncConnection[Any], projections: Mapping[str, Projection]
) -> dict[str, dict[tuple[str, int], int]]:
    """``stored_positions`` of every projection, keyed by its topic, a few queries in all.

    Each partner's positions live in its own schema: one query per schema was 2,000
    round trips a refresh for a view worker hosting 2,000 partners (docs/capacity.md),
    so they are read ``POSITIONS_PER_QUERY`` schemas at a time with ``UNION ALL``.
    """
    result: dict[str, dict[tuple[str, int], int]] = {t: {} for t in projections}
    items = list(projections.items())
    for start in range(0, len(items), POSITIONS_PER_QUERY):
        chunk = items[start : start + POSITIONS_PER_QUERY]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL(
                "SELECT {key}::text, topic, partition, next_offset FROM {schema}.positions "
                "WHERE consumer = {consumer}"
            ).format(
                key=sql.Literal(topic),
                schema=sql.Identifier(p.schema),
                consumer=sql.Literal(p.consumer),
            )
            for topic, p in chunk
        )
        cur = await conn.execute(query)
        for key, t, part, offset in await cur.fetchall():
            result[key][(t, part)] = offset
    return result
