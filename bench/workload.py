"""The benchmarks' workload: a bench alliance and whole referral journeys as events.

Journeys are built as plain dicts in the shape the schemas publish (a sample of every
type is decoded through ``schemas.registry`` so a drift fails loudly), because building
a million pydantic models would measure pydantic, not the store.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from psycopg import AsyncConnection, sql

from eventstore.records import NewEvent
from schemas.registry import decode, latest_version

AREA = "benchland"
REFERRERS = ("gp-bench-a", "gp-bench-b", "fire-bench", "housing-bench")
LINK_WORKERS = ("lw-bench-1", "lw-bench-2")
PROVIDER = "vg-bench"
ACTIVITY = "walk-bench"
COMMISSIONER = "icb-bench"
NEEDS = ("social-connection", "stress", "physical-activity", "mental-wellbeing")

ALLIANCE_YAML = f"""
alliance: Bench alliance
organisations:
  - {{id: gp-bench-a, name: Bench GP A, kind: gp-practice, areas: [{AREA}]}}
  - {{id: gp-bench-b, name: Bench GP B, kind: gp-practice, areas: [{AREA}]}}
  - {{id: fire-bench, name: Bench fire service, kind: fire-service, areas: [{AREA}]}}
  - {{id: housing-bench, name: Bench housing, kind: housing-association, areas: [{AREA}]}}
  - id: lw-bench-1
    name: Bench link workers 1
    kind: link-worker-service
    areas: [{AREA}]
    link_worker_service:
      needs: [{", ".join(NEEDS)}]
      link_workers: 500
      caseload_per_worker: 200
  - id: lw-bench-2
    name: Bench link workers 2
    kind: link-worker-service
    areas: [{AREA}]
    link_worker_service:
      needs: [{", ".join(NEEDS)}]
      link_workers: 500
      caseload_per_worker: 200
  - {{id: vg-bench, name: Bench walkers, kind: voluntary-group, areas: [{AREA}]}}
  - {{id: icb-bench, name: Bench ICB, kind: commissioner, areas: [{AREA}]}}
activities:
  - {{id: {ACTIVITY}, name: Bench walk, provider: {PROVIDER}, kind: walking-group,
     needs: [physical-activity, social-connection], area: {AREA}}}
"""
ORGS = (*REFERRERS, *LINK_WORKERS, PROVIDER, COMMISSIONER)

EVENTS_PER_JOURNEY = 12
"""created | routed, accepted | contact, 2 outcomes, 3 sessions, activity, attendance, closed."""

STORE_OF = {"intake": 0, "routing": 1, "outcomes": 2}


@dataclass(frozen=True)
class Journey:
    """One referral's events, per producing store (intake, routing, outcomes)."""

    referral_id: UUID
    referrer: str
    service: str
    intake: list[NewEvent]
    routing: list[NewEvent]
    outcomes: list[NewEvent]

    @property
    def count(self) -> int:
        return len(self.intake) + len(self.routing) + len(self.outcomes)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _event(kind: str, data: dict[str, Any], actor: str, at: datetime, rid: UUID) -> NewEvent:
    return NewEvent(
        type=kind,
        schema_version=_VERSIONS[kind],
        data=data,
        actor=actor,
        occurred_at=at,
        correlation_id=rid,
    )


_TYPES = (
    "referral-created",
    "referral-routed",
    "referral-accepted",
    "first-contact-made",
    "outcome-recorded",
    "session-held",
    "activity-referred",
    "activity-attended",
    "referral-closed",
)
_VERSIONS = {t: latest_version(t) for t in _TYPES}
START = datetime(2025, 1, 6, 9, tzinfo=UTC)


