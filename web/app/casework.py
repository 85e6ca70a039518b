"""Link workers' and providers' pages: incoming, caseload, people connected, and every
form that records casework (each one API call; the API decides what is allowed)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter
from fastapi.responses import Response

from web.app import forms
from web.app.client import Answer
from web.app.pages import FormPageOf, Page, PageOf, see_other
from web.app.referrer import DECLINE_REASONS, measure_form_items, show_referral

router = APIRouter()

OPEN = ("routed", "accepted", "in-progress")


async def _rows(page: Page, status: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    answer = page.checked(await page.api.get("/view", status=status, limit=1000))
    return (answer.body.get("referrals", []), None) if answer.ok else ([], answer.reason)


@router.get("/incoming")
async def incoming(page: PageOf) -> Response:
    rows, problem = await _rows(page, "routed")
    mine = [r for r in rows if r.get("role") == "link-worker"]
    return page.render(
        "incoming.html",
        title="Incoming referrals",
        rows=mine,
        problem=problem,
        decline_reasons=DECLINE_REASONS,
        now=forms.now_local(),
    )


@router.get("/caseload")
async def caseload(page: PageOf) -> Response:
    """Open referrals by status, overdue first contact first (the view's SLA flag)."""
    rows, problem = await _rows(page)
    mine = [r for r in rows if r.get("role") == "link-worker" and r.get("status") in OPEN]
    columns = {
        status: sorted(
            (r for r in mine if r["status"] == status),
            key=lambda r: (not r.get("overdue"), str(r.get("referred_at"))),
        )
        for status in OPEN
    }
    return page.render(
        "caseload.html",
        title="Caseload",
        columns=columns,
        overdue=sum(1 for r in mine if r.get("overdue")),
        problem=problem,
    )


@router.get("/connected")
async def connected(page: PageOf) -> Response:
    rows, problem = await _rows(page)
    mine = [r for r in rows if r.get("role") == "provider"]
    return page.render(
        "connected.html",
        title="People connected to my activities",
        open_rows=[r for r in mine if r.get("status") != "closed"],
        closed=sum(1 for r in mine if r.get("status") == "closed"),
        problem=problem,
    )


async def _after(page: Page, referral_id: UUID, answer: Answer, done: str) -> Response:
    """Where a casework form goes next: the referral page once the view holds the event;
    the same page with the API's reasons beside the fields if it was refused."""
    page.checked(answer)
    if answer.ok:
        event = answer.body.get("event_id")
        if event is None and answer.body.get("recorded"):
            event = answer.body["recorded"][-1]["event_id"]
        query = f"?done={done}" + (f"&event={event}" if event else "")
        return see_other(f"/app/referrals/{referral_id}{query}")
    form = await page.request.form()
    current = page.checked(await page.api.get(f"/referrals/{referral_id}"))
    if not current.ok:
        return page.render(
            "problem.html", answer.status, title="This was not recorded", message=answer.reason
        )
    refused = {"form": done, "status": answer.status, "reason": answer.reason}
    return await show_referral(
        page,
        referral_id,
        current,
        status=answer.status,
        refused=refused,
        errors=answer.fields,
        values=forms.typed(form),
    )


@router.post("/referrals/{referral_id}/accept")
async def accept(page: FormPageOf, referral_id: UUID) -> Response:
    form = await page.request.form()
    at = forms.world_time(forms.text(form, "accepted_at"))
    answer = await page.api.post(f"/referrals/{referral_id}/accept", {"accepted_at": at})
    if answer.ok:  # routing answers with no event id: wait for the view's status instead
        await page.api.wait_for(
            f"/referrals/{referral_id}", lambda a: a.ok and a.body["view"]["status"] != "routed"
        )
        return see_other(f"/app/referrals/{referral_id}?done=accepted")
    return await _after(page, referral_id, answer, "accept")


@router.post("/referrals/{referral_id}/decline")
async def decline(page: FormPageOf, referral_id: UUID) -> Response:
    form = await page.request.form()
    body = {
        "reason": forms.text(form, "reason"),
        "declined_at": forms.world_time(forms.text(form, "declined_at")),
    }
    answer = await page.api.post(f"/referrals/{referral_id}/decline", body)
    if answer.ok:
        await page.api.wait_for(
            f"/referrals/{referral_id}", lambda a: not a.ok or a.body["role"] != "link-worker"
        )
        return see_other("/app/incoming?done=declined")
    return await _after(page, referral_id, answer, "decline")


@router.post("/referrals/{referral_id}/contact")
async def contact(page: FormPageOf, referral_id: UUID) -> Response:
    form = await page.request.form()
    body = {
        "contacted_at": forms.world_time(forms.text(form, "contacted_at")),
        "mode": forms.text(form, "mode"),
    }
    answer = await page.api.post(f"/referrals/{referral_id}/contacts", body)
    return await _after(page, referral_id, answer, "contact")


@router.post("/referrals/{referral_id}/session")
async def session(page: FormPageOf, referral_id: UUID) -> Response:
    form = await page.request.form()
    body = {
        "kind": forms.text(form, "kind"),
        "minutes": forms.number(forms.text(form, "minutes")),
        "mode": forms.text(form, "session_mode"),
        "held_at": forms.world_time(forms.text(form, "held_at")),
    }
    answer = await page.api.post(f"/referrals/{referral_id}/sessions", body)
    return await _after(page, referral_id, answer, "session")


@router.post("/referrals/{referral_id}/activity")
async def activity(page: FormPageOf, referral_id: UUID) -> Response:
    form = await page.request.form()
    body = {
        "activity_id": forms.text(form, "activity_id"),
        "referred_at": forms.world_time(forms.text(form, "activity_referred_at")),
    }
    answer = await page.api.post(f"/referrals/{referral_id}/activities", body)
    return await _after(page, referral_id, answer, "activity")


@router.post("/referrals/{referral_id}/assessment")
async def assessment(page: FormPageOf, referral_id: UUID) -> Response:
    form = await page.request.form()
    sizes = {m["name"]: len(m["items"]) for m in measure_form_items()}
    answer = await page.api.post(
        f"/referrals/{referral_id}/assessments", forms.assessment_body(form, sizes)
    )
    return await _after(page, referral_id, answer, "assessment")


@router.post("/referrals/{referral_id}/close")
async def close(page: FormPageOf, referral_id: UUID) -> Response:
    form = await page.request.form()
    body = {
        "reason": forms.text(form, "close_reason"),
        "closed_at": forms.world_time(forms.text(form, "closed_at")),
    }
    answer = await page.api.post(f"/referrals/{referral_id}/close", body)
    return await _after(page, referral_id, answer, "close")


@router.post("/referrals/{referral_id}/attendance")
async def attendance(page: FormPageOf, referral_id: UUID) -> Response:
    form = await page.request.form()
    activity_id = forms.text(form, "activity_id")
    body = {
        "attended_at": forms.world_time(forms.text(form, "attended_at")),
        "attended": forms.text(form, "attended") != "no",
    }
    answer = await page.api.post(
        f"/referrals/{referral_id}/activities/{activity_id or '-'}/attendance", body
    )
    return await _after(page, referral_id, answer, "attendance")
