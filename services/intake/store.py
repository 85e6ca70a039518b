"""Intake's stream of record and its encrypted person tables."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from eventstore.store import EventStore
from infra.migrations.catalog import INTAKE
from infra.migrations.runner import Target, migrate

STORE = EventStore("intake", "/services/intake")


async def create(conn: AsyncConnection[Any]) -> None:
    """Create intake's schema: events, outbox, people, idempotency keys."""
    await STORE.create(conn)
    await migrate(conn, Target(INTAKE, "intake"))
