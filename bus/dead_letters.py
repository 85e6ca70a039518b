"""Poison events: parked in PostgreSQL with the consumer's position, then published.

The parking row is written in the consumer's transaction, so a crash between "skip this
event" and "publish it to dead-letters" cannot lose it; ``flush`` publishes and deletes.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from psycopg import AsyncConnection, sql

REASON = "dlq_reason"
SOURCE_TOPIC = "dlq_topic"
SOURCE_PARTITION = "dlq_partition"
SOURCE_OFFSET = "dlq_offset"
CONSUMER = "dlq_consumer"


async def flush(
    conn: AsyncConnection[Any], schema: str, producer: AIOKafkaProducer, dead_letter_topic: str
) -> int:
    """Publish parked dead letters of one consumer schema; return how many."""
    s = sql.Identifier(schema)
    async with conn.transaction():
        cur = await conn.execute(
            sql.SQL(
                'SELECT id, topic, partition, "offset", key, value, headers, reason, consumer '
                "FROM {}.dead_letter_outbox ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 500"
            ).format(s)
        )
        rows = await cur.fetchall()
        if not rows:
            return 0
        futures = []
        for _id, topic, partition, offset, key, value, headers, reason, consumer in rows:
            out_headers = [(k, v.encode()) for k, v in headers] + [
                (REASON, reason.encode()),
                (SOURCE_TOPIC, topic.encode()),
                (SOURCE_PARTITION, str(partition).encode()),
                (SOURCE_OFFSET, str(offset).encode()),
                (CONSUMER, consumer.encode()),
            ]
            futures.append(
                await producer.send(
                    dead_letter_topic,
                    value=bytes(value) if value is not None else None,
                    key=bytes(key) if key is not None else None,
                    headers=out_headers,
                )
            )
        for future in futures:
            await future
        await conn.execute(
            sql.SQL("DELETE FROM {}.dead_letter_outbox WHERE id = ANY(%s)").format(s),
            ([r[0] for r in rows],),
        )
    return len(rows)
