"""What routing does with the journey log: route new referrals, free places on close."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from bus.tracking import Outgoing
from schemas.envelope import CloudEvent
from services.routing.cases import close_case, open_case


class RoutingProjection:
    """Consumer ``routing``: its position and dedup live in the ``routing`` schema."""

    consumer = "routing"
    schema = "routing"
    interested_in: frozenset[str] | None = frozenset({"referral-created", "referral-closed"})
    may_reject = False

    async def apply(
        self, conn: AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]:
        if event.type == "referral-created":
            await open_case(conn, model, event_id=event.id, at=event.time)
        elif event.type == "referral-closed":
            await close_case(conn, UUID(event.subject), event.time)
        return ()
