"""One referral's timeline across every service's store, and its hash-chain check.

Read from the stores (the system of record), not the bus. The summary line of each
event uses only non-personal fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from eventstore.anchor import AnchorPaths
from eventstore.records import StoredEvent
from referralnet.lag import STORES
from referralnet.ops.verify import verify_referral


@dataclass(frozen=True)
class Step:
    """One line of the timeline."""

    service: str
    event: StoredEvent

    @property
    def summary(self) -> str:
        # Stored data that is not what its schema says (a DBA's edit) must still print.
        try:
            return summarise(self.event.type, self.event.data)
        except (KeyError, TypeError, ValueError, AttributeError):
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


def summarise(event_type: str, data: dict[str, Any]) -> str:
    """A one-line, personal-data-free description of an event."""
    d = data
    match event_type:
        case "referral-created":
            return (
                f"needs {', '.join(d['needs'])}; {d['urgency']}; area {d['area']}; {d['age_band']}"
            )
        case "referral-routed":
            return f"to {d['service_org']} (attempt {d['attempt']}): {d['reason']}"
        case "referral-accepted":
            return f"by {d['service_org']}"
        case "referral-declined":
            return f"by {d['service_org']}: {d['reason']}"
        case "referral-escalated":
            return str(d["reason"])
        case "first-contact-made":
            return f"{d['mode']}"
        case "first-contact-overdue":
            return f"due by {d['due_by']} ({d['sla_days']}-day SLA)"
        case "session-held":
            minutes = d.get("duration_minutes", d.get("minutes"))
            return f"{d['kind']}, {minutes} min, {d['mode']}"
        case "activity-referred":
            return f"{d['activity_kind']} {d['activity_id']} by {d['provider_org']}"
        case "activity-attended":
            return f"{d['activity_id']}: {'attended' if d['attended'] else 'did not attend'}"
        case "outcome-recorded":
            score = d.get("score")
            return f"{d['measure']} {d['timepoint']}" + (
                f": {score:g}" if score is not None else ""
            )
        case "referral-closed":
            return str(d["reason"])
    return ""


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
