"""Intake's stream of record and its encrypted person tables."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from eventstore.store import EventStore
from services.intake import pii

STORE = EventStore("intake", "/services/intake")

IDEMPOTENCY_DDL = """
CREATE TABLE IF NOT EXISTS intake.idempotency (
    org_id      text NOT NULL,
    key         text NOT NULL,
    referral_id uuid NOT NULL,
    person_ref  text NOT NULL,
    PRIMARY KEY (org_id, key)
);
-- keys are stored as SHA-256 digests (never in clear, not even in a constraint
-- violation's log line) with a digest of the request body they were first used with
ALTER TABLE intake.idempotency ADD COLUMN IF NOT EXISTS request_hash text;
ALTER TABLE intake.idempotency ALTER COLUMN person_ref DROP NOT NULL;
"""


async def create(conn: AsyncConnection[Any]) -> None:
    """Create intake's schema: events, outbox, people, idempotency keys."""
    await STORE.create(conn)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('referralnet-ddl'))")
        await conn.execute(pii.DDL)
        await conn.execute(IDEMPOTENCY_DDL)
