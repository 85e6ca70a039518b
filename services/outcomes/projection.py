"""Outcomes learns from the journey log which service holds which referral.

Routing's answers move the case by ``routing_answers.hear``, the one statement of the
rules (``referralnet projections`` folds the stores with it too): a transaction's
events are folded in memory over the cases they name, read once and written once, so
the consumer costs three statements a batch however many events it holds.
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
from services.outcomes.domain import Case
from services.outcomes.routing_answers import hear, opened

ANSWERS: frozenset[type[EventModel]] = frozenset(
    {ReferralRouted, ReferralAccepted, ReferralDeclined, ReferralEscalated}
)
"""Routing's answers: what ``hear`` has a rule for."""

HANDLES: frozenset[type[EventModel]] = frozenset({ReferralCreated, *ANSWERS})
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
        return await self.apply_all(conn, [(event, model)])

    async def apply_all(
        self, conn: AsyncConnection[Any], events: Sequence[tuple[CloudEvent, Any]]
    ) -> Sequence[Outgoing]:
        """Open the cases the batch creates (``opened``), then fold routing's answers with
        ``hear`` over the cases they name (locked in id order: concurrent writers never
        deadlock) and write what moved. ``routed_seen_at`` is now for a case the batch
        routed (no store records it)."""
        created = {
            c.referral_id: c
            for c in (
                opened(UUID(e.subject), m.referrer_org, m.referred_at)
                for e, m in events
                if isinstance(m, ReferralCreated)
            )
        }
        if created:
            await conn.execute(
                "INSERT INTO outcomes.cases (referral_id, referrer_org, referred_at, status) "
                "SELECT * FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::text[]) "
                "ON CONFLICT DO NOTHING",
                (
                    list(created),
                    [c.referrer_org for c in created.values()],
                    [c.referred_at for c in created.values()],
                    [c.status for c in created.values()],
                ),
            )
        answers = [(UUID(e.subject), e, m) for e, m in events if type(m) in ANSWERS]
        if not answers:
            return ()
        cases = await _locked(conn, sorted({rid for rid, _, _ in answers}))
        moved: dict[UUID, Case] = {}
        seen: set[UUID] = set()
        for rid, event, model in answers:
            if rid in cases:  # else outcomes never heard of its referral-created
                cases[rid] = moved[rid] = hear(model, cases[rid], event.time)
                if isinstance(model, ReferralRouted):
                    seen.add(rid)
        if moved:
            await conn.execute(
                "UPDATE outcomes.cases c SET service_org = t.s, status = t.st, routed_at = t.r, "
                "accepted_at = t.a, routed_seen_at = CASE WHEN t.seen THEN now() "
                "ELSE c.routed_seen_at END FROM unnest(%s::uuid[], %s::text[], %s::text[], "
                "%s::timestamptz[], %s::timestamptz[], %s::boolean[]) AS t(id, s, st, r, a, seen) "
                "WHERE c.referral_id = t.id",
                (
                    list(moved),
                    [c.service_org for c in moved.values()],
                    [c.status for c in moved.values()],
                    [c.routed_at for c in moved.values()],
                    [c.accepted_at for c in moved.values()],
                    [rid in seen for rid in moved],
                ),
            )
        return ()


async def _locked(conn: AsyncConnection[Any], ids: list[UUID]) -> dict[UUID, Case]:
    """The cases of ``ids`` that exist, with what routing's answers read and set, locked
    for this transaction."""
    cur = await conn.execute(
        "SELECT referral_id, referrer_org, referred_at, service_org, status, routed_at, "
        "accepted_at FROM outcomes.cases WHERE referral_id = ANY(%s) "
        "ORDER BY referral_id FOR UPDATE",
        (ids,),
    )
    return {row[0]: Case(*row) for row in await cur.fetchall()}
