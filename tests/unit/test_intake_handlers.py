"""Intake's rules through ``handle`` on the in-memory unit of work: a referral stored with
its person, refusals that store nothing (not even the key's claim), ``Idempotency-Key``
replays, one pseudonym per NHS number.

Service speed (no I/O); the same handler runs on PostgreSQL in ``tests/e2e``
(``test_walking_skeleton``, ``test_idempotency``, ``test_bad_input``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from directory.model import OrgKind
from eventstore.recorder import VersionConflict
from services.intake.commands import CreateReferral, from_request
from services.intake.domain import Create, Replay
from services.intake.handlers import handle
from services.intake.requests import ReferralRequest
from services.intake.unit_of_work import MemoryIntake, MemoryUnitOfWork
from services.refusal import Forbidden, Invalid
from tests.conftest import referral_body

pytestmark = pytest.mark.service

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def alliance(*areas: str) -> MemoryUnitOfWork:
    return MemoryUnitOfWork(MemoryIntake(areas=set(areas or ("north",))))


def command(
    key: str | None = None, org: str = "gp-1", kind: OrgKind = OrgKind.GP_PRACTICE, **body: Any
) -> CreateReferral:
    return from_request(
        ReferralRequest.model_validate(referral_body(**body)),
        referral_id=uuid4(),
        referrer_id=org,
        referrer_kind=kind,
        received_at=NOW,
        idempotency_key=key,
    )


async def stream_types(uow: MemoryUnitOfWork, rid: UUID) -> list[str]:
    return [e.type for e in await uow.world.recorder.read(rid)]


def stored_nothing(uow: MemoryUnitOfWork) -> bool:
    world = uow.world
    return not (world.recorder.streams or world.claims or world.people or world.details)


async def test_a_referral_is_stored_with_its_person_and_one_event_under_a_pseudonym() -> None:
    uow = alliance()
    cmd = command()
    decision = await handle(cmd, uow)
    assert isinstance(decision, Create) and decision.referral_id == cmd.referral_id
    [event] = await uow.world.recorder.read(cmd.referral_id)
    assert (event.type, event.version, event.actor) == ("referral-created", 1, "gp-1")
    person_ref, person = uow.world.details[cmd.referral_id]
    assert event.data["person_ref"] == person_ref != "p_pending"
    assert person.name == "Alex Example"
    assert "Alex" not in str(event.data) and "9434765919" not in str(event.data)


async def test_the_same_nhs_number_links_two_referrals_to_one_person() -> None:
    uow = alliance()
    first, second = command(), command(needs=["stress"])
    await handle(first, uow)
    await handle(second, uow)
    assert uow.world.details[first.referral_id][0] == uow.world.details[second.referral_id][0]
    stranger = command(person={**referral_body()["person"], "nhs_number": None})
    await handle(stranger, uow)
    assert uow.world.details[stranger.referral_id][0] != uow.world.details[first.referral_id][0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"consent": {"share_with_link_worker": False}}, "consent.share_with_link_worker"),
        ({"referred_at": "2026-03-01T13:00:00Z"}, "referred_at"),
        ({"person": {"name": "Young", "date_of_birth": "2010-03-02"}}, "person.date_of_birth"),
        ({"needs": ["stress", "stress"]}, "needs"),
        ({"area": "atlantis"}, "area"),
    ],
)
async def test_a_refused_referral_stores_nothing_not_even_its_key(
    body: dict[str, Any], field: str
) -> None:
    uow = alliance()
    with pytest.raises(Invalid) as refused:
        await handle(command(key="k-1", **body), uow)
    assert refused.value.field == field and refused.value.status == 422
    assert stored_nothing(uow)


async def test_a_commissioner_may_not_refer() -> None:
    uow = alliance()
    with pytest.raises(Forbidden):
        await handle(command(kind=OrgKind.COMMISSIONER), uow)
    assert stored_nothing(uow)


async def test_an_area_added_to_the_directory_is_accepted_at_once() -> None:
    uow = alliance()
    with pytest.raises(Invalid):
        await handle(command(area="east"), uow)
    uow.world.areas.add("east")
    assert isinstance(await handle(command(area="east"), uow), Create)


async def test_a_retried_key_with_the_same_body_replays_the_first_referral() -> None:
    uow = alliance()
    first = await handle(command(key="k-1"), uow)
    again = await handle(command(key="k-1"), uow)
    assert again == Replay(first.referral_id)
    assert list(uow.world.recorder.streams) == [first.referral_id]
    assert list(uow.world.details) == [first.referral_id]


async def test_a_key_reused_with_a_different_body_is_refused_and_stores_nothing_new() -> None:
    uow = alliance()
    first = await handle(command(key="k-1"), uow)
    with pytest.raises(Invalid) as refused:
        await handle(command(key="k-1", urgency="urgent"), uow)
    assert refused.value.field == "Idempotency-Key"
    assert list(uow.world.recorder.streams) == [first.referral_id]
    assert await stream_types(uow, first.referral_id) == ["referral-created"]


async def test_keys_are_per_organisation_and_absent_keys_never_replay() -> None:
    uow = alliance()
    mine = await handle(command(key="k-1", org="gp-1"), uow)
    theirs = await handle(command(key="k-1", org="gp-2"), uow)
    assert isinstance(theirs, Create) and theirs.referral_id != mine.referral_id
    twice = [await handle(command(), uow) for _ in range(2)]
    assert all(isinstance(d, Create) for d in twice)
    assert len(uow.world.recorder.streams) == 4


async def test_a_failed_append_rolls_the_key_and_the_new_person_back() -> None:
    uow = alliance()
    first = await handle(command(), uow)
    other = {"name": "B", "date_of_birth": "1980-01-01", "nhs_number": "401 023 2137"}
    # a command whose (supposedly fresh) id names a stream that exists: the append fails
    clash = replace(command(key="k-2", person=other), referral_id=first.referral_id)
    with pytest.raises(VersionConflict):
        await handle(clash, uow)
    assert uow.world.claims == {}
    assert list(uow.world.people.values()) == [uow.world.details[first.referral_id][0]]
