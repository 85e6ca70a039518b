"""Registering partners: directory rows, their view schemas, routing's capacity ledger."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from directory import store as directory
from directory.model import DirectoryFile
from services.routing.store import sync_capacity
from views.schema import create_view, schema_name


async def register(conn: AsyncConnection[Any], parsed: DirectoryFile) -> dict[str, str]:
    """Load the directory; give every partner its (empty) view at once so that the API
    can answer for it before its consumer has started. Returns new tokens."""
    tokens = await directory.load(conn, parsed)
    for org in parsed.organisations:
        await create_view(conn, schema_name(org.id))
    await sync_capacity(conn)
    return tokens
