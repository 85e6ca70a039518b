"""What routing does with the journey log: route new referrals, free places on close."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from bus.tracking import Outgoing
from schemas.envelope import CloudEvent
from schemas.events import (
    ActivityAttended,
    ActivityReferred,
    ConsentWithdrawn,
    EventModel,
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
from services.routing.adapters import PostgresUnitOfWork
from services.routing.commands import OpenCase, ReleasePlace
from services.routing.handlers import handle

HANDLES: frozenset[type[EventModel]] = frozenset({ReferralCreated, ReferralClosed})
IGNORES: frozenset[type[EventModel]] = frozenset(
    # routing's own answers (decided from its store) and casework: none moves a place
    # (tests/unit/test_lifecycle_coverage.py)
    {
        ReferralRouted,
        ReferralAccepted,
        ReferralDeclined,
        ReferralEscalated,
        FirstContactMade,
        FirstContactOverdue,
        SessionHeld,
        ActivityReferred,
        ActivityAttended,
        OutcomeRecorded,
        ConsentWithdrawn,
        PersonErased,
    }
)


class RoutingProjection:
    """Consumer ``routing``: its position and dedup live in the ``routing`` schema.

    A thin entry point: the event becomes a command, handled in the consumer's own
    transaction (where its position is written too)."""

    consumer = "routing"
    schema = "routing"
    interested_in: frozenset[str] | None = frozenset(m.event_type for m in HANDLES)
    may_reject = False

    async def apply(
        self, conn: AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]:
        uow = PostgresUnitOfWork(lambda: nullcontext(conn), transaction=False)
        if isinstance(model, ReferralCreated):
            await handle(OpenCase(model, event.id, event.time), uow)
        elif isinstance(model, ReferralClosed):
            await handle(ReleasePlace(UUID(event.subject), event.time), uow)
        return ()
