"""Routing's use cases, each run inside the caller's transaction.

Opening a case routes it; a decline releases the place and routes to the next
candidate; a close (from outcomes, via the bus) releases the place. Capacity rows are
locked in a fixed order before deciding, so concurrent decisions never overbook and
never deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from eventstore.records import NewEvent, new_event
from schemas.registry import latest_version, model_for
from services.existence import known_to_intake
from services.refusal import Conflict, Forbidden, Invalid, NotFound, NotYet
from services.routing.domain import Candidate, Case, choose_service
from services.routing.store import STORE, sync_capacity

CLOCK_SKEW = timedelta(minutes=5)


def _model(event_type: str, **data: Any) -> Any:
    return model_for(event_type, latest_version(event_type)).model_validate(data)


@dataclass(frozen=True)
class CaseRow:
    referral_id: UUID
    area: str
    needs: tuple[str, ...]
    age_band: str
    status: str
    service_org: str | None
    tried: tuple[str, ...]
    holds_place: bool
    referred_at: datetime

    @property
    def case(self) -> Case:
        return Case(self.area, frozenset(self.needs), self.age_band, self.tried)

    def state(self) -> dict[str, Any]:
        return {"status": self.status, "service_org": self.service_org, "tried": list(self.tried)}


async def _lock_case(conn: AsyncConnection[Any], referral_id: UUID) -> CaseRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT referral_id, area, needs, age_band, status, service_org, tried, holds_place, "
            "referred_at FROM routing.cases WHERE referral_id = %s FOR UPDATE",
            (referral_id,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return CaseRow(**{**row, "needs": tuple(row["needs"]), "tried": tuple(row["tried"])})


async def _lock_candidates(conn: AsyncConnection[Any], area: str) -> list[Candidate]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT service_org, areas, needs, min_age, max_age, caseload_limit, caseload "
            "FROM routing.capacity WHERE %s = ANY(areas) ORDER BY service_org FOR UPDATE",
            (area,),
        )
        rows = await cur.fetchall()
    return [
        Candidate(
            service_org=r["service_org"],
            areas=frozenset(r["areas"]),
            needs=frozenset(r["needs"]),
            min_age=r["min_age"],
            max_age=r["max_age"],
            caseload_limit=r["caseload_limit"],
            caseload=r["caseload"],
        )
        for r in rows
    ]


async def _place(conn: AsyncConnection[Any], service_org: str, delta: int) -> None:
    await conn.execute(
        "UPDATE routing.capacity SET caseload = caseload + %s WHERE service_org = %s",
        (delta, service_org),
    )


async def _route(
    conn: AsyncConnection[Any], row: CaseRow, *, at: datetime, actor: str, causation: UUID
) -> NewEvent:
    """Decide where the case goes next and record it on the case row."""
    chosen = choose_service(row.case, await _lock_candidates(conn, row.area))
    if chosen is None:
        await conn.execute(
            "UPDATE routing.cases SET status = 'escalated', service_org = NULL, "
            "holds_place = false, updated_at = %s WHERE referral_id = %s",
            (at, row.referral_id),
        )
        reason = "no eligible link-worker service with capacity is left"
        model = _model(
            "referral-escalated", referral_id=row.referral_id, reason=reason, tried=list(row.tried)
        )
    else:
        await _place(conn, chosen.service_org, +1)
        await conn.execute(
            "UPDATE routing.cases SET status = 'routed', service_org = %s, holds_place = true, "
            "updated_at = %s WHERE referral_id = %s",
            (chosen.service_org, at, row.referral_id),
        )
        model = _model(
            "referral-routed",
            referral_id=row.referral_id,
            service_org=chosen.service_org,
            attempt=len(row.tried) + 1,
            reason=f"area {row.area}; covers {len(row.case.needs & chosen.needs)} need(s); "
            f"{chosen.free - 1} place(s) left",
        )
    return new_event(
        model, actor=actor, occurred_at=at, correlation_id=row.referral_id, causation_id=causation
    )


async def open_case(
    conn: AsyncConnection[Any], created: Any, *, event_id: UUID, at: datetime
) -> None:
    """A new referral: record the case and route it (a redelivery changes nothing)."""
    cur = await conn.execute(
        "INSERT INTO routing.cases (referral_id, area, needs, age_band, urgency, referrer_org, "
        "status, referred_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'new', %s, %s) "
        "ON CONFLICT (referral_id) DO NOTHING RETURNING 1",
        (
            created.referral_id,
            created.area,
            [str(n) for n in created.needs],
            created.age_band,
            str(created.urgency),
            created.referrer_org,
            created.referred_at,
            at,
        ),
    )
    if await cur.fetchone() is None:
        return
    row = await _lock_case(conn, created.referral_id)
    assert row is not None
    candidates = await _lock_candidates(conn, row.area)
    if not candidates:  # a service may have joined since the ledger was last synced
        await sync_capacity(conn)
    routed = await _route(conn, row, at=at, actor="routing", causation=event_id)
    await STORE.extend(conn, row.referral_id, [routed])


async def _own_routed_case(conn: AsyncConnection[Any], referral_id: UUID, org: str) -> CaseRow:
    row = await _lock_case(conn, referral_id)
    if row is None:
        if await known_to_intake(conn, referral_id):  # on its way through the bus
            raise NotYet(f"referral {referral_id} has not been routed yet; retry shortly")
        raise NotFound(f"no referral {referral_id}")
    if row.service_org != org:
        raise Forbidden(f"referral {referral_id} is not routed to {org}")
    if row.status != "routed":
        raise Conflict(f"referral is {row.status}, not awaiting acceptance", state=row.state())
    return row


def _check_time(at: datetime, row: CaseRow, field: str) -> None:
    if at > datetime.now(UTC) + CLOCK_SKEW:
        raise Invalid("must not be in the future", field=field)
    if at < row.referred_at:
        raise Invalid("must not be before the referral was made", field=field)


async def accept(
    conn: AsyncConnection[Any], referral_id: UUID, org: str, accepted_at: datetime
) -> None:
    """The routed link-worker service takes the referral on."""
    row = await _own_routed_case(conn, referral_id, org)
    _check_time(accepted_at, row, "accepted_at")
    await conn.execute(
        "UPDATE routing.cases SET status = 'accepted', updated_at = %s WHERE referral_id = %s",
        (accepted_at, referral_id),
    )
    model = _model(
        "referral-accepted", referral_id=referral_id, service_org=org, accepted_at=accepted_at
    )
    event = new_event(model, actor=org, occurred_at=accepted_at, correlation_id=referral_id)
    await STORE.extend(conn, referral_id, [event])


async def decline(
    conn: AsyncConnection[Any], referral_id: UUID, org: str, reason: str, declined_at: datetime
) -> str | None:
    """The routed service declines: free its place and route to the next candidate.

    Returns the next service, or None when the referral was escalated.
    """
    row = await _own_routed_case(conn, referral_id, org)
    _check_time(declined_at, row, "declined_at")
    # Lock every candidate row (in name order) before touching our own, so that this and
    # a concurrent routing decision take the locks in the same order.
    await _lock_candidates(conn, row.area)
    await _place(conn, org, -1)
    model = _model(
        "referral-declined",
        referral_id=referral_id,
        service_org=org,
        reason=reason,
        declined_at=declined_at,
    )
    declined = new_event(model, actor=org, occurred_at=declined_at, correlation_id=referral_id)
    after = CaseRow(**{**row.__dict__, "tried": (*row.tried, org), "holds_place": False})
    await conn.execute(
        "UPDATE routing.cases SET tried = %s, holds_place = false WHERE referral_id = %s",
        (list(after.tried), referral_id),
    )
    rerouted = await _route(
        conn, after, at=declined_at, actor="routing", causation=declined.event_id
    )
    await STORE.extend(conn, referral_id, [declined, rerouted])
    return rerouted.data.get("service_org")


async def close_case(conn: AsyncConnection[Any], referral_id: UUID, at: datetime) -> None:
    """The referral was closed: its place at the service is free again."""
    row = await _lock_case(conn, referral_id)
    if row is None:
        return
    if row.holds_place and row.service_org:
        await _place(conn, row.service_org, -1)
    await conn.execute(
        "UPDATE routing.cases SET status = 'closed', holds_place = false, updated_at = %s "
        "WHERE referral_id = %s",
        (at, referral_id),
    )
