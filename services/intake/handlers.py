"""Intake's use case: ``handle(command, uow)`` loads what it decides on, decides, records.

The rules a referral meets on its own are checked first, before any I/O (a bad request
costs no statement; one only the event schema refuses, such as a need twice, is refused
by ``decide`` and its unit rolled back). Then one unit of work: the area looked up, the
key claimed, the person's pseudonym found or made, ``domain.decide``, and on ``Create``
the encrypted details and ``referral-created`` appended with ``expected_version`` 0. The
stream's version is not read: the referral id is fresh (``uuid4``), so it is 0 by
construction, and the append's ``VersionConflict`` would expose the contrary instead of
a retry.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from services.intake import domain
from services.intake.commands import Command
from services.intake.domain import PENDING, Create, Decision, IntakeState
from services.intake.unit_of_work import UnitOfWork
from services.refusal import Refusal


async def handle(command: Command, uow: UnitOfWork, *, zone: ZoneInfo | None = None) -> Decision:
    """Carry out ``command``: ``Create`` (stored now: answer 201) or ``Replay`` (the key's
    earlier referral: answer 200). Raises the ``Refusal`` the domain gave; nothing is
    stored then (the unit rolls back, the key's claim with it)."""
    early = domain.refusal(command, zone=zone)
    if early is not None:
        raise early
    async with uow.begin() as work:
        area_known = await work.area_known(command.area)
        previous, person_ref = None, PENDING
        if area_known and command.idempotency is not None:
            previous = await work.claim(
                command.referrer_id, command.idempotency, command.referral_id
            )
        if area_known and previous is None:  # a replay or a refusal links nobody
            person_ref = await work.person_ref(command.person)
        state = IntakeState(area_known=area_known, previous=previous, person_ref=person_ref)
        decision = domain.decide(state, command, zone=zone)
        if isinstance(decision, Refusal):
            raise decision
        if isinstance(decision, Create):
            await work.record(decision, state.person_ref, command.person)
        return decision
