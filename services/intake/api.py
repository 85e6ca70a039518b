"""Intake's HTTP routes: referrers submit referrals; entitled partners read them.

``POST /referrals`` parses the request, builds the ``CreateReferral`` command, hands it
to ``handlers.handle`` on the request's connection, answers 201 (or 200 for a replayed
``Idempotency-Key``).
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID, uuid4

from fastapi import APIRouter, Header, Query, Request, Response
from starlette.datastructures import State

from services.existence import on_its_way_to
from services.intake.adapters import AreaCache, PostgresUnitOfWork
from services.intake.commands import from_request
from services.intake.domain import Replay
from services.intake.handlers import handle
from services.intake.pii import read_person
from services.intake.requests import (
    PersonView,
    ReferralCreatedResponse,
    ReferralDetail,
    ReferralRequest,
)
from services.refusal import Forbidden, NotFound, NotYet
from views import queries as views
from views.entitlement import access, facts_of, individual_rows_allowed
from web.deps import Caller, Conn
from web.errors import ERROR_RESPONSES, ErrorBody

router = APIRouter(tags=["intake"])


@router.post(
    "/referrals",
    status_code=201,
    response_model=ReferralCreatedResponse,
    responses={
        **ERROR_RESPONSES,
        200: {
            "model": ReferralCreatedResponse,
            "description": "Idempotent replay: this Idempotency-Key already created this "
            "referral (same body); nothing new was stored",
        },
        422: {
            "model": ErrorBody,
            "description": "Invalid input, with the fields and why; or an Idempotency-Key "
            "reused with a different body",
        },
    },
    summary="Refer a person (16+) to the alliance's link-worker services",
)
async def create_referral(
    body: ReferralRequest,
    org: Caller,
    conn: Conn,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description="Printable ASCII; the same key with the same body returns the first "
            "answer (200), with a different body 422",
        ),
    ] = None,
) -> ReferralCreatedResponse:
    """Store the referral (person details encrypted) and publish ``referral-created``.

    Only a pseudonym travels on the bus. With an ``Idempotency-Key`` header a retried
    request returns the referral created the first time (200) instead of a second one; the
    key reused with a different body is 422 (IETF idempotency-key draft). Concurrent
    requests with one key wait for the first: one 201, the others 200.
    """
    command = from_request(
        body,
        referral_id=uuid4(),
        referrer_id=org.id,
        referrer_kind=org.kind,
        received_at=datetime.now(UTC),
        idempotency_key=idempotency_key,
    )
    decision = await handle(command, _in(conn, request.app.state))
    if isinstance(decision, Replay):
        response.status_code = 200
    return ReferralCreatedResponse(referral_id=decision.referral_id)


def _in(conn: Conn, state: State) -> PostgresUnitOfWork:
    """Units of work on the request's connection, with the app's vault and area cache."""
    if not hasattr(state, "areas"):
        state.areas = AreaCache()
    return PostgresUnitOfWork(lambda: nullcontext(conn), state.vault, state.areas)


@router.get(
    "/referrals/{referral_id}",
    response_model=ReferralDetail,
    responses=ERROR_RESPONSES,
    summary="One referral, as much as the caller's current role allows",
)
async def get_referral(
    referral_id: UUID,
    org: Caller,
    conn: Conn,
    request: Request,
    person: Annotated[bool, Query(description="include person details if entitled")] = True,
) -> ReferralDetail:
    """What the caller's role may see of one referral (``views.entitlement.access``).

    The referral must be in the caller's own view (the distributor decided that); anyone
    else gets 404, so the existence of a referral is not revealed either. Its referrer, or
    the service routing sent it to, gets 409 ``not-yet-known`` + Retry-After while the
    referral is still on its way through the bus to that view. Person details
    follow the role *now*: a service that declined the referral, saw it escalate away or
    closed it gets none. Commissioners get 403 for every id: aggregates only.
    """
    if not individual_rows_allowed(org.kind):
        raise Forbidden("commissioners receive aggregates only (GET /view, GET /report)")
    row = await views.referral(conn, org.id, referral_id)
    if row is None and await on_its_way_to(conn, referral_id, org.id):
        # the view lags the stores: the caller made it, or routing sent it there
        raise NotYet(f"referral {referral_id} has not reached your view yet")
    granted = access(org.id, org.kind, facts_of(row, row.pop("providers")) if row else None)
    if row is None or granted is None:
        raise NotFound(f"no referral {referral_id} in your view")
    shown, erased = None, False
    if person and granted.person_level:
        details = await read_person(
            conn,
            request.app.state.vault,
            referral_id,
            reader=org.id,
            fields=granted.person_fields,
            purpose=f"GET /referrals/{{id}} as {granted.role}",
        )  # recorded in the access log (services.privacy.audit); None: erased
        erased = details is None
        shown = None if details is None else PersonView.model_validate(details)
    return ReferralDetail(
        referral_id=referral_id,
        role=granted.role,
        view=row,
        person=shown,
        person_erased=erased,
        fetched_at=datetime.now(UTC),
    )
