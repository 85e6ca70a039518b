"""Outcomes' use cases: ``handle(command, uow)`` loads the case, decides, records.

Each attempt is one unit of work: the case (outcomes' own events folded in) is read,
``domain.decide`` gives the events or the refusal, and the events are appended with the
case's version as ``expected_version``; a ``VersionConflict`` (another writer appended
first) rolls the unit back, and the next attempt re-reads and decides again. The first
attempt is optimistic (no lock: partners mostly work on referrals nobody else touches);
a retry locks the case, so writers queue on one referral instead of colliding again.
Refusals are raised to the entry point, which maps them to HTTP once (``web.errors``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from eventstore.recorder import VersionConflict
from eventstore.records import StoredEvent
from infra.local_time import alliance_zone
from referralnet.settings import settings as app_settings
from services.outcomes.commands import CaseworkCommand, Command, FlagOverdue, RecordAttendance
from services.outcomes.domain import (
    Case,
    Rules,
    behind_routing,
    decide,
    holds,
    may_still_become_yours,
)
from services.outcomes.unit_of_work import Casework, UnitOfWork
from services.refusal import NotFound, NotYet, Refusal

ATTEMPTS = 3
"""Decisions tried per command before a conflict reaches the caller (as a 409 with
Retry-After, ``web.errors``). Only the first is optimistic: a locked retry conflicts only
with a writer that does not lock."""


def rules_from_env() -> Rules:
    """``REFERRALNET_FIRST_CONTACT_SLA_DAYS`` (default 7) and the alliance's zone."""
    return Rules(app_settings().first_contact_sla_days, alliance_zone())


@dataclass(frozen=True)
class Settings:
    """How handlers behave; ``wait_for_routing`` is in seconds."""

    rules: Rules = field(default_factory=rules_from_env)
    wait_for_routing: float = field(default_factory=lambda: app_settings().wait_for_routing_seconds)


async def _record(
    unit: Casework, case: Case | None, command: Command, settings: Settings
) -> list[StoredEvent]:
    decision = decide(case, command, settings.rules, datetime.now(UTC))
    if isinstance(decision, Refusal):
        raise decision
    if not decision.events or case is None:
        return []
    return await unit.record(case, decision)


async def handle(
    command: Command, uow: UnitOfWork, settings: Settings | None = None
) -> list[StoredEvent]:
    """Carry out ``command``; the events stored (none when there was nothing to do).

    Raises the ``Refusal`` ``domain.decide`` gave, ``NotFound`` / ``NotYet`` when the
    referral is unknown here, and ``VersionConflict`` only after ``ATTEMPTS`` tries.
    """
    settings = settings or Settings()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            lock = attempt > 1
            if isinstance(command, RecordAttendance | FlagOverdue):  # not the holder's
                async with uow.begin() as unit:
                    case = await unit.case(command.referral_id, lock=lock)
                    return await _record(unit, case, command, settings)
            return await _as_holder(command, uow, settings, lock)
        except VersionConflict:
            if attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _as_holder(
    command: CaseworkCommand, uow: UnitOfWork, settings: Settings, lock: bool
) -> list[StoredEvent]:
    """Casework by the service holding the referral.

    A referral nobody ever made is 404 at once; one intake made but outcomes has not
    heard of yet is 409 not-yet-known at once; one not accepted by the caller is 403/409
    at once. Only when routing has recorded the caller's acceptance and outcomes has not
    heard of it yet does the call wait for it (up to ``wait_for_routing`` seconds),
    *without holding a unit* (a pooled connection): one partner can never take
    connections from another (issue 12, finding 7).
    """
    rid, org = command.referral_id, command.org
    async with uow.begin() as unit:
        case = await unit.case(rid, lock=lock)
        if holds(case, org):
            return await _record(unit, case, command, settings)
    async with uow.begin(write=False) as unit:
        seen = await unit.case(rid)
        # routing writes the acceptance in the accept request's own transaction: only
        # then is an answer on its way to outcomes, worth waiting for
        holder = await unit.routing_holder(rid)
        accepted = holder == (org, "accepted")
        made = seen is not None or accepted or await unit.known_to_intake(rid)
    if not made:  # nobody ever made it: say so at once
        raise NotFound(f"no referral {rid}")
    if seen is None and not accepted:
        raise NotYet("the referral is not known to outcomes yet; retry shortly")
    if seen is not None and not accepted and behind_routing(seen, holder, org):
        raise NotYet(f"referral {rid} has not reached outcomes yet; retry shortly")
    if accepted:
        await _wait_for_routing(uow, rid, org, seen, settings.wait_for_routing)
    async with uow.begin() as unit:
        return await _record(unit, await unit.case(rid, lock=lock), command, settings)


async def _wait_for_routing(
    uow: UnitOfWork, rid: UUID, org: str, seen: Case | None, wait: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    pause = 0.02
    while (seen is None or may_still_become_yours(seen, org)) and loop.time() < deadline:
        await asyncio.sleep(pause)  # polling a projection another process updates
        pause = min(pause * 2, 0.25)
        async with uow.begin(write=False) as unit:
            seen = await unit.case(rid) or seen
    if seen is None:
        raise NotYet("the referral is not known to outcomes yet; retry shortly")
    if seen.service_org != org and may_still_become_yours(seen, org):
        # Routing says the caller accepted it; outcomes has not heard who holds it yet
        # (e.g. re-reading a refilled log after a broker loss). "Not routed to you"
        # would be false: 409 with Retry-After, as before the wait.
        raise NotYet(f"referral {rid} has not reached outcomes yet; retry shortly")
