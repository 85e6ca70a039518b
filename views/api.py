"""Read routes: each organisation's own view, the commissioners' report, the directory."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from directory import store as directory
from directory.model import OrgKind
from domain.lifecycle import Status
from services.refusal import Forbidden
from views import queries
from views.entitlement import access, facts_of
from views.report import RANGE_DESCRIPTION, Report, build_report, report_range
from views.schema import schema_name
from web.deps import Caller, Conn
from web.errors import ERROR_RESPONSES

router = APIRouter(tags=["views"])

MAX_OFFSET = 10_000_000
"""Bounded so that no query parameter can overflow PostgreSQL's bigint (422 instead)."""


@router.get("/view", responses=ERROR_RESPONSES)
async def own_view(
    org: Caller,
    conn: Conn,
    status: Annotated[Status | None, Query(description="only referrals in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """The caller's own view, and nothing else: rows for partners, aggregates for
    commissioners (who never see individual rows)."""
    if org.kind is OrgKind.COMMISSIONER:
        report = await build_report(conn, schema_name(org.id))
        return {"org": org.id, "role": "commissioner", "aggregates": report.model_dump()}
    rows = await queries.referrals(
        conn, org.id, status=status and status.value, limit=limit, offset=offset
    )
    for row in rows:  # the role each row is held in, by the one entitlement policy
        granted = access(org.id, org.kind, facts_of(row, row.pop("providers")))
        row["role"] = granted.role if granted else None
    return {"org": org.id, "totals": await queries.totals(conn, org.id), "referrals": rows}


@router.get("/report", response_model=Report, responses=ERROR_RESPONSES)
async def report(
    org: Caller,
    conn: Conn,
    date_from: Annotated[
        str | None, Query(alias="from", max_length=40, description=RANGE_DESCRIPTION)
    ] = None,
    date_to: Annotated[
        str | None, Query(alias="to", max_length=40, description=RANGE_DESCRIPTION)
    ] = None,
) -> Report:
    """Alliance aggregates for a date range (same figures as `referralnet report --json`).

    Dates without an offset are the alliance's local time (see `from`/`to`); a range
    that is not a date, or where `from` is not before `to`, is 422 naming the field.
    """
    if org.kind is not OrgKind.COMMISSIONER:
        raise Forbidden("only a commissioner receives the alliance report")
    start, end = report_range(date_from, date_to)
    return await build_report(conn, schema_name(org.id), start, end)


@router.get("/directory", responses=ERROR_RESPONSES)
async def get_directory(org: Caller, conn: Conn) -> dict[str, Any]:
    """Organisations, link-worker services and activities of the alliance."""
    orgs = await directory.organisations(conn)
    return {
        "organisations": [
            {"id": o.id, "name": o.name, "kind": o.kind.value, "areas": list(o.areas)} for o in orgs
        ],
        "link_worker_services": [
            {"id": o.id, **o.spec["link_worker_service"], "areas": list(o.areas)}
            for o in orgs
            if o.kind is OrgKind.LINK_WORKER_SERVICE
        ],
        "activities": [a.model_dump(mode="json") for a in await directory.activities(conn)],
    }
