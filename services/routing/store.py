"""Routing's stream of record, its case table and the capacity ledger."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from bus.tracking import create_tracking
from eventstore.store import EventStore

STORE = EventStore("routing", "/services/routing")

DDL = """
CREATE TABLE IF NOT EXISTS routing.cases (
    referral_id  uuid PRIMARY KEY,
    area         text NOT NULL,
    needs        text[] NOT NULL,
    age_band     text NOT NULL,
    urgency      text NOT NULL,
    referrer_org text NOT NULL,
    status       text NOT NULL,
    service_org  text,
    tried        text[] NOT NULL DEFAULT '{}',
    holds_place  boolean NOT NULL DEFAULT false,
    referred_at  timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS routing.capacity (
    service_org    text PRIMARY KEY,
    areas          text[] NOT NULL,
    needs          text[] NOT NULL,
    min_age        integer NOT NULL,
    max_age        integer,
    caseload_limit integer NOT NULL,
    caseload       integer NOT NULL DEFAULT 0 CHECK (caseload >= 0),
    CHECK (caseload <= caseload_limit OR caseload_limit < 0)
);
"""

SYNC_CAPACITY = """
INSERT INTO routing.capacity (service_org, areas, needs, min_age, max_age, caseload_limit)
SELECT o.id, o.areas,
       ARRAY(SELECT jsonb_array_elements_text(o.spec -> 'link_worker_service' -> 'needs')),
       (o.spec -> 'link_worker_service' ->> 'min_age')::int,
       (o.spec -> 'link_worker_service' ->> 'max_age')::int,
       (o.spec -> 'link_worker_service' ->> 'link_workers')::int
         * (o.spec -> 'link_worker_service' ->> 'caseload_per_worker')::int
FROM directory.organisations o WHERE o.kind = 'link-worker-service'
ON CONFLICT (service_org) DO UPDATE SET
    areas = EXCLUDED.areas, needs = EXCLUDED.needs, min_age = EXCLUDED.min_age,
    max_age = EXCLUDED.max_age,
    caseload_limit = GREATEST(EXCLUDED.caseload_limit, routing.capacity.caseload)
"""


async def create(conn: AsyncConnection[Any]) -> None:
    """Create routing's schema: events, outbox, cases, capacity, consumer tracking."""
    await STORE.create(conn)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('referralnet-ddl'))")
        await conn.execute(DDL)
    await create_tracking(conn, "routing")


async def sync_capacity(conn: AsyncConnection[Any]) -> None:
    """Bring the capacity ledger up to date with the directory (new services, new limits).

    A lowered limit never drops below the current caseload: people already allocated
    keep their place.
    """
    await conn.execute(SYNC_CAPACITY)
