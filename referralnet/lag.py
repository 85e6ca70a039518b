"""How far behind each consumer is, from positions in PostgreSQL and true high watermarks.

Tansu answers ListOffsets "latest" wrongly (infra-notes), so the high watermark is read
from fetch responses instead, and "caught up" means: every outbox empty, every stored
position equal to its partition's high watermark, twice in a row with nothing moving.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg import AsyncConnection, sql

from bus.topics import Topics
from infra.kafka_security import client_kwargs
from referralnet.services_table import BUS_CONSUMERS
from referralnet.services_table import STORES as STORES  # re-exported (status, verify, ...)
from views.schema import schema_name


@dataclass(frozen=True)
class ConsumerLag:
    """One consumer on one partition: its stored position against the high watermark."""

    consumer: str
    schema: str
    topic: str
    position: int
    highwater: int
    partition: int = -1
    updated_at: datetime | None = None  # when the position last moved (None: never stored)

    @property
    def lag(self) -> int:
        return max(0, self.highwater - self.position)


async def consumers(conn: AsyncConnection[Any], topics: Topics) -> list[tuple[str, str, str]]:
    """(consumer, schema, topic) for every consumer that keeps positions in Postgres."""
    fixed = [(s.consumer or s.name, s.schema, topics.referral_events) for s in BUS_CONSUMERS]
    cur = await conn.execute("SELECT id FROM directory.organisations ORDER BY id")
    views = [(f"view.{o}", schema_name(o), topics.org(o)) for (o,) in await cur.fetchall()]
    return fixed + views


async def highwaters(
    bootstrap: str, topic_names: list[str], wait_seconds: float = 10.0
) -> dict[tuple[str, int], int]:
    """True high watermark of every partition of ``topic_names`` (from fetch responses)."""
    consumer = AIOKafkaConsumer(
        **client_kwargs("aiokafka"),
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=1024,
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(t, p)
            for t in sorted(set(topic_names))
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not tps:
            return {}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + wait_seconds
        result: dict[tuple[str, int], int] = {}
        while len(result) < len(tps) and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=100, max_records=1)
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None:
                    result[(tp.topic, tp.partition)] = hw
                    consumer.pause(tp)
        return result
    finally:
        await consumer.stop()


async def consumer_lags(
    conn: AsyncConnection[Any], bootstrap: str, topics: Topics
) -> list[ConsumerLag]:
    """Lag of every consumer on every partition it reads."""
    wanted = await consumers(conn, topics)
    hw = await highwaters(bootstrap, [t for _, _, t in wanted])
    rows = []
    for consumer, schema, topic in wanted:
        try:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT partition, next_offset, updated_at FROM {}.positions "
                    "WHERE consumer = %s AND topic = %s"
                ).format(sql.Identifier(schema)),
                (consumer, topic),
            )
            stored = {p: (o, at) for p, o, at in await cur.fetchall()}
        except Exception:  # the view schema does not exist yet: nothing consumed
            await conn.rollback()
            stored = {}
        for (t, p), high in sorted(hw.items()):
            if t == topic:
                position, at = stored.get(p, (0, None))
                rows.append(ConsumerLag(consumer, schema, topic, position, high, p, at))
    return rows


async def outbox_backlog(conn: AsyncConnection[Any]) -> dict[str, int]:
    return {s.schema: await s.outbox_backlog(conn) for s in STORES}


async def wait_caught_up(
    database_url: str, bootstrap: str, topics: Topics, wait_seconds: float = 120.0
) -> float:
    """Block until the whole pipeline is quiet; return seconds waited.

    Raises ``TimeoutError`` after ``wait_seconds``, naming the outbox backlog and each
    consumer partition still behind (position/high watermark), so a stall says where.
    """
    start = time.monotonic()
    quiet_rounds = 0
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            backlog = sum((await outbox_backlog(conn)).values())
            lags = await consumer_lags(conn, bootstrap, topics)
            behind = backlog + sum(lag.lag for lag in lags)
            quiet_rounds = quiet_rounds + 1 if behind == 0 else 0
            if quiet_rounds >= 2:
                return time.monotonic() - start
            if time.monotonic() - start > wait_seconds:
                behind_by = [lag for lag in lags if lag.lag]
                raise TimeoutError(
                    f"not caught up after {wait_seconds:.0f}s: outbox {backlog}, "
                    f"lag {sum(lag.lag for lag in lags)}"
                    + "".join(
                        f"; {lag.consumer} at {lag.topic}[{lag.partition}] "
                        f"{lag.position}/{lag.highwater}"
                        for lag in behind_by[:8]
                    )
                    + (f"; {len(behind_by) - 8} more" if len(behind_by) > 8 else "")
                )
            await asyncio.sleep(0.2)  # polling pipeline state with a deadline


@dataclass(frozen=True)
class LogLoss:
    """A consumer found a partition's log ending before its stored position (the broker
    lost its log) and read it again from the start (``bus.tracking.reset_lost_log``)."""

    consumer: str
    schema: str
    topic: str
    partition: int
    stored: int
    highwater: int
    found_at: datetime


async def log_losses(conn: AsyncConnection[Any], topics: Topics) -> list[LogLoss]:
    """Every loss the consumers noted since the last ``republish`` cleared them."""
    found: list[LogLoss] = []
    for schema in sorted({s for _, s, _ in await consumers(conn, topics)}):
        cur = await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".log_losses',))
        row = await cur.fetchone()
        if not row or row[0] is None:
            continue
        cur = await conn.execute(
            sql.SQL(
                "SELECT consumer, topic, partition, stored, highwater, found_at "
                "FROM {}.log_losses ORDER BY found_at"
            ).format(sql.Identifier(schema))
        )
        found += [LogLoss(r[0], schema, r[1], r[2], r[3], r[4], r[5]) for r in await cur.fetchall()]
    return found


async def clear_log_losses(conn: AsyncConnection[Any], topics: Topics) -> None:
    """Forget every loss noted until now: ``republish`` has refilled the topics. (Notes
    taken while it ran describe the same loss; a consumer notes a loss only where its
    position is beyond the log, which after the refill takes a new loss.)"""
    for schema in sorted({s for _, s, _ in await consumers(conn, topics)}):
        cur = await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".log_losses',))
        row = await cur.fetchone()
        if row and row[0] is not None:
            await conn.execute(
                sql.SQL("DELETE FROM {}.log_losses WHERE found_at <= now()").format(
                    sql.Identifier(schema)
                )
            )
