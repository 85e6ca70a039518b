"""The view worker: one process hosting every partner's view consumer.

It re-reads the directory every few seconds; a partner registered since then gets its
topic, its schema and its consumer without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from bus.admin import ensure_topics
from bus.runner import TrackedRunner
from bus.topics import Topics
from bus.tracking import Projection
from eventstore.pool import connection_pool
from views.projection import ViewProjection
from views.schema import create_view, schema_name


class ViewCatalogue:
    """Which organisations have views; creates what a new partner needs."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        bootstrap_servers: str,
        topics: Topics,
    ) -> None:
        self._pool = pool
        self._bootstrap = bootstrap_servers
        self._topics = topics
        self._known: dict[str, Projection] = {}

    async def projections(self) -> Mapping[str, Projection]:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT id FROM directory.organisations ORDER BY id")
            orgs = [r[0] for r in await cur.fetchall()]
            new = [o for o in orgs if self._topics.org(o) not in self._known]
            for org in new:
                await create_view(conn, schema_name(org))
        if new:
            layout = self._topics.layout(self._topics.org(o) for o in new)
            await asyncio.to_thread(ensure_topics, self._bootstrap, layout)
            for org in new:
                self._known[self._topics.org(org)] = ViewProjection(org, schema_name(org))
        return dict(self._known)


async def run(
    bootstrap_servers: str, database_url: str, topics: Topics, stop: asyncio.Event
) -> None:
    """Run every partner's view consumer until ``stop`` is set."""
    async with connection_pool(database_url, min_size=1, max_size=4) as pool:
        catalogue = ViewCatalogue(pool, bootstrap_servers, topics)
        runner = TrackedRunner(
            bootstrap_servers=bootstrap_servers,
            pool=pool,
            projections=catalogue.projections,
            dead_letter_topic=topics.dead_letters,
            client_id="referralnet-views",
        )
        await runner.run(stop)