def journey(index: int, rng: random.Random) -> Journey:
    """Referral ``index``'s whole journey, 12 events, world times spread over a year."""
    rid = uuid4()
    sid = str(rid)
    referrer = REFERRERS[index % len(REFERRERS)]
    service = LINK_WORKERS[index % len(LINK_WORKERS)]
    t = START + timedelta(minutes=index % 500_000)
    needs = rng.sample(NEEDS, k=1 + index % 2)
    created = _event(
        "referral-created",
        {
            "referral_id": sid,
            "person_ref": f"p_{uuid4().hex[:20]}",
            "referrer_org": referrer,
            "referrer_kind": "gp-practice" if referrer.startswith("gp") else "fire-service",
            "needs": needs,
            "urgency": "routine",
            "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": True},
            "area": AREA,
            "age_band": "35-49",
            "referred_at": _iso(t),
        },
        referrer,
        t,
        rid,
    )
    routed = _event(
        "referral-routed",
        {"referral_id": sid, "service_org": service, "attempt": 1, "reason": "area+needs+capacity"},
        "routing",
        t,
        rid,
    )
    t1 = t + timedelta(days=1)
    accepted = _event(
        "referral-accepted",
        {"referral_id": sid, "service_org": service, "accepted_at": _iso(t1)},
        service,
        t1,
        rid,
    )
    t2 = t + timedelta(days=3)
    casework = [
        _event(
            "first-contact-made",
            {"referral_id": sid, "service_org": service, "contacted_at": _iso(t2), "mode": "phone"},
            service,
            t2,
            rid,
        ),
        _outcome(sid, rid, service, "baseline", [rng.randint(1, 3) for _ in range(3)], t2),
    ]
    for n in range(3):
        at = t2 + timedelta(days=7 * (n + 1))
        casework.append(
            _event(
                "session-held",
                {
                    "referral_id": sid,
                    "session_id": str(uuid4()),
                    "kind": "longer-appointment" if n % 2 == 0 else "short-conversation",
                    "duration_minutes": 15 + rng.randint(0, 45),
                    "mode": "in-person",
                    "held_at": _iso(at),
                    "group_size": None,
                },
                service,
                at,
                rid,
            )
        )
    t3 = t2 + timedelta(days=30)
    casework += [
        _event(
            "activity-referred",
            {
                "referral_id": sid,
                "activity_id": ACTIVITY,
                "provider_org": PROVIDER,
                "activity_kind": "walking-group",
                "referred_at": _iso(t3),
            },
            service,
            t3,
            rid,
        ),
        _event(
            "activity-attended",
            {
                "referral_id": sid,
                "activity_id": ACTIVITY,
                "provider_org": PROVIDER,
                "attended_at": _iso(t3 + timedelta(days=7)),
                "attended": rng.random() < 0.85,
            },
            PROVIDER,
            t3 + timedelta(days=7),
            rid,
        ),
        _outcome(sid, rid, service, "follow-up", [1, 1, 2], t3 + timedelta(days=30)),
        _event(
            "referral-closed",
            {"referral_id": sid, "reason": "completed", "closed_at": _iso(t3 + timedelta(days=31))},
            service,
            t3 + timedelta(days=31),
            rid,
        ),
    ]
    return Journey(rid, referrer, service, [created], [routed, accepted], casework)


def _outcome(
    sid: str, rid: UUID, service: str, timepoint: str, items: list[int], at: datetime
) -> NewEvent:
    return _event(
        "outcome-recorded",
        {
            "referral_id": sid,
            "measure": "ucla3",
            "timepoint": timepoint,
            "items": items,
            "score": float(sum(items)),
            "recorded_at": _iso(at),
        },
        service,
        at,
        rid,
    )


def check_against_schemas() -> None:
    """Decode one journey's every event through the registry (raises on any drift)."""
    for event in _all(journey(0, random.Random(0))):
        decode(event.type, event.schema_version, event.data)


def _all(j: Journey) -> list[NewEvent]:
    return [*j.intake, *j.routing, *j.outcomes]


async def seed_stores(
    database_url: str,
    events: int,
    *,
    chunk_events: int = 24_000,
    at_rest: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Store whole journeys (about ``events`` events) in intake, routing and outcomes.

    Each chunk is appended store by store in journey order (intake, routing, outcomes),
    so ordering by ``recorded_at`` puts every referral's events in causal order, as the
    live services would have. ``at_rest`` empties the outboxes afterwards: the events
    are history the running services must not be re-sent. Returns the events stored.
    """
    from bench.bulk import StreamAppend, append_many
    from services.intake.store import STORE as INTAKE
    from services.outcomes.store import STORE as OUTCOMES
    from services.routing.store import STORE as ROUTING

    rng = random.Random(42)
    journeys = max(1, events // EVENTS_PER_JOURNEY)
    per_chunk = max(1, chunk_events // EVENTS_PER_JOURNEY)
    stored = 0
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        for first in range(0, journeys, per_chunk):
            chunk = [journey(i, rng) for i in range(first, min(journeys, first + per_chunk))]
            for store, part in ((INTAKE, "intake"), (ROUTING, "routing"), (OUTCOMES, "outcomes")):
                appends = [StreamAppend(j.referral_id, 0, getattr(j, part)) for j in chunk]
                stored += len(await append_many(conn, store, appends, notify=not at_rest))
            if on_progress is not None:
                on_progress(stored)
        if at_rest:
            for store in (INTAKE, ROUTING, OUTCOMES):
                await conn.execute(
                    sql.SQL("DELETE FROM {}.outbox").format(sql.Identifier(store.schema))
                )
    return stored
