"""Poison events: kept in PostgreSQL for good, with a copy on ``dead-letters`` as a notice.

A consumer parks a record in its schema's ``dead_letter_outbox`` in the same transaction
that skips it (``bus.tracking``), so a crash cannot lose it. That row is the dead letter:
it is never deleted. ``flush`` publishes a copy to the ``dead-letters`` topic and stamps
``published_at``; the topic is a notification for anyone watching, not the record (a
broker that loses its log loses only the notices). ``referralnet dead-letters`` lists and
re-drives from the rows; a re-driven row keeps ``retried_at`` and where it went.

The columns beyond the original insert contract (``parked_at``, ``published_at``,
``retried_at``, ``retried_to``, ``discarded_at``) all have defaults, so code that inserts
rows with the original column list keeps working; ``ensure_columns`` adds them to older
tables.
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
LETTER_ID = "dlq_id"
"""Header on the notice: ``<schema>:<row id>``, the id ``dead-letters retry`` takes."""

TABLE = "dead_letter_outbox"

COLUMNS_DDL = """
ALTER TABLE {table}
    ADD COLUMN IF NOT EXISTS parked_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS published_at timestamptz,
    ADD COLUMN IF NOT EXISTS retried_at   timestamptz,
    ADD COLUMN IF NOT EXISTS retried_to   text,
    ADD COLUMN IF NOT EXISTS discarded_at timestamptz;
CREATE INDEX IF NOT EXISTS {unpublished} ON {table} (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS {pending} ON {table} (id)
    WHERE retried_at IS NULL AND discarded_at IS NULL;
"""


def letter_id(schema: str, row_id: int) -> str:
    """The id of a dead letter across every consumer schema: ``<schema>:<row id>``."""
    return f"{schema}:{row_id}"


async def ensure_columns(conn: AsyncConnection[Any], schema: str) -> None:
    """Add the durability columns to ``schema``'s dead-letter table if it lacks them.

    Checked in the catalog first: ``ALTER TABLE`` takes an exclusive lock even when
    there is nothing to add, and consumers insert into this table in every batch.
    """
    cur = await conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = %s AND column_name IN ('parked_at', 'published_at', 'retried_at', "
        "'retried_to', 'discarded_at')",
        (schema, TABLE),
    )
    row = await cur.fetchone()
    if row is None or row[0] < 5:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('referralnet-ddl'))")
            await conn.execute(
                sql.SQL(COLUMNS_DDL).format(
                    table=sql.Identifier(schema, TABLE),
                    unpublished=sql.Identifier(f"{TABLE}_unpublished"),
                    pending=sql.Identifier(f"{TABLE}_pending"),
                )
            )


def notice_headers(
    schema: str,
    row_id: int,
    headers: list[list[str]],
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    consumer: str,
) -> list[tuple[str, bytes]]:
    """The original headers plus why and where from (``bus.dead_letters`` names)."""
    return [(k, v.encode()) for k, v in headers] + [
        (REASON, reason.encode()),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
        (CONSUMER, consumer.encode()),
        (LETTER_ID, letter_id(schema, row_id).encode()),
    ]


async def flush(
    conn: AsyncConnection[Any], schema: str, producer: AIOKafkaProducer, dead_letter_topic: str
) -> int:
    """Publish a notice for each unpublished dead letter of one schema; return how many.

    The rows stay; ``published_at`` says the notice went out (acks=all), so a crash or a
    failed send means "notify again", never "forgotten".
    """
    await ensure_columns(conn, schema)
    table = sql.Identifier(schema, TABLE)
    async with conn.transaction():
        cur = await conn.execute(
            sql.SQL(
                'SELECT id, topic, partition, "offset", key, value, headers, reason, consumer '
                "FROM {} WHERE published_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 500"
            ).format(table)
        )
        rows = await cur.fetchall()
        if not rows:
            return 0
        futures = []
        for row_id, topic, partition, offset, key, value, headers, reason, consumer in rows:
            futures.append(
                await producer.send(
                    dead_letter_topic,
                    value=bytes(value) if value is not None else None,
                    key=bytes(key) if key is not None else None,
                    headers=notice_headers(
                        schema, row_id, headers, reason, topic, partition, offset, consumer
                    ),
                )
            )
        for future in futures:
            await future
        await conn.execute(
            sql.SQL("UPDATE {} SET published_at = now() WHERE id = ANY(%s)").format(table),
            ([r[0] for r in rows],),
        )
    return len(rows)
