"""Intake's HTTP routes: referrers submit referrals; entitled partners read them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID, uuid4

from fastapi import APIRouter, Header, Query, Request, Response

from eventstore.records import new_event
from services.existence import on_its_way_to
from services.intake.domain import decide_referral
from services.intake.pii import PersonVault, person_ref_for
from services.intake.requests import (
    PersonView,
    ReferralCreatedResponse,
    ReferralDetail,
    ReferralRequest,
)
from services.intake.store import STORE
from services.refusal import NotFound, NotYet
from views import queries as views
from web.deps import Caller, Conn
from web.errors import ERROR_RESPONSES

router = APIRouter(tags=["intake"])


@router.post(
    "/referrals",
    status_code=201,
    response_model=ReferralCreatedResponse,
    responses=ERROR_RESPONSES,
    summary="Refer a person (16+) to the alliance's link-worker services",
)
async def create_referral(
    body: ReferralRequest,
    org: Caller,
    conn: Conn,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ReferralCreatedResponse:
    """Store the referral (person details encrypted) and publish ``referral-created``.

    Only a pseudonym travels on the bus. With an ``Idempotency-Key`` header a retried
    request returns the referral created the first time instead of a second one.
    """
    vault: PersonVault = request.app.state.vault
    referral_id = uuid4()
    decided = decide_referral(
        body,
        referrer_id=org.id,
        referrer_kind=org.kind,
        referral_id=referral_id,
        person_ref="p_pending",
        now=datetime.now(UTC),
    )
    async with conn.transaction():
        if idempotency_key:
            cur = await conn.execute(
                "SELECT referral_id, person_ref FROM intake.idempotency "
                "WHERE org_id = %s AND key = %s",
                (org.id, idempotency_key),
            )
            row = await cur.fetchone()
            if row:
                response.status_code = 200
                return ReferralCreatedResponse(referral_id=row[0], person_ref=row[1])
        details = body.person.model_dump(mode="json")
        person_ref = await person_ref_for(conn, vault, details)
        model = decided.model_copy(update={"person_ref": person_ref})
        await conn.execute(
            "INSERT INTO intake.referral_people (referral_id, person_ref, ciphertext) "
            "VALUES (%s, %s, %s)",
            (referral_id, person_ref, vault.encrypt(details)),
        )
        if idempotency_key:
            await conn.execute(
                "INSERT INTO intake.idempotency (org_id, key, referral_id, person_ref) "
                "VALUES (%s, %s, %s, %s)",
                (org.id, idempotency_key, referral_id, person_ref),
            )
        event = new_event(
            model, actor=org.id, occurred_at=body.referred_at, correlation_id=referral_id
        )
        await STORE.append(conn, referral_id, 0, [event])
    return ReferralCreatedResponse(referral_id=referral_id, person_ref=person_ref)


async def person_details(conn: Conn, vault: PersonVault, referral_id: UUID) -> dict[str, object]:
    """Decrypt the person behind a referral (callers check entitlement first)."""
    cur = await conn.execute(
        "SELECT ciphertext FROM intake.referral_people WHERE referral_id = %s", (referral_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no referral {referral_id}")
    return vault.decrypt(bytes(row[0]))


PERSON_FIELDS_BY_ROLE = {
    "link-worker": None,  # all fields
    "referrer": None,
    "provider": ("name",),
}


@router.get("/referrals/{referral_id}", response_model=ReferralDetail, responses=ERROR_RESPONSES)
async def get_referral(
    referral_id: UUID,
    org: Caller,
    conn: Conn,
    request: Request,
    person: Annotated[bool, Query(description="include person details if entitled")] = True,
) -> ReferralDetail:
    """What the caller's role may see of one referral, person details included if entitled.

    Entitlement is "the referral is in your own view": the distributor decided that.
    Anyone else gets 404, so the existence of a referral is not revealed either.
    """
    row = await views.referral(conn, org.id, referral_id)
    if row is None:
        if await on_its_way_to(conn, referral_id, org.id):  # the view lags the stores
            raise NotYet(f"referral {referral_id} has not reached your view yet")
        raise NotFound(f"no referral {referral_id} in your view")
    role = str(row.pop("role"))
    shown = None
    if person and role in PERSON_FIELDS_BY_ROLE:
        details = await person_details(conn, request.app.state.vault, referral_id)
        wanted = PERSON_FIELDS_BY_ROLE[role]
        shown = PersonView.model_validate(
            {k: v for k, v in details.items() if wanted is None or k in wanted}
        )
    return ReferralDetail(
        referral_id=referral_id, role=role, view=row, person=shown, fetched_at=datetime.now(UTC)
    )
