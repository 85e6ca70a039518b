"""Outcomes' use cases on the in-memory unit of work: service speed, no I/O.

What ``handle`` adds to ``decide``: 404 versus 409 not-yet, waiting for routing's answer
without holding a unit, appending after the version decided on (and deciding again when
another writer got there first), the SLA timer's once-only flag.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest

from directory.model import Activity
from eventstore.recorder import VersionConflict
from eventstore.records import NewEvent, StoredEvent
from schemas.events.base import ContactMode, Need
from services.outcomes import commands as c
from services.outcomes.domain import Case, Decision, Rules
from services.outcomes.handlers import Settings, handle
from services.outcomes.unit_of_work import Casework, MemoryCasework, MemoryUnitOfWork
from services.refusal import Conflict, Forbidden, NotFound, NotYet

pytestmark = pytest.mark.service

SETTINGS = Settings(Rules(7, ZoneInfo("Europe/London")), wait_for_routing=2.0)
REFERRED = datetime(2026, 5, 1, 9, tzinfo=UTC)
AT = REFERRED + timedelta(days=1)


def holding(rid: UUID, status: str = "accepted", org: str | None = "lw") -> Case:
    """The case as routing's answers left it in outcomes."""
    return Case(rid, "gp", REFERRED, org, status, REFERRED, REFERRED, routed_seen_at=REFERRED)


def world(status: str = "accepted", org: str | None = "lw") -> tuple[MemoryUnitOfWork, UUID]:
    uow, rid = MemoryUnitOfWork(), uuid4()
    uow.world.intake.add(rid)
    uow.world.holdings[rid] = holding(rid, status, org)
    if org:
        uow.world.routing[rid] = (org, status)
    return uow, rid


def contact(rid: UUID, org: str = "lw") -> c.RecordFirstContact:
    return c.RecordFirstContact(rid, org, AT, "phone")


async def test_the_holder_records_and_the_stream_grows_by_version() -> None:
    uow, rid = world()
    first = await handle(contact(rid), uow, SETTINGS)
    session = c.RecordSession(rid, "lw", "group", 60, "in-person", AT)
    second = await handle(session, uow, SETTINGS)
    assert [(e.type, e.version) for e in [*first, *second]] == [
        ("first-contact-made", 1),
        ("session-held", 2),
    ]
    with pytest.raises(Conflict, match="first contact is already recorded"):
        await handle(contact(rid), uow, SETTINGS)
    assert len(await uow.world.recorder.read(rid)) == 2  # a refusal stores nothing


async def test_unknown_is_404_and_made_but_unheard_is_409_not_yet_at_once() -> None:
    uow = MemoryUnitOfWork()
    with pytest.raises(NotFound):
        await handle(contact(uuid4()), uow, SETTINGS)
    made = uuid4()
    uow.world.intake.add(made)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NotYet):
        await handle(contact(made), uow, SETTINGS)
    assert loop.time() - started < 0.5  # nothing is on its way: no wait


@pytest.mark.parametrize(
    ("routing", "refusal"),
    [(None, NotYet), (("lw", "routed"), NotYet), (("other", "routed"), Forbidden)],
)
async def test_outcomes_behind_routing_is_409_not_yet_unless_it_is_someone_elses(
    routing: tuple[str, str] | None, refusal: type[Exception]
) -> None:
    """Outcomes has heard of the referral (status "new") but not yet where routing sent
    it: the caller it may concern hears "not yet", anyone else 403, both at once."""
    uow, rid = world("new", None)
    if routing:
        uow.world.routing[rid] = routing
    with pytest.raises(refusal):
        await handle(contact(rid), uow, SETTINGS)
    # the ready check, one look (and for a refusal on the case, deciding): no waiting
    assert uow.units == (2 if refusal is NotYet else 3)


@pytest.mark.parametrize(
    ("status", "holder", "refusal"),
    [("routed", "lw", Conflict), ("accepted", "other", Forbidden), ("escalated", None, Forbidden)],
)
async def test_not_accepted_by_the_caller_is_refused_at_once(
    status: str, holder: str | None, refusal: type[Exception]
) -> None:
    uow, rid = world(status, holder)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(refusal):
        await handle(contact(rid), uow, SETTINGS)
    assert loop.time() - started < 0.5
    assert await uow.world.recorder.read(rid) == []


class AnswerArrives(MemoryUnitOfWork):
    """Routing's acceptance reaches outcomes while the handler polls (at its 4th unit)."""

    def begin(self, *, write: bool = True) -> AbstractAsyncContextManager[Casework]:
        if self.units == 3:
            for rid, held in self.world.holdings.items():
                self.world.holdings[rid] = replace(held, status="accepted", accepted_at=AT)
        return super().begin(write=write)


async def test_an_acceptance_on_its_way_is_waited_for_one_unit_at_a_time() -> None:
    uow, rid = AnswerArrives(), uuid4()
    uow.world.holdings[rid] = holding(rid, "routed")
    uow.world.routing[rid] = ("lw", "accepted")  # routing has it; outcomes not yet
    stored = await handle(contact(rid), uow, SETTINGS)
    assert [e.type for e in stored] == ["first-contact-made"]
    assert uow.units == 5  # ready? no; look; poll; poll (arrived); record


