"""Host a ``Projection`` in a faust-streaming app, with positions kept in PostgreSQL.

The agent stays thin: take a batch of events, hand each partition's records to
``apply_batch`` (one transaction, position and dedup included), and publish outgoing
events before that transaction commits. faust's own committed offsets only decide where
re-reading starts; they are synced from PostgreSQL before the worker joins its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import faust
import faust.transport.drivers.aiokafka
import psycopg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.types import TP
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from bus import dead_letters
from bus.admin import TopicMaker
from bus.offsets import OffsetProbe
from bus.runner import publish_outgoing
from bus.tracking import (
    Outgoing,
    Projection,
    Record,
    apply_batches,
    keep_start,
    record_of,
    reset_lost_log,
    stored_positions,
)
from eventstore.pool import connection_pool
from infra.kafka_security import client_kwargs

log = structlog.get_logger(__name__)


FETCH_MAX_WAIT_MS = 100
TAKE_WITHIN_SECONDS = 0.1
"""How long a take waits to fill a batch: per-batch costs (a transaction, position rows,
a record batch per partner topic, which the embedded broker rescans on every fetch) are
shared by more events. 100 ms beat 50 ms on the 800-referral demo (simulation 64/61 s
against 73/76 s, alternating runs); 200 ms gained nothing more."""
REDISCOVER_SECONDS = 3.0


def _short_fetch_wait() -> None:
    """faust fixes aiokafka's fetch_max_wait_ms at 1500; Tansu holds an empty fetch that
    long even when records arrive meanwhile, which cost ~0.7 s per hop. Shorten it."""
    thread: Any = faust.transport.drivers.aiokafka.AIOKafkaConsumerThread
    if getattr(thread, "_referralnet_short_wait", False):
        return
    create = thread._create_worker_consumer

    def create_with_short_wait(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    thread._create_worker_consumer = create_with_short_wait
    thread._referralnet_short_wait = True


def make_app(app_id: str, bootstrap_servers: str, partitions: int) -> faust.App:
    """A faust app with the settings measured to work on Tansu (infra-notes)."""
    _short_fetch_wait()
    return faust.App(
        app_id,
        **client_kwargs("faust"),
        broker=f"kafka://{bootstrap_servers}",
        store="memory://",
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        stream_wait_empty=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=500,
        broker_commit_interval=1.0,
    )


def tracked_agent(
    app: faust.App,
    bootstrap_servers: str,
    topic_name: str,
    projection: Projection,
    conninfo: str,
    dead_letter_topic: str,
    partitions_of: Callable[[str], int],
    batch: int = 500,
) -> None:
    """Register an agent that applies ``projection`` to ``topic_name``; the topics it
    publishes to are created with ``partitions_of(topic)`` partitions before its first
    record to each (``bus.admin.TopicMaker``)."""
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, value_serializer="raw")
    state: dict[str, Any] = {}
    probe = OffsetProbe(bootstrap_servers)
    topic_maker = TopicMaker(bootstrap_servers, partitions_of)

    async def resources() -> tuple[AsyncConnectionPool[AsyncConnection[Any]], AIOKafkaProducer]:
        # Created on first use, inside faust's event loop (the producer again after a
        # failure dropped it).
        if "pool" not in state:
            pool = connection_pool(conninfo, min_size=1, max_size=4)
            await pool.open()
            state["pool"] = pool
        if "producer" not in state:
            # A short request timeout: after a kill -9 the broker can leave a partition's
            # produce request unanswered; 5 s (not aiokafka's 40 s) until we retry.
            producer = AIOKafkaProducer(
                **client_kwargs("aiokafka"),
                bootstrap_servers=bootstrap_servers,
                acks="all",
                linger_ms=2,
                request_timeout_ms=5000,
            )
            await producer.start()
            state["producer"] = producer
        return state["pool"], state["producer"]

    async def _drop_producer() -> None:
        producer = state.pop("producer", None)
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def agent(stream: faust.StreamT[bytes]) -> None:
        # take_events exists in faust-streaming but not in its type stubs.
        async for events in stream.take_events(batch, within=TAKE_WITHIN_SECONDS):  # type: ignore[attr-defined]
            by_topic: dict[str, dict[int, list[Record]]] = defaultdict(lambda: defaultdict(list))
            for event in events:
                m = event.message
                by_topic[m.topic][m.partition].append(record_of(m))
            pool, producer = await resources()

            async def publish(outgoing: Sequence[Outgoing]) -> None:
                await publish_outgoing(producer, outgoing, topic_maker)  # noqa: B023

            for tname, partitions in by_topic.items():
                try:
                    async with pool.connection() as conn:
                        results = await apply_batches(
                            conn, projection, tname, partitions, publish, probe=probe
                        )
                        if any(r.dead for r in results.values()):
                            await dead_letters.flush(
                                conn, projection.schema, producer, dead_letter_topic
                            )
                except (KafkaError, psycopg.errors.DeadlockDetected) as exc:
                    # The batch was rolled back. Re-read it (faust has already fetched
                    # past it) with a fresh producer: after a broker hiccup the old one
                    # can keep failing on a partition for its whole request timeout.
                    log.warning("batch_retry", topic=tname, error=repr(exc))
                    await _drop_producer()
                    async with pool.connection() as conn:
                        firsts = {p: recs[0].offset for p, recs in partitions.items()}
                        await keep_start(conn, projection, tname, firsts)
                    topics = list(by_topic)
                    for t in topics[topics.index(tname) :]:
                        for p, recs in by_topic[t].items():
                            await app.consumer.seek(TP(t, p), recs[0].offset)
                    await asyncio.sleep(0.5)  # back-off before the retry
                    break
                for partition, result in results.items():
                    if result.seek_to is not None:
                        log.warning(
                            "position_reset_seek",
                            topic=tname,
                            partition=partition,
                            offset=result.seek_to,
                        )
                        await app.consumer.seek(TP(tname, partition), result.seek_to)

    agent.__name__ = f"{projection.consumer.replace('.', '_')}_agent"

    stop_app = app.on_stop

    async def on_stop() -> None:
        """Close what the agent opened lazily before faust stops: an open producer at
        exit is an ``Unclosed AIOKafkaProducer`` error in the log of a clean stop."""
        await _drop_producer()
        await probe.close()
        pool = state.pop("pool", None)
        if pool is not None:
            await pool.close()
        await stop_app()

    app.on_stop = on_stop  # type: ignore[method-assign]

    async def rediscover_topic() -> None:
        """Refresh metadata while the group holds no partition of the topic, or while the
        client knows the topic with another partition count than it is created with.

        A broker that lost its log lets us rejoin a group for a topic that no longer
        exists, or auto-creates it for our metadata request with its own partition count
        (Tansu: 4); once ``republish`` recreates it with 6, only a metadata refresh makes
        the group rebalance onto it (faust refreshes every 5 minutes): until then the
        partitions the stale metadata lacks are read by nobody (seen: routing stalled at
        offset 0 of partitions 4 and 5 for minutes). Checked on the client's cached
        metadata, so normal operation costs nothing.
        """
        try:
            thread: Any = app.consumer._thread  # type: ignore[attr-defined]
            client = thread._ensure_consumer()._client
            known = client.cluster.partitions_for_topic(topic_name)
            holding = any(tp.topic == topic_name for tp in app.consumer.assignment())
            if holding and known is not None and len(known) == app.conf.topic_partitions:
                return
            await thread.call_thread(client.force_metadata_update)
        except Exception as exc:  # best effort: the next tick tries again
            log.warning("metadata_refresh_failed", topic=topic_name, error=str(exc))

    rediscover_topic.__name__ = f"{projection.consumer.replace('.', '_')}_rediscover"
    app.timer(interval=REDISCOVER_SECONDS)(rediscover_topic)

    last_seen: dict[tuple[str, int], int] = {}

    async def follow_stored_positions() -> None:
        """Where the stored position stands still and differs from faust's fetch
        position, seek to it; where it lies beyond the log's end, read the log again.

        A batch tells the agent where to seek only when records arrive: after
        ``republish`` reset the stored positions (or a worker started on a broker that
        lost its log), a consumer whose fetch position sits at the end of the refilled
        log would otherwise wait for new traffic on every partition (issue 11, "lag 941
        for minutes"). The view runner does the same between batches.
        """
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == topic_name]
        if not assigned:
            return
        try:
            pool, _ = await resources()
            async with pool.connection() as conn:
                stored = await stored_positions(conn, projection.schema, projection.consumer)
                for tp in assigned:
                    key = (tp.topic, tp.partition)
                    at = stored.get(key)
                    if at is None:
                        continue
                    still, last_seen[key] = last_seen.get(key) == at, at
                    highwater = app.consumer.highwater(tp)
                    if highwater is not None and highwater < at:
                        confirmed = await probe.highwater(tp.topic, tp.partition)
                        if confirmed is not None and confirmed < at:
                            log.warning("log_lost", topic=tp.topic, partition=tp.partition,
                                        stored=at, highwater=confirmed)  # fmt: skip
                            if await reset_lost_log(
                                conn, projection, tp.topic, {tp.partition: (at, confirmed)}
                            ):
                                await app.consumer.seek(tp, 0)
                            last_seen.pop(key, None)  # read again next tick
                            continue
                    fetching = await app.consumer.position(tp)
                    if still and fetching is not None and fetching != at:
                        # Read again: the probes above take time, and a position republish
                        # reset meanwhile must not be sought back to its stale value.
                        now = await stored_positions(conn, projection.schema, projection.consumer)
                        if now.get(key) != at:
                            continue
                        log.info("position_moved_seek", topic=tp.topic, partition=tp.partition,
                                 offset=at, fetching=fetching)  # fmt: skip
                        await app.consumer.seek(tp, at)
        except Exception as exc:  # best effort: the next tick tries again
            log.warning("follow_positions_failed", topic=topic_name, error=repr(exc))

    follow_stored_positions.__name__ = f"{projection.consumer.replace('.', '_')}_follow"
    app.timer(interval=REDISCOVER_SECONDS)(follow_stored_positions)
    app.agent(topic, name=agent.__name__)(agent)


def sync_group_offsets(
    bootstrap_servers: str, group_id: str, positions: dict[tuple[str, int], int]
) -> None:
    """Commit the PostgreSQL positions as the group's offsets, so faust starts there.

    Not a position beyond its partition's log end: that broker lost its log, and a
    stale offset committed to it would make faust wait there for traffic that the
    positions say was already read. Those partitions start at the log's start instead
    (the first batch then finds the log lost and resets the stored position).
    """
    positions = asyncio.run(_within_log(bootstrap_servers, positions))
    if not positions:
        return
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        **client_kwargs("kafka-python"),
    )
    try:
        consumer.commit(
            {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in positions.items()}
        )
    except Exception as exc:  # an optimisation only: positions in Postgres stay the truth
        log.warning("group_offset_sync_failed", group=group_id, error=str(exc))
    finally:
        consumer.close()


async def _within_log(
    bootstrap_servers: str, positions: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    probe = OffsetProbe(bootstrap_servers)
    kept = {}
    try:
        for (topic, partition), offset in positions.items():
            highwater = await probe.highwater(topic, partition)
            if highwater is not None and offset > highwater:
                log.warning("stale_position_not_committed", topic=topic, partition=partition,
                            stored=offset, highwater=highwater)  # fmt: skip
                continue
            kept[(topic, partition)] = offset
    finally:
        await probe.close()
    return kept


def run_worker(app: faust.App) -> None:
    """Run a faust worker in this process until it is stopped (SIGTERM/SIGINT)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # faust leaves the libraries' loggers enabled for debug: aiokafka then builds a log
    # record for every message sent, only for the handler to drop it. Warnings still show.
    logging.disable(logging.INFO)
    faust.Worker(app, loglevel="warning", loop=loop).execute_from_commandline()
