"""Issue 11, reproduction 3 on the real broker: a hole in a partition's offsets.

A transactional producer (``confluent_kafka``) leaves a commit marker after each
transaction: it takes an offset that holds no record, so the records sit at 0, 2, 4 ...
A consumer that applied offset 0 stores 1; its next fetch starts at 2. It must move on,
not seek back to 1 forever (the old consumer was stuck there until a replay).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import AsyncConnection

from bus.admin import ensure_topics
from bus.offsets import OffsetProbe
from bus.runner import TrackedRunner
from bus.tracking import Outgoing, create_tracking, stored_positions
from eventstore.pool import connection_pool
from schemas.envelope import CloudEvent, to_kafka
from tests.bus.test_tracking import session_event
from tests.conftest import Stack

pytestmark = pytest.mark.infra


class Counting:
    """Applies nothing but remembers what it was given."""

    consumer = "hole-test"
    interested_in: frozenset[str] | None = None
    may_reject = False

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.applied: list[uuid.UUID] = []

    async def apply(
        self, conn: AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]:
        self.applied.append(event.id)
        return ()


def _produce_in_transactions(bootstrap: str, topic: str, events: list[CloudEvent]) -> None:
    ensure_topics(bootstrap, {topic: 1})
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}", "acks": "all"}
    )
    producer.init_transactions(30)
    for event in events:  # one transaction each: a commit marker after every record
        key, value, raw = to_kafka(event)
        headers: list[tuple[str, str | bytes | None]] = list(raw)
        producer.begin_transaction()
        producer.produce(topic, key=key, value=value, headers=headers, partition=0)
        producer.commit_transaction(30)


async def test_a_consumer_moves_past_offsets_that_hold_no_record(
    stack: Stack, database_url: str
) -> None:
    topic = f"holes-{uuid.uuid4().hex[:8]}"
    events = [session_event(uuid.uuid4(), 1) for _ in range(4)]
    await asyncio.to_thread(_produce_in_transactions, stack.bootstrap_servers, topic, events)
    probe = OffsetProbe(stack.bootstrap_servers)
    try:
        assert await probe(topic, 0, 1) == 2  # offset 1 is a commit marker: the hole
    finally:
        await probe.close()

    projection = Counting(f"holes_{uuid.uuid4().hex[:8]}")
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
            partitions_of=lambda _topic: 1,
            dead_letter_topic=f"{topic}-dead",
            max_records=1,  # one record per batch: the position lands on every hole
            linger_seconds=0,
        )
        task = asyncio.create_task(runner.run(stop))
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while len(projection.applied) < len(events):
                assert asyncio.get_running_loop().time() < deadline, (
                    f"stuck after {len(projection.applied)} of {len(events)} "
                    f"(seeks: {runner.stats.seeks})"
                )
                await asyncio.sleep(0.05)  # polling with a deadline
        finally:
            stop.set()
            await task
    assert projection.applied == [e.id for e in events]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        positions = await stored_positions(conn, projection.schema, projection.consumer)
    assert positions[(topic, 0)] == 7  # after the last record (offset 6)
