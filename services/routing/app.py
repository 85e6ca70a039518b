"""The routing worker: a faust-streaming app that routes every new referral."""

from __future__ import annotations

import asyncio

import faust
from psycopg import AsyncConnection

from bus.faust_agent import make_app, run_worker, sync_group_offsets, tracked_agent
from bus.topics import Topics
from bus.tracking import stored_positions
from services.routing.projection import RoutingProjection
from services.routing.store import create, sync_capacity

APP_ID = "referralnet-routing"


def build(bootstrap_servers: str, database_url: str, topics: Topics) -> faust.App:
    """The faust app with its one agent over ``referral-events``."""
    app = make_app(topics.group(APP_ID), bootstrap_servers, topics.partitions)
    tracked_agent(
        app,
        bootstrap_servers,
        topics.referral_events,
        RoutingProjection(),
        database_url,
        topics.dead_letters,
        topics.partitions_of,
    )
    return app


async def prepare(database_url: str) -> dict[tuple[str, int], int]:
    """Create routing's schema, sync capacity from the directory, read stored positions."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await create(conn)
        await sync_capacity(conn)
        return await stored_positions(conn, "routing", RoutingProjection.consumer)


def main(bootstrap_servers: str, database_url: str, topics: Topics) -> None:
    """Run the routing worker until stopped."""
    positions = asyncio.run(prepare(database_url))
    sync_group_offsets(bootstrap_servers, topics.group(APP_ID), positions)
    run_worker(build(bootstrap_servers, database_url, topics))
