"""One referral's timeline across every service's store, and its hash-chain check.

Read from the stores (the system of record), not the bus. The summary line of each
event uses only non-personal fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, assert_never
from uuid import UUID

from psycopg import AsyncConnection

from domain import lifecycle
from domain.lifecycle import LifecycleEvent
from eventstore.anchor import AnchorPaths
from eventstore.records import StoredEvent
from referralnet.lag import STORES
from referralnet.ops.verify import verify_referral
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
from schemas.registry import SchemaError, decode

HANDLES: Final[frozenset[type[EventModel]]] = frozenset(lifecycle.EVENT_CLASSES)
"""Every journey event has its summary line (``summarise``)."""

IGNORES: Final[frozenset[type[EventModel]]] = frozenset()


@dataclass(frozen=True)
class Step:
    """One line of the timeline."""

    service: str
    event: StoredEvent

    @property
    def summary(self) -> str:
        # Stored data that is not what its schema says (a DBA's edit) must still print.
        try:
            model = decode(self.event.type, self.event.schema_version, self.event.data)
            return summarise(lifecycle.as_event(model))
        except (SchemaError, TypeError, ValueError):
            return "(data does not match its schema)"

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.event.occurred_at.isoformat(),
            "type": self.event.type,
            "actor": self.event.actor,
            "service": self.service,
            "stream_version": self.event.version,
            "schema_version": self.event.schema_version,
            "event_id": str(self.event.event_id),
            "summary": self.summary,
        }


def summarise(event: LifecycleEvent) -> str:
    """A one-line, personal-data-free description of an event (upcast: a v1 session's
    minutes read as ``duration_minutes``)."""
    match event:
        case ReferralCreated():
            needs = ", ".join(n.value for n in event.needs)
            return f"needs {needs}; {event.urgency}; area {event.area}; {event.age_band}"
        case ReferralRouted():
            return f"to {event.service_org} (attempt {event.attempt}): {event.reason}"
        case ReferralAccepted():
            return f"by {event.service_org}"
        case ReferralDeclined():
            return f"by {event.service_org}: {event.reason}"
        case ReferralEscalated():
            return event.reason
        case FirstContactMade():
            return f"{event.mode}"
        case FirstContactOverdue():
            return f"due by {event.due_by.isoformat()} ({event.sla_days}-day SLA)"
        case SessionHeld():
            return f"{event.kind}, {event.duration_minutes} min, {event.mode}"
        case ActivityReferred():
            return f"{event.activity_kind} {event.activity_id} by {event.provider_org}"
        case ActivityAttended():
            came = "attended" if event.attended else "did not attend"
            return f"{event.activity_id}: {came}"
        case OutcomeRecorded():
            score = "" if event.score is None else f": {event.score:g}"
            return f"{event.measure} {event.timepoint}{score}"
        case ReferralClosed():
            return f"{event.reason}"
        case ConsentWithdrawn():
            return f"{event.consent}, recorded by {event.recorded_by}"
        case PersonErased():
            return f"{event.reason}, asked by {event.requested_by or 'the alliance operator'}"
        case _:
            assert_never(event)


async def timeline(conn: AsyncConnection[Any], referral_id: UUID) -> list[Step]:
    """Every event of the referral in every store, in world-time order."""
    steps = [
        Step(store.schema, event)
        for store in STORES
        for event in await store.read_stream(conn, referral_id)
    ]
    return sorted(steps, key=lambda s: (s.event.occurred_at, s.event.recorded_at))


@dataclass(frozen=True)
class ChainBreak:
    """A sign of tampering in one store's stream of the referral; ``problem`` starts
    with the kind (see ``eventstore.chain``)."""

    service: str
    version: int
    kind: str
    problem: str


async def verify(
    conn: AsyncConnection[Any], referral_id: UUID, paths: AnchorPaths | None = None
) -> list[ChainBreak]:
    """Check the referral's stream in every store against its chain and, given the
    anchor's ``paths``, against the signed checkpoints; empty means intact.

    A referral deleted from every store is still found when a checkpoint knew it.
    """
    result = await verify_referral(conn, referral_id, paths)
    breaks = (
        [ChainBreak("anchor", 0, "anchor", result.anchor_problem)] if result.anchor_problem else []
    )
    return breaks + [
        ChainBreak(f.store, f.version, f.kind, f"{f.kind}: {f.problem}") for f in result.findings
    ]
