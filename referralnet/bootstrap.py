"""Create every schema and topic the system needs, before any process starts work."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from bus.admin import ensure_topics
from bus.topics import Topics
from directory import store as directory
from services.distributor import store as distributor
from services.intake import store as intake
from services.outcomes import store as outcomes
from services.privacy import store as privacy
from services.routing import store as routing
from services.routing.store import sync_capacity


async def create_schemas(database_url: str) -> None:
    """Directory, the three service stores, the keys and the audit store, the
    distributor's bookkeeping (idempotent)."""
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await directory.create(conn)
        await privacy.create(conn)  # keys and audit: intake's people need the keys
        await intake.create(conn)
        await routing.create(conn)
        await outcomes.create(conn)
        await distributor.create(conn)
        await sync_capacity(conn)


def create_topics(bootstrap_servers: str, topics: Topics, org_ids: list[str]) -> None:
    """The journey log, dead letters and one topic per partner."""
    names = [topics.referral_events, topics.dead_letters, *(topics.org(o) for o in org_ids)]
    ensure_topics(bootstrap_servers, topics.layout(names))
