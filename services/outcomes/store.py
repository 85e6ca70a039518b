"""Outcomes' stream of record and the case table it keeps from the journey log."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from bus.tracking import create_tracking
from eventstore.store import EventStore
from infra.migrations.catalog import OUTCOMES
from infra.migrations.runner import Target, migrate

STORE = EventStore("outcomes", "/services/outcomes")


async def create(conn: AsyncConnection[Any]) -> None:
    """Create outcomes' schema: events, outbox, cases, activity links, tracking."""
    await STORE.create(conn)
    await migrate(conn, Target(OUTCOMES, "outcomes"))
    await create_tracking(conn, "outcomes")
