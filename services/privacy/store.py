"""The privacy schemas: ``keys`` (per-person data keys) and ``audit`` (reads)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from services.privacy import audit, person_keys


async def create(conn: AsyncConnection[Any]) -> None:
    """Create both schemas (idempotent; serialised with the other services' DDL)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('referralnet-ddl'))")
        await conn.execute(person_keys.DDL)
    await audit.create(conn)
