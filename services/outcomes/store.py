"""Outcomes' stream of record and the case table it keeps from the journey log."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from bus.tracking import create_tracking
from eventstore.store import EventStore

STORE = EventStore("outcomes", "/services/outcomes")

DDL = """
CREATE TABLE IF NOT EXISTS outcomes.cases (
    referral_id      uuid PRIMARY KEY,
    referrer_org     text NOT NULL,
    referred_at      timestamptz NOT NULL,
    service_org      text,
    status           text NOT NULL,
    routed_at        timestamptz,
    routed_seen_at   timestamptz,
    accepted_at      timestamptz,
    first_contact_at timestamptz,
    overdue_flagged  boolean NOT NULL DEFAULT false,
    closed_at        timestamptz
);
CREATE INDEX IF NOT EXISTS cases_waiting ON outcomes.cases (routed_at)
    WHERE first_contact_at IS NULL AND closed_at IS NULL;
CREATE TABLE IF NOT EXISTS outcomes.activity_links (
    referral_id  uuid NOT NULL,
    activity_id  text NOT NULL,
    provider_org text NOT NULL,
    referred_at  timestamptz NOT NULL,
    PRIMARY KEY (referral_id, activity_id)
);
"""


async def create(conn: AsyncConnection[Any]) -> None:
    """Create outcomes' schema: events, outbox, cases, activity links, tracking."""
    await STORE.create(conn)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('referralnet-ddl'))")
        await conn.execute(DDL)
    await create_tracking(conn, "outcomes")
