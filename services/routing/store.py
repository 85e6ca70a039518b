"""Routing's stream of record, its case table and the capacity ledger."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from bus.tracking import create_tracking
from eventstore.store import EventStore
from infra.migrations.catalog import ROUTING
from infra.migrations.runner import Target, migrate

STORE = EventStore("routing", "/services/routing")

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
    await migrate(conn, Target(ROUTING, "routing"))
    await create_tracking(conn, "routing")


async def sync_capacity(conn: AsyncConnection[Any]) -> None:
    """Bring the capacity ledger up to date with the directory (new services, new limits).

    A lowered limit never drops below the current caseload: people already allocated
    keep their place.
    """
    await conn.execute(SYNC_CAPACITY)
