"""Does a referral exist anywhere yet? Tells "not yet" (409 + Retry-After) from "not found".

A command can reach routing or outcomes before that service has heard of the referral
through the bus (a link worker accepting right after the referrer's ``POST /referrals``).
Intake records every referral first, so the services ask intake's store, read-only, by
its primary key: known there but not here is "not yet"; unknown there is "not found".
Routing's case table likewise tells outcomes that an acceptance is on its way; it is
read through routing's adapter (``services.routing.adapters.holder``), not here.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

# the module, not its names: routing's adapter imports this module too
from services.routing import adapters as routing


async def known_to_intake(conn: AsyncConnection[Any], referral_id: UUID) -> bool:
    """True if intake has recorded the referral (its stream has at least one event)."""
    cur = await conn.execute(
        "SELECT 1 FROM intake.events WHERE stream_id = %s LIMIT 1", (referral_id,)
    )
    return await cur.fetchone() is not None


async def routing_holder(conn: AsyncConnection[Any], referral_id: UUID) -> tuple[str, str] | None:
    """(service_org, status) as routing has it now, or None if routing has not routed it."""
    return await routing.holder(conn, referral_id)


async def on_its_way_to(conn: AsyncConnection[Any], referral_id: UUID, org: str) -> bool:
    """True if ``org`` will see the referral in its view but may not yet: it made the
    referral (intake's first event is its own) or routing has routed it there.

    Anyone else keeps getting 404, so a referral's existence is revealed to nobody new.
    """
    cur = await conn.execute(
        "SELECT actor FROM intake.events WHERE stream_id = %s AND version = 1", (referral_id,)
    )
    first = await cur.fetchone()
    if first is not None and first[0] == org:
        return True
    holder = await routing_holder(conn, referral_id)
    return holder is not None and holder[0] == org
