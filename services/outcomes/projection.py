"""Outcomes learns from the journey log which service holds which referral.

The same rules as ``domain.hear`` (which ``referralnet projections`` folds the stores
with), written as one set-based statement per event so the consumer stays one round
trip an event; ``projections verify`` checks the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from bus.tracking import Outgoing
from schemas.envelope import CloudEvent
from schemas.events import (
    ActivityAttended,
    ActivityReferred,
    ConsentWithdrawn,
    FirstContactMade,
    FirstContactOverdue,
    OutcomeRecorded,
    PersonErased,
    ReferralAccepted,
    ReferralClosed,
    ReferralCreated,
    ReferralDeclined,
    ReferralEscalated,
    ReferralRouted,
    SessionHeld,
)
from schemas.events.base import EventModel

UPDATES: dict[type[EventModel], str] = {
    ReferralRouted: "UPDATE outcomes.cases SET service_org = %(service_org)s, "
    "status = 'routed', routed_at = %(at)s, routed_seen_at = now(), accepted_at = NULL "
    "WHERE referral_id = %(id)s",
    ReferralAccepted: "UPDATE outcomes.cases SET status = 'accepted', accepted_at = %(at)s "
    "WHERE referral_id = %(id)s AND service_org = %(service_org)s",
    ReferralDeclined: "UPDATE outcomes.cases SET status = 'declined' "
    "WHERE referral_id = %(id)s AND service_org = %(service_org)s AND status = 'routed'",
    ReferralEscalated: "UPDATE outcomes.cases SET status = 'escalated', service_org = NULL "
    "WHERE referral_id = %(id)s",
}
"""Routing's answers, by event class."""

HANDLES: frozenset[type[EventModel]] = frozenset({ReferralCreated, *UPDATES})
IGNORES: frozenset[type[EventModel]] = frozenset(
    # outcomes' own events (it decides on them from its store, not the bus), and what
    # does not change who holds a referral (tests/unit/test_lifecycle_coverage.py)
    {
        FirstContactMade,
        FirstContactOverdue,
        SessionHeld,
        ActivityReferred,
        ActivityAttended,
        OutcomeRecorded,
        ReferralClosed,
        ConsentWithdrawn,
        PersonErased,
    }
)


class CaseProjection:
    """Consumer ``outcomes``: keeps ``outcomes.cases`` in step with routing."""

    consumer = "outcomes"
    schema = "outcomes"
    interested_in: frozenset[str] | None = frozenset(m.event_type for m in HANDLES)
    may_reject = False

    async def apply(
        self, conn: AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]:
        if isinstance(model, ReferralCreated):
            await conn.execute(
                "INSERT INTO outcomes.cases (referral_id, referrer_org, referred_at, status) "
                "VALUES (%s, %s, %s, 'new') ON CONFLICT DO NOTHING",
                (UUID(event.subject), model.referrer_org, model.referred_at),
            )
        elif type(model) in UPDATES:
            await conn.execute(
                UPDATES[type(model)],
                {
                    "id": UUID(event.subject),
                    "service_org": getattr(model, "service_org", None),
                    "at": event.time,
                },
            )
        return ()