async def test_a_wait_that_routing_never_answers_ends_with_the_state() -> None:
    uow, rid = world("routed", "lw")
    uow.world.routing[rid] = ("lw", "accepted")
    settings = replace(SETTINGS, wait_for_routing=0.05)
    with pytest.raises(Conflict, match="not been accepted yet"):
        await handle(contact(rid), uow, settings)


async def test_a_wait_that_outlasts_the_routing_answer_is_not_yet_not_forbidden() -> None:
    """Seen in `make chaos` (broker loss under traffic): outcomes re-read the refilled
    log for longer than the wait, and the link worker routing had given the referral to
    was told 403 "not routed to lw" instead of "retry shortly"."""
    uow, rid = world("new", None)
    uow.world.routing[rid] = ("lw", "accepted")
    settings = replace(SETTINGS, wait_for_routing=0.05)
    with pytest.raises(NotYet, match="has not reached outcomes yet"):
        await handle(contact(rid), uow, settings)


class RacingUnitOfWork(MemoryUnitOfWork):
    """Another writer appends ``rival`` between this handler's read and its append."""

    def __init__(self, rival: list[NewEvent]) -> None:
        super().__init__()
        self.rival = rival
        self.conflicts = 0

    @asynccontextmanager
    async def _racing(self) -> AsyncIterator[Casework]:
        self.units += 1
        yield RacingCasework(self)

    def begin(self, *, write: bool = True) -> AbstractAsyncContextManager[Casework]:
        return self._racing()


class RacingCasework(MemoryCasework):
    def __init__(self, uow: RacingUnitOfWork) -> None:
        super().__init__(uow.world)
        self.uow = uow

    async def record(self, case: Case, decision: Decision) -> list[StoredEvent]:
        if self.uow.rival:
            await self.world.recorder.append(case.referral_id, case.version, self.uow.rival)
            self.uow.rival = []
            try:
                return await super().record(case, decision)
            except VersionConflict:
                self.uow.conflicts += 1
                raise
        return await super().record(case, decision)


def _rival_contact(rid: UUID) -> list[NewEvent]:
    from eventstore.records import new_event
    from schemas.events.contact import FirstContactMade

    model = FirstContactMade(
        referral_id=rid, service_org="lw", contacted_at=AT, mode=ContactMode.PHONE
    )
    return [new_event(model, actor="lw", occurred_at=AT, correlation_id=rid)]


async def test_a_conflict_is_decided_again_on_the_new_state() -> None:
    # a session does not care what the rival recorded: it is appended after it
    rid = uuid4()
    uow = RacingUnitOfWork(_rival_contact(rid))
    uow.world.holdings[rid] = holding(rid)
    stored = await handle(c.RecordSession(rid, "lw", "group", 30, "phone", AT), uow, SETTINGS)
    assert uow.conflicts == 1 and [e.version for e in stored] == [2]
    # a first contact does: the retry decides on the new state and refuses
    rid = uuid4()
    uow = RacingUnitOfWork(_rival_contact(rid))
    uow.world.holdings[rid] = holding(rid)
    with pytest.raises(Conflict, match="first contact is already recorded"):
        await handle(contact(rid), uow, SETTINGS)
    assert uow.conflicts == 1
    assert [e.type for e in await uow.world.recorder.read(rid)] == ["first-contact-made"]


async def test_attendance_follows_the_referral_to_the_activity_and_stops_at_closing() -> None:
    uow, rid = world()
    walk = Activity(
        id="walk", name="Walk", provider="vg", kind="walking", needs=[Need.PHYSICAL_ACTIVITY],
        area="north",
    )  # fmt: skip
    came = c.RecordAttendance(rid, "vg", "walk", AT + timedelta(hours=2), True)
    with pytest.raises(NotFound):
        await handle(came, uow, SETTINGS)
    await handle(c.ReferToActivity(rid, "lw", "walk", walk, AT), uow, SETTINGS)
    assert [e.type for e in await handle(came, uow, SETTINGS)] == ["activity-attended"]
    with pytest.raises(Forbidden):
        await handle(replace(came, org="lw"), uow, SETTINGS)
    await handle(c.CloseReferral(rid, "lw", "completed", AT + timedelta(hours=3)), uow, SETTINGS)
    with pytest.raises(Conflict, match="closed"):
        await handle(came, uow, SETTINGS)
    with pytest.raises(Conflict, match="closed"):
        await handle(c.RecordSession(rid, "lw", "group", 30, "phone", AT), uow, SETTINGS)


async def test_the_sla_timer_flags_once_through_the_handler() -> None:
    uow, rid = world()
    now = REFERRED + timedelta(days=10)
    flagged = await handle(c.FlagOverdue(rid, now), uow, SETTINGS)
    assert [e.type for e in flagged] == ["first-contact-overdue"]
    assert await handle(c.FlagOverdue(rid, now + timedelta(hours=1)), uow, SETTINGS) == []
    late = c.RecordFirstContact(rid, "lw", now, "phone")  # the breach is not flagged twice
    assert [e.type for e in await handle(late, uow, SETTINGS)] == ["first-contact-made"]
