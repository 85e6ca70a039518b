"""Create every schema and topic the system needs, before any process starts work."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from bus.admin import ensure_topics
from bus.membership import create_membership
from bus.topics import Topics
from referralnet.services_table import CREATE_DIRECTORY, SERVICES
from services.routing.store import sync_capacity


async def create_schemas(database_url: str) -> None:
    """The directory, every service's schema (``services_table.SERVICES``) and the worker
    membership table (idempotent)."""
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await CREATE_DIRECTORY(conn)
        for service in SERVICES:
            await service.create(conn)
        await create_membership(conn)
        await sync_capacity(conn)


def create_topics(bootstrap_servers: str, topics: Topics, org_ids: list[str]) -> None:
    """The journey log, dead letters and one topic per partner."""
    names = [topics.referral_events, topics.dead_letters, *(topics.org(o) for o in org_ids)]
    ensure_topics(bootstrap_servers, topics.layout(names))
