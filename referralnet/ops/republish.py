"""Refill ``referral-events`` from the three stores after the broker lost its log.

Events are merged across the stores by the time they were recorded (each store in its
own position order, which keeps every stream's versions in order), so an event a
service wrote in reaction to another (``referral-routed`` after ``referral-created``)
comes after it again. Events whose ``ce_id`` is still on the topic are not sent twice.

When anything had to be refilled, every consumer is told to read its topic again from
the start: positions on ``referral-events`` go to 0, and when the partner topics were
lost too, the distributor forgets what it delivered (so it delivers everything again)
and every view's position goes to 0. Consumers skip what they applied before by stream
version, so views end exactly as they were.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from psycopg import AsyncConnection, sql

from bus.relay import to_cloudevent
from bus.topics import Topics
from eventstore.records import StoredEvent
from eventstore.store import EventStore
from referralnet.lag import STORES, consumers
from referralnet.ops import log
from schemas.envelope import to_kafka

Progress = Callable[[int, int], None]

BUS_CONSUMER_SCHEMAS = ("routing", "distributor", "outcomes")
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
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


async def _event_ids(
    conn: AsyncConnection[Any], store: EventStore, since: datetime | None
) -> set[str]:
    cur = await conn.execute(
        sql.SQL(
            "SELECT event_id::text FROM {}.events "
            "WHERE (%s::timestamptz IS NULL OR recorded_at >= %s)"
        ).format(sql.Identifier(store.schema)),
        (since, since),
    )
    return {r[0] for r in await cur.fetchall()}


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
                    ids.add(value.decode())
    return ids


async def _lost_partner_topics(
    conn: AsyncConnection[Any], bootstrap_servers: str, topics: Topics
) -> bool:
    """Whether some view consumed further than its topic now reaches."""
    views = [(c, s, t) for c, s, t in await consumers(conn, topics) if t != topics.referral_events]
    highwater = await log.topic_highwaters(bootstrap_servers, [t for _, _, t in views])
    for consumer, schema, topic in views:
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
                return True
    return False


async def reset_consumers(
    conn: AsyncConnection[Any], topics: Topics, partner_topics: bool, lock_timeout: float = 30.0
) -> list[str]:
    """Positions to 0 (one transaction); with ``partner_topics`` also the distributor's
    memory of what it delivered and every view's position. Returns the consumers reset."""
    reset: list[str] = []
    views = [(c, s, t) for c, s, t in await consumers(conn, topics) if t != topics.referral_events]
    async with conn.transaction():
        await conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout)}s"))
        )
        targets = [(s, topics.referral_events) for s in BUS_CONSUMER_SCHEMAS]
        if partner_topics:
            targets += [(s, t) for _, s, t in views]
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


async def republish(
    database_url: str,
    bootstrap_servers: str,
    topics: Topics,
    since: datetime | None = None,
    progress: Progress | None = None,
) -> RepublishResult:
    """Refill the bus from the stores (see the module docstring)."""
    started = time.monotonic()
    result = RepublishResult()
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT id FROM directory.organisations ORDER BY id")
        orgs = [r[0] for r in await cur.fetchall()]
        names = [topics.referral_events, topics.dead_letters, *(topics.org(o) for o in orgs)]
        repair = await asyncio.to_thread(log.repair_topics, bootstrap_servers, topics.layout(names))
        result.topics_created, result.topics_recreated = repair.created, repair.recreated
        present = await _present_ids(bootstrap_servers, topics.referral_events)
        stored: set[str] = set()
        for store in STORES:
            stored |= await _event_ids(conn, store, since)
        result.in_stores = len(stored)
        lost_partners = await _lost_partner_topics(conn, bootstrap_servers, topics)
        if stored - present or lost_partners:
            result.consumers_reset = await reset_consumers(conn, topics, lost_partners)
            result.partner_topics_refilled = lost_partners
        await _publish_missing(
            database_url, bootstrap_servers, topics, since, present, result, progress
        )
    result.seconds = time.monotonic() - started
    return result


async def _publish_missing(
    database_url: str,
    bootstrap_servers: str,
    topics: Topics,
    since: datetime | None,
    present: set[str],
    result: RepublishResult,
    progress: Progress | None,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=5,
        client_id="referralnet-republish",
    )
    await producer.start()
    conns = [await AsyncConnection.connect(database_url, autocommit=True) for _ in STORES]
    try:
        pending = []
        done = 0
        async for store, event in merged_history(conns, since):
            done += 1
            if str(event.event_id) in present:
                result.already_present += 1
                continue
            key, value, headers = to_kafka(to_cloudevent(store, event))
            pending.append(await producer.send(topics.referral_events, value, key, headers=headers))
            if len(pending) >= 1000:
                for future in pending:
                    await future
                result.published += len(pending)
                pending.clear()
                if progress is not None:
                    progress(done, result.in_stores)
        for future in pending:
            await future
        result.published += len(pending)
        if progress is not None:
            progress(done, max(done, result.in_stores))
    finally:
        for c in conns:
            await c.close()
        await producer.stop()
