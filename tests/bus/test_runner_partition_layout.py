"""Issue 11, the stall after a broker loss: a runner that started while a lost topic had
the broker's own partition count reads every partition once the topic is made right.

After a broker loses its log, any client's metadata request auto-creates a topic with
the broker's default count (Tansu: 4). A runner that (re)started then assigned the four
partitions it saw; ``republish`` deletes the topic and creates it again with six, and
the old runner never read partitions 4 and 5: every consumer but that one caught up,
and it stood still behind the refilled log ("not caught up after 90s: lag 10").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from bus.runner import TrackedRunner
from bus.tracking import create_tracking, stored_positions
from eventstore.pool import connection_pool
from referralnet.ops.log import repair_topics
from schemas.envelope import to_kafka
from tests.bus.test_offset_holes import Counting
from tests.bus.test_tracking import session_event
from tests.conftest import Stack

pytestmark = pytest.mark.infra

CREATED_WITH = 6
BROKER_DEFAULT = 4


async def _one_per_partition(
    bootstrap: str, topic: str, partitions: int = CREATED_WITH
) -> list[uuid.UUID]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        ids = []
        for partition in range(partitions):
            event = session_event(uuid.uuid4(), 1)
            key, value, headers = to_kafka(event)
            await producer.send_and_wait(
                topic, value=value, key=key, headers=headers, partition=partition
            )
            ids.append(event.id)
        return ids
    finally:
        await producer.stop()


def _auto_created(bootstrap: str, topic: str) -> None:
    """What a broker that lost its log makes of a topic for the first client to ask."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, BROKER_DEFAULT, replication_factor=1)])
    finally:
        admin.close()


async def _run(
    stack: Stack,
    database_url: str,
    topic: str,
    created_with: int,
    feed: Callable[[], Awaitable[list[uuid.UUID]]],
) -> tuple[list[uuid.UUID], Counting]:
    """Start a runner on ``topic`` (``created_with`` partitions by its layout); once it
    has assigned, ``feed`` changes the topic and produces; poll until all are applied."""
    projection = Counting(f"layout_{uuid.uuid4().hex[:8]}")
    conn: psycopg.AsyncConnection[Any]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await create_tracking(conn, projection.schema)

    async def projections() -> dict[str, Counting]:
        return {topic: projection}

    stop = asyncio.Event()
    async with connection_pool(database_url, min_size=1, max_size=2) as pool:
        runner = TrackedRunner(
            bootstrap_servers=stack.bootstrap_servers,
            pool=pool,
            projections=projections,
            partitions_of=lambda _topic: created_with,
            dead_letter_topic=f"{topic}-dead",
            refresh_seconds=0.5,
            linger_seconds=0,
        )
        task = asyncio.create_task(runner.run(stop))
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while runner.stats.assigned == 0:
                assert loop.time() < deadline, "the runner never assigned its partitions"
                await asyncio.sleep(0.05)  # polling the runner with a deadline
            events = await feed()
            deadline = loop.time() + 30
            while len(projection.applied) < len(events):
                assert loop.time() < deadline, (
                    f"applied {len(projection.applied)} of {len(events)}; "
                    f"assigned {runner.stats.assigned} partitions"
                )
                await asyncio.sleep(0.05)  # polling the runner with a deadline
        finally:
            stop.set()
            await task
    return events, projection


async def test_a_runner_started_on_an_auto_created_topic_reads_every_partition_after_repair(
    stack: Stack, database_url: str
) -> None:
    topic = f"layout-{uuid.uuid4().hex[:8]}"
    _auto_created(stack.bootstrap_servers, topic)

    async def repaired_then_fed() -> list[uuid.UUID]:
        # As `republish` does: the topic is made right (deleted, created with six).
        await asyncio.to_thread(repair_topics, stack.bootstrap_servers, {topic: CREATED_WITH})
        return await _one_per_partition(stack.bootstrap_servers, topic)

    events, projection = await _run(stack, database_url, topic, CREATED_WITH, repaired_then_fed)
    assert sorted(projection.applied) == sorted(events)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        positions = await stored_positions(conn, projection.schema, projection.consumer)
    assert {p for (_, p), offset in positions.items() if offset == 1} == set(range(CREATED_WITH))


async def test_a_partner_topic_auto_created_with_more_partitions_is_read_in_all_of_them(
    stack: Stack, database_url: str
) -> None:
    """The other member of the kind: created with 1 partition, but a client's request
    made the broker create it first with its own 4 (seen in CI: a view read only
    partition 0 and stood 1,500 records behind); until republish makes it right every
    partition it holds is read."""
    topic = f"org.layout-{uuid.uuid4().hex[:8]}"
    _auto_created(stack.bootstrap_servers, topic)

    async def fed() -> list[uuid.UUID]:
        return await _one_per_partition(stack.bootstrap_servers, topic, BROKER_DEFAULT)

    events, projection = await _run(stack, database_url, topic, 1, fed)
    assert sorted(projection.applied) == sorted(events)
