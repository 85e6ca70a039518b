"""Appending the person's rights events to intake's stream of a referral.

Intake holds the person and the consent given at referral, so the facts that change
them (``consent-withdrawn``, ``person-erased``) belong to intake's stream of the
referral, after its ``referral-created``; intake's outbox relay publishes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from eventstore.records import new_event
from schemas.events import EventModel
from services.intake.store import STORE as INTAKE

OPERATOR = "alliance-operator"
"""The actor of what ``referralnet`` commands record (not an organisation's token)."""


async def append(
    conn: AsyncConnection[Any], referral_id: UUID, model: EventModel, actor: str, at: datetime
) -> None:
    """Append ``model`` to intake's stream of ``referral_id`` in the caller's transaction.

    Writers of these events queue on an advisory lock per stream, so each appends after
    the head it saw (intake itself writes only version 1, with expected version 0).
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('intake-stream'), hashtext(%s))",
        (str(referral_id),),
    )
    event = new_event(model, actor=actor, occurred_at=at, correlation_id=referral_id)
    await INTAKE.extend(conn, referral_id, [event])


async def created(conn: AsyncConnection[Any], referral_id: UUID) -> dict[str, Any] | None:
    """The ``referral-created`` data of a referral (intake's version 1), None if unknown."""
    cur = await conn.execute(
        "SELECT data FROM intake.events WHERE stream_id = %s AND version = 1", (referral_id,)
    )
    row = await cur.fetchone()
    return None if row is None else dict(row[0])


async def types_in(conn: AsyncConnection[Any], referral_id: UUID) -> list[tuple[str, Any]]:
    """(type, data) of every event of intake's stream of the referral, in order."""
    cur = await conn.execute(
        "SELECT type, data FROM intake.events WHERE stream_id = %s ORDER BY version",
        (referral_id,),
    )
    return [(str(t), d) for t, d in await cur.fetchall()]


async def holders(conn: AsyncConnection[Any], referral_id: UUID) -> tuple[str | None, str | None]:
    """(referrer, link-worker service now holding it) from the stores of record."""
    made = await created(conn, referral_id)
    cur = await conn.execute(
        "SELECT service_org FROM routing.cases WHERE referral_id = %s", (referral_id,)
    )
    row = await cur.fetchone()
    referrer = None if made is None else str(made["referrer_org"])
    return referrer, (str(row[0]) if row and row[0] else None)
