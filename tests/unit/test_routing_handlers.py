"""Routing's journey rules through ``handle`` on the in-memory unit of work: routing a new
referral, accepting, declining and re-routing, escalating, freeing a place on closing.

Service speed (no I/O); the same handlers run on PostgreSQL in ``tests/e2e``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from schemas.events.base import Need
from schemas.events.referral import AgeBand, Consent, ReferralCreated, Urgency
from services.refusal import Conflict, Forbidden, Invalid, NotFound, NotYet
from services.routing.commands import AcceptReferral, DeclineReferral, OpenCase, ReleasePlace
from services.routing.domain import Candidate
from services.routing.handlers import handle
from services.routing.unit_of_work import MemoryUnitOfWork

pytestmark = pytest.mark.service

AT = datetime(2026, 3, 2, 10, tzinfo=UTC)


def service(org: str, limit: int = 2, needs: tuple[str, ...] = ("social-connection",)) -> Candidate:
    return Candidate(org, frozenset({"north"}), frozenset(needs), 16, None, limit, 0)


def network(*services: Candidate) -> MemoryUnitOfWork:
    uow = MemoryUnitOfWork()
    uow.world.directory = {s.service_org: s for s in services}
    return uow


def created(rid: UUID | None = None) -> ReferralCreated:
    return ReferralCreated(
        referral_id=rid or uuid4(),
        person_ref="p_0001",
        referrer_org="gp-north",
        referrer_kind="gp-practice",
        needs=[Need.SOCIAL_CONNECTION],
        urgency=Urgency.ROUTINE,
        consent=Consent(share_with_link_worker=True, share_outcomes_with_referrer=True),
        area="north",
        age_band=AgeBand("35-49"),
        referred_at=AT,
    )


async def refer(uow: MemoryUnitOfWork) -> UUID:
    made = created()
    uow.world.intake.add(made.referral_id)
    await handle(OpenCase(made, uuid4(), AT), uow)
    return made.referral_id


def caseloads(uow: MemoryUnitOfWork) -> dict[str, int]:
    return {org: c.caseload for org, c in sorted(uow.world.capacity.items())}


async def types(uow: MemoryUnitOfWork, rid: UUID) -> list[str]:
    return [e.type for e in await uow.world.recorder.read(rid)]


async def test_a_new_referral_is_routed_once_and_takes_a_place() -> None:
    uow = network(service("lw-a"), service("lw-b", limit=4))
    made = created()
    first = await handle(OpenCase(made, uuid4(), AT), uow)
    assert first is not None and first.status == "routed"
    assert first.service_org == "lw-a"  # equally free: by name
    assert await handle(OpenCase(made, uuid4(), AT), uow) is None  # a redelivery
    assert await types(uow, made.referral_id) == ["referral-routed"]
    assert caseloads(uow) == {"lw-a": 1, "lw-b": 0}
    second = await handle(OpenCase(created(), uuid4(), AT), uow)
    assert second is not None and second.service_org == "lw-b"  # the most room, relatively
    assert caseloads(uow) == {"lw-a": 1, "lw-b": 1}


async def test_only_the_routed_service_answers_and_only_once() -> None:
    uow = network(service("lw-a"))
    rid = await refer(uow)
    with pytest.raises(Forbidden):
        await handle(AcceptReferral(rid, "lw-z", AT), uow)
    with pytest.raises(Invalid) as early:
        await handle(AcceptReferral(rid, "lw-a", AT - timedelta(days=1)), uow)
    assert early.value.field == "accepted_at"
    accepted = await handle(AcceptReferral(rid, "lw-a", AT + timedelta(hours=1)), uow)
    assert accepted is not None and accepted.status == "accepted"
    with pytest.raises(Conflict) as again:
        await handle(AcceptReferral(rid, "lw-a", AT + timedelta(hours=2)), uow)
    assert again.value.state == {"status": "accepted", "service_org": "lw-a", "tried": []}
    with pytest.raises(Conflict):
        await handle(DeclineReferral(rid, "lw-a", "no-capacity", AT + timedelta(hours=2)), uow)
    assert await types(uow, rid) == ["referral-routed", "referral-accepted"]


async def test_a_decline_frees_the_place_and_re_routes_until_none_is_left() -> None:
    uow = network(service("lw-a"), service("lw-b"))
    rid = await refer(uow)
    first = uow.world.cases[rid].service_org
    assert first is not None
    after = await handle(DeclineReferral(rid, first, "no-capacity", AT), uow)
    assert after is not None and after.status == "routed" and after.service_org != first
    assert after.tried == (first,)
    second = after.service_org
    assert second is not None
    assert caseloads(uow) == {first: 0, second: 1}
    escalated = await handle(DeclineReferral(rid, second, "not-eligible", AT), uow)
    assert escalated is not None
    assert (escalated.status, escalated.service_org) == ("escalated", None)
    assert caseloads(uow) == {first: 0, second: 0}
    assert await types(uow, rid) == [
        "referral-routed",
        "referral-declined",
        "referral-routed",
        "referral-declined",
        "referral-escalated",
    ]
    with pytest.raises(Forbidden):  # the service that declined has no say any more
        await handle(AcceptReferral(rid, first, AT), uow)


async def test_capacity_is_never_overbooked_and_closing_frees_a_place() -> None:
    uow = network(service("lw-a", limit=1))
    held = await refer(uow)
    spilled = await refer(uow)
    assert uow.world.cases[held].service_org == "lw-a"
    assert uow.world.cases[spilled].status == "escalated"  # the one place was taken
    assert caseloads(uow) == {"lw-a": 1}
    closed = await handle(ReleasePlace(held, AT + timedelta(days=30)), uow)
    assert closed is not None and closed.status == "closed"
    assert caseloads(uow) == {"lw-a": 0}
    assert await handle(ReleasePlace(held, AT + timedelta(days=31)), uow) is not None
    assert caseloads(uow) == {"lw-a": 0}  # freed once
    assert (await handle(OpenCase(created(), uuid4(), AT), uow)) is not None
    assert caseloads(uow) == {"lw-a": 1}


async def test_an_answer_before_routing_heard_is_409_not_yet_and_unknown_is_404() -> None:
    uow = network(service("lw-a"))
    made = uuid4()
    uow.world.intake.add(made)
    with pytest.raises(NotYet):
        await handle(AcceptReferral(made, "lw-a", AT), uow)
    with pytest.raises(NotFound):
        await handle(AcceptReferral(uuid4(), "lw-a", AT), uow)
    assert await handle(ReleasePlace(uuid4(), AT), uow) is None
