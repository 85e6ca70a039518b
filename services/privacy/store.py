"""The privacy schemas: ``keys`` (per-person data keys) and ``audit`` (reads)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from infra.migrations.catalog import KEYS
from infra.migrations.runner import Target, migrate
from services.privacy import audit


async def create(conn: AsyncConnection[Any]) -> None:
    """Create both schemas (idempotent; serialised with the other services' DDL)."""
    await migrate(conn, Target(KEYS, "keys"))
    await audit.create(conn)
