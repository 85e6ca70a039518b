"""HTTP routes of the person's rights: erasure, consent withdrawal, the access log.

Who may ask (docs/security.md, "Who may erase"): the referral's **referrer** (it
collected the details and the consent, and is the controller the person most likely
asks) and the **link-worker service** routing gave it to (it is in touch with the
person, and DOMAIN's "right to object" reaches it first). Providers of onward
activities see a name only and commissioners no individual at all: neither may act for
the person. The access log answers to the auditor's token only (not a partner's).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi import Path as PathParam
from psycopg import sql
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from infra.keys import key_file
from referralnet.settings import settings
from schemas.events import ErasureReason, WithdrawnConsent
from services.privacy import audit, consent, erasure, streams
from services.refusal import Forbidden, NotFound
from views.entitlement import individual_rows_allowed
from views.schema import schema_name
from web.deps import Caller, Conn
from web.errors import ERROR_RESPONSES, ApiError
from web.fields import WorldTime

router = APIRouter(tags=["privacy"])

ENV_AUDITOR_TOKEN = "REFERRALNET_AUDITOR_TOKEN"


def auditor_token(home: Path) -> str:
    """The auditor's token: ``REFERRALNET_AUDITOR_TOKEN`` or ``<home>/keys/auditor.token``
    (created 0600 on first use, printed by nobody: the operator hands it over)."""
    return key_file(
        home, "auditor.token", lambda: secrets.token_urlsafe(32).encode(), settings().auditor_token
    ).decode()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErasureRequest(Strict):
    reason: ErasureReason = Field(description="The UK GDPR Art. 17(1) ground")


class ErasureResponse(BaseModel):
    status: Literal["erased"] = "erased"
    erased_at: datetime
    already: bool = Field(description="true: erased by an earlier request; nothing new")


class WithdrawalRequest(Strict):
    consent: WithdrawnConsent
    withdrawn_at: WorldTime


class WithdrawalResponse(BaseModel):
    status: Literal["withdrawn"] = "withdrawn"
    already: bool


class AccessRecord(BaseModel):
    read_at: datetime
    reader: str
    referral_id: UUID
    fields: list[str]
    purpose: str
    position: int


class AccessLog(BaseModel):
    accesses: list[AccessRecord]
    next_after: int | None = Field(description="pass as ?after= for the next page")


async def _entitled(conn: Conn, org_id: str, referral_id: UUID) -> None:
    """403 unless ``org_id`` is the referral's referrer or its link-worker service."""
    referrer, service = await streams.holders(conn, referral_id)
    if referrer is None:
        raise NotFound(f"no referral {referral_id} in your view")
    if org_id not in (referrer, service):
        raise Forbidden("only the referrer or the link-worker service holding it may")


@router.post(
    "/people/{person_ref}/erasure",
    response_model=ErasureResponse,
    responses=ERROR_RESPONSES,
    summary="Erase a person's details everywhere (crypto-shredding); idempotent",
)
async def erase(
    person_ref: Annotated[str, PathParam(pattern=r"^p_[A-Za-z0-9_-]{1,64}$")],
    body: ErasureRequest,
    org: Caller,
    conn: Conn,
    request: Request,
) -> ErasureResponse:
    """Destroy the key of the person your view calls ``person_ref`` (the pseudonym of
    ``GET /referrals/{id}``'s view row): their details become unreadable for everyone,
    and each of their referrals records ``person-erased``. Journey, views and figures
    stay. 404: no such pseudonym in your view; 403: you are neither its referrer nor its
    link-worker service (commissioners: never)."""
    if not individual_rows_allowed(org.kind):
        raise Forbidden("commissioners receive aggregates only")
    cur = await conn.execute(
        sql.SQL("SELECT referral_id FROM {}.referrals WHERE person_ref = %s").format(
            sql.Identifier(schema_name(org.id))
        ),
        (person_ref,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no person {person_ref} in your view")
    await _entitled(conn, org.id, row[0])
    person = await erasure.person_of(conn, row[0])
    done = await erasure.erase_person(
        conn, request.app.state.vault, person, body.reason, requested_by=org.id
    )
    return ErasureResponse(erased_at=done.erased_at, already=not done.now)


@router.post(
    "/referrals/{referral_id}/consent-withdrawal",
    status_code=201,
    response_model=WithdrawalResponse,
    responses={
        **ERROR_RESPONSES,
        200: {"model": WithdrawalResponse, "description": "Already withdrawn; nothing new"},
    },
    summary="Record that the person withdrew consent (outcomes no longer go to the referrer)",
)
async def withdraw_consent(
    referral_id: UUID, body: WithdrawalRequest, org: Caller, conn: Conn, response: Response
) -> WithdrawalResponse:
    """The referrer or the link-worker service records a withdrawal the person told it
    of. The referrer's view drops the outcome summary; no outcome reaches it again.
    409: the person never gave that consent."""
    if not individual_rows_allowed(org.kind):
        raise Forbidden("commissioners receive aggregates only")
    await _entitled(conn, org.id, referral_id)
    new = await consent.withdraw(conn, referral_id, body.consent, org.id, body.withdrawn_at)
    if not new:
        response.status_code = 200
    return WithdrawalResponse(already=not new)


@router.get(
    "/audit/access",
    response_model=AccessLog,
    responses=ERROR_RESPONSES,
    summary="Who read whose personal details (the auditor's token only)",
)
async def access_log(
    conn: Conn,
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    referral_id: UUID | None = None,
    reader: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AccessLog:
    """Recorded reads, oldest first, filtered by referral, reader, time (``since``
    inclusive, ``until`` exclusive); page with ``after``. 401 without the auditor's
    token (``REFERRALNET_AUDITOR_TOKEN`` or ``<home>/keys/auditor.token``)."""
    expected = f"Bearer {request.app.state.auditor_token}"
    if authorization is None or not hmac.compare_digest(authorization, expected):
        raise ApiError(
            401,
            "unauthenticated",
            "the access log needs 'Authorization: Bearer <auditor token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = await audit.accesses(
        conn,
        referral_id=referral_id,
        reader=reader,
        since=since,
        until=until,
        after=after,
        limit=limit,
    )
    return AccessLog(
        accesses=[
            AccessRecord(
                read_at=a.read_at,
                reader=a.reader,
                referral_id=a.referral_id,
                fields=list(a.fields),
                purpose=a.purpose,
                position=a.position,
            )
            for a in found
        ],
        next_after=found[-1].position if len(found) == limit else None,
    )
