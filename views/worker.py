"""The view worker: one process hosting the view consumers of its share of the partners.

Several instances share the partners out (``bus.membership``): each keeps a heartbeat in
``runtime.members`` and hosts the partners that rendezvous hashing gives it among the
live instances. When an instance dies its heartbeat stops, and within
``LEASE_SECONDS`` plus a refresh the survivors host its partners, each from the
position stored in that partner's view schema; a clean stop hands them over at once.
One instance alone hosts every partner.

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
from bus.membership import Membership, create_membership
from bus.runner import TrackedRunner
from bus.topics import Topics
from bus.tracking import Projection
from eventstore.pool import connection_pool
from views.projection import ViewProjection
from views.schema import VIEW_TABLES, create_view, schema_name

KIND = "views"

TABLES = (*VIEW_TABLES, "positions", "applied", "held", "dead_letter_outbox")
"""What ``create_view`` makes in a view schema (view tables, then ``bus.tracking``'s)."""


async def complete_views(conn: AsyncConnection[Any], schemas: list[str]) -> set[str]:
    """The ``schemas`` that already hold every table of ``TABLES``, in one query.

    Running ``create_view`` (a dozen ``CREATE ... IF NOT EXISTS``) again for each of
    2,000 partners cost ~50 ms apiece at every start of a view worker (measured:
    docs/capacity.md); registration already created them.
    """
    if not schemas:
        return set()
    cur = await conn.execute(
        "SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid "
        "WHERE n.nspname = ANY(%s) AND c.relkind = 'r' AND c.relname = ANY(%s) "
        "GROUP BY n.nspname HAVING count(*) = %s",
        (schemas, list(TABLES), len(TABLES)),
    )
    return {r[0] for r in await cur.fetchall()}


class ViewCatalogue:
    """Which organisations have views, which of them this instance hosts; creates what a
    new partner needs."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        bootstrap_servers: str,
        topics: Topics,
        membership: Membership | None = None,
    ) -> None:
        self._pool = pool
        self._bootstrap = bootstrap_servers
        self._topics = topics
        self._membership = membership
        self._ready: dict[str, Projection] = {}  # org id → projection, schema and topic made

    async def projections(self) -> Mapping[str, Projection]:
        """``{topic: projection}`` for the partners this instance hosts now."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT id FROM directory.organisations ORDER BY id")
            orgs = [r[0] for r in await cur.fetchall()]
            mine = self._membership.mine(orgs) if self._membership else orgs
            new = [o for o in mine if o not in self._ready]
            complete = await complete_views(conn, [schema_name(o) for o in new])
            for org in new:
                if schema_name(org) not in complete:  # registration normally made it
                    await create_view(conn, schema_name(org))
        if new:
            layout = self._topics.layout(self._topics.org(o) for o in new)
            await asyncio.to_thread(ensure_topics, self._bootstrap, layout)
            for org in new:
                self._ready[org] = ViewProjection(org, schema_name(org))
        if self._membership is not None:
            self._membership.owned = len(mine)
        return {self._topics.org(o): self._ready[o] for o in mine}


async def run(
    bootstrap_servers: str,
    database_url: str,
    topics: Topics,
    stop: asyncio.Event,
    refresh_seconds: float = 1.0,
) -> None:
    """Run this instance's share of the partners' view consumers until ``stop`` is set."""
    async with connection_pool(database_url, min_size=1, max_size=4) as pool:
        async with pool.connection() as conn:
            await create_membership(conn)
        membership = Membership(pool, KIND)
        await membership.heartbeat()  # see the others before taking a share
        catalogue = ViewCatalogue(pool, bootstrap_servers, topics, membership)
        runner = TrackedRunner(
            bootstrap_servers=bootstrap_servers,
            pool=pool,
            projections=catalogue.projections,
            partitions_of=topics.partitions_of,
            dead_letter_topic=topics.dead_letters,
            client_id="referralnet-views",
            refresh_seconds=refresh_seconds,
            tracking_created=True,  # create_view made the tracking tables
        )
        await asyncio.gather(runner.run(stop), membership.run(stop, database_url))
