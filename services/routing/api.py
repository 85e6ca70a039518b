"""Routing's HTTP routes: the link-worker service a referral was routed to answers it.

Parse the request, build the command, hand it to ``handlers.handle`` in a transaction
(retried if PostgreSQL broke a lock cycle with it), answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from directory.model import OrgKind
from schemas.events.referral import DeclineReason
from services.refusal import Forbidden
from services.routing.adapters import PostgresUnitOfWork
from services.routing.commands import AcceptReferral, DeclineReferral
from services.routing.handlers import handle
from web.deps import Caller, Conn
from web.errors import ERROR_RESPONSES
from web.fields import WorldTime

router = APIRouter(tags=["routing"])
T = TypeVar("T")


class Acceptance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accepted_at: WorldTime


class Declining(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: DeclineReason  # the event's own enum (tests/unit/test_request_contract.py)
    declined_at: WorldTime


class RoutingAnswer(BaseModel):
    referral_id: UUID
    status: str
    next_service: str | None = None


async def retry_on_deadlock(decide: Callable[[], Awaitable[T]]) -> T:
    """Run ``decide`` (one transaction), again if PostgreSQL broke a lock cycle with it.

    Routing decisions lock capacity rows that concurrent decisions also lock; the
    victim of a detected deadlock lost nothing (rolled back) and simply tries again.
    """
    for attempt in range(3):
        try:
            return await decide()
        except psycopg.errors.DeadlockDetected:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _in(conn: Any) -> PostgresUnitOfWork:
    """Units of work on the request's connection, a transaction each."""
    return PostgresUnitOfWork(lambda: nullcontext(conn))


def _link_worker(kind: OrgKind) -> None:
    if kind is not OrgKind.LINK_WORKER_SERVICE:
        raise Forbidden("only a link-worker service can accept or decline referrals")


@router.post(
    "/referrals/{referral_id}/accept", response_model=RoutingAnswer, responses=ERROR_RESPONSES
)
async def accept(referral_id: UUID, body: Acceptance, org: Caller, conn: Conn) -> RoutingAnswer:
    """Take the referral on (only the service it is routed to)."""
    _link_worker(org.kind)
    command = AcceptReferral(referral_id, org.id, body.accepted_at)
    await retry_on_deadlock(lambda: handle(command, _in(conn)))
    return RoutingAnswer(referral_id=referral_id, status="accepted")


@router.post(
    "/referrals/{referral_id}/decline", response_model=RoutingAnswer, responses=ERROR_RESPONSES
)
async def decline(referral_id: UUID, body: Declining, org: Caller, conn: Conn) -> RoutingAnswer:
    """Decline with a reason; the referral is routed to the next candidate or escalated."""
    _link_worker(org.kind)
    command = DeclineReferral(referral_id, org.id, body.reason, body.declined_at)
    after = await retry_on_deadlock(lambda: handle(command, _in(conn)))
    nxt = after.service_org if after else None
    return RoutingAnswer(
        referral_id=referral_id,
        status="re-routed" if nxt else "escalated",
        next_service=nxt,
    )
