"""Outcomes learns from the journey log which service holds which referral."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from bus.tracking import Outgoing
from schemas.envelope import CloudEvent

UPDATES = {
    "referral-routed": "UPDATE outcomes.cases SET service_org = %(service_org)s, "
    "status = 'routed', routed_at = %(at)s, routed_seen_at = now(), accepted_at = NULL "
    "WHERE referral_id = %(id)s",
    "referral-accepted": "UPDATE outcomes.cases SET status = 'accepted', accepted_at = %(at)s "
    "WHERE referral_id = %(id)s AND service_org = %(service_org)s",
    "referral-declined": "UPDATE outcomes.cases SET status = 'declined' "
    "WHERE referral_id = %(id)s AND service_org = %(service_org)s AND status = 'routed'",
    "referral-escalated": "UPDATE outcomes.cases SET status = 'escalated', service_org = NULL "
    "WHERE referral_id = %(id)s",
}


class CaseProjection:
    """Consumer ``outcomes``: keeps ``outcomes.cases`` in step with routing."""

    consumer = "outcomes"
    schema = "outcomes"
    interested_in: frozenset[str] | None = frozenset({"referral-created", *UPDATES})
    may_reject = False

    async def apply(
        self, conn: AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]:
        if event.type == "referral-created":
            await conn.execute(
                "INSERT INTO outcomes.cases (referral_id, referrer_org, referred_at, status) "
                "VALUES (%s, %s, %s, 'new') ON CONFLICT DO NOTHING",
                (UUID(event.subject), model.referrer_org, model.referred_at),
            )
        elif event.type in UPDATES:
            await conn.execute(
                UPDATES[event.type],
                {
                    "id": UUID(event.subject),
                    "service_org": getattr(model, "service_org", None),
                    "at": event.time,
                },
            )
        return ()
