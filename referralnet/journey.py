"""One referral's timeline across every service's store, and its hash-chain check.

Read from the stores (the system of record), not the bus. The summary line of each
event uses only non-personal fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from eventstore.records import GENESIS_HASH, StoredEvent, hash_of
from eventstore.store import EventStore
from referralnet.lag import STORES


@dataclass(frozen=True)
class Step:
    """One line of the timeline."""

    service: str
    event: StoredEvent

    @property
    def summary(self) -> str:
        return summarise(self.event.type, self.event.data)

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
    """The first place a stream's hash chain does not hold."""

    service: str
    version: int
    problem: str


def verify_stream(store: EventStore, events: list[StoredEvent]) -> ChainBreak | None:
    """Versions must run 1..n without gaps and every hash must recompute and link."""
    prev = GENESIS_HASH
    for expected_version, event in enumerate(events, start=1):
        if event.version != expected_version:
            return ChainBreak(
                store.schema, expected_version, f"version {expected_version} is missing (deleted?)"
            )
        if event.prev_hash != prev:
            return ChainBreak(
                store.schema,
                event.version,
                "does not link to the previous event (reordered or deleted)",
            )
        if hash_of(event) != event.hash:
            return ChainBreak(
                store.schema, event.version, "content does not match its hash (edited)"
            )
        prev = event.hash
    return None


async def verify(conn: AsyncConnection[Any], referral_id: UUID) -> list[ChainBreak]:
    """Check the referral's stream in every store; empty means intact."""
    breaks = []
    for store in STORES:
        found = verify_stream(store, await store.read_stream(conn, referral_id))
        if found:
            breaks.append(found)
    return breaks
