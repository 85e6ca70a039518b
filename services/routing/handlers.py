"""Routing's use cases: ``handle(command, uow)`` reads the case, decides, records.

Every command is one unit of work (one transaction): case locked, candidates locked,
``domain`` decides, events appended with the case's version as ``expected_version``
(retried from the start on ``VersionConflict``), case row and caseloads updated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import assert_never
from uuid import UUID

from eventstore.recorder import VersionConflict
from services.refusal import NotFound, NotYet, Refusal
from services.routing import domain
from services.routing.commands import (
    AcceptReferral,
    Command,
    DeclineReferral,
    OpenCase,
    ReleasePlace,
)
from services.routing.domain import Decision, RoutingCase
from services.routing.unit_of_work import RoutingWork, UnitOfWork

ATTEMPTS = 3
"""Decisions tried per command; with the case locked a conflict means a writer that does
not lock (a bug), so few are enough."""


async def handle(command: Command, uow: UnitOfWork) -> RoutingCase | None:
    """Carry out ``command``; the case after it (None: nothing to do, e.g. a redelivered
    ``referral-created`` or a closing routing never heard of).

    Raises the ``Refusal`` the domain gave, ``NotFound`` / ``NotYet`` (intake made it,
    routing has not heard yet) for an unknown referral.
    """
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with uow.begin() as work:
                return await _once(command, work)
        except VersionConflict:
            if attempt == ATTEMPTS or not uow.retryable:
                raise
    raise AssertionError("unreachable")


async def _once(command: Command, work: RoutingWork) -> RoutingCase | None:
    match command:
        case OpenCase():
            if not await work.open(command.created, command.at):
                return None
            # the insert took the row's lock: nobody can have written since
            case = await work.case(command.created.referral_id, lock=False)
            assert case is not None
            candidates = await work.candidates(case.area)
            if not candidates:  # a service may have joined since the ledger was synced
                await work.sync_capacity()
                candidates = await work.candidates(case.area)
            decision: Decision | Refusal = domain.route(
                case, candidates, at=command.at, actor="routing", causation=command.event_id
            )
            at = command.at
        case AcceptReferral():
            case = await _known(work, command.referral_id)
            decision = domain.accept(case, command, datetime.now(UTC))
            at = command.accepted_at
        case DeclineReferral():
            case = await _known(work, command.referral_id)
            # every candidate locked (in name order) before deciding, as a routing does
            candidates = await work.candidates(case.area)
            decision = domain.decline(case, command, candidates, datetime.now(UTC))
            at = command.declined_at
        case ReleasePlace():
            found = await work.case(command.referral_id, versioned=False)  # no event
            if found is None:
                return None
            case, decision, at = found, domain.release(found), command.at
        case _:
            assert_never(command)
    if isinstance(decision, Refusal):
        raise decision
    await work.record(case, decision, at)
    return decision.after


async def _known(work: RoutingWork, referral_id: UUID) -> RoutingCase:
    case = await work.case(referral_id)
    if case is None:
        if await work.known_to_intake(referral_id):  # on its way through the bus
            raise NotYet(f"referral {referral_id} has not been routed yet; retry shortly")
        raise NotFound(f"no referral {referral_id}")
    return case
