"""The distributor worker: a faust-streaming app feeding every partner's topic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
from psycopg import AsyncConnection

from bus.admin import ensure_topics
from bus.faust_agent import make_app, run_worker, sync_group_offsets, tracked_agent
from bus.topics import Topics
from bus.tracking import stored_positions
from services.distributor.projection import DistributorProjection
from services.distributor.store import create, pseudonym_secret

APP_ID = "referralnet-distributor"


def build(bootstrap_servers: str, database_url: str, topics: Topics, secret: bytes) -> faust.App:
    app = make_app(topics.group(APP_ID), bootstrap_servers, topics.partitions)
    tracked_agent(
        app,
        bootstrap_servers,
        topics.referral_events,
        DistributorProjection(topics, secret),
        database_url,
        topics.dead_letters,
        topics.partitions_of,
    )
    return app


async def prepare(database_url: str) -> tuple[dict[tuple[str, int], int], list[str]]:
    """Create the schema; return stored positions and every partner's id."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await create(conn)
        cur = await conn.execute("SELECT id FROM directory.organisations")
        orgs = [r[0] for r in await cur.fetchall()]
        return await stored_positions(conn, "distributor", DistributorProjection.consumer), orgs


def main(bootstrap_servers: str, database_url: str, topics: Topics, home: Path) -> None:
    """Run the distributor until stopped."""
    positions, orgs = asyncio.run(prepare(database_url))
    ensure_topics(bootstrap_servers, topics.layout(topics.org(o) for o in orgs))
    sync_group_offsets(bootstrap_servers, topics.group(APP_ID), positions)
    run_worker(build(bootstrap_servers, database_url, topics, pseudonym_secret(home)))
