"""Pages about referrals: refer a person, my referrals, one referral, its journey."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import Response
from psycopg import AsyncConnection

from domain.lifecycle import Status
from eventstore.anchor import AnchorPaths
from referralnet import journey
from schemas.events.base import Need
from schemas.events.referral import DeclineReason, Urgency
from schemas.measures import _ITEM_NAMES, _SCALES, MAX_WEEKLY_MINUTES, Measure
from web.app import forms
from web.app.client import Answer, has_event, new_key
from web.app.pages import FormPageOf, Page, PageOf, see_other

router = APIRouter()

STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
NEEDS = [n.value for n in Need]
URGENCIES: tuple[str, ...] = tuple(u.value for u in Urgency)
DECLINE_REASONS: tuple[str, ...] = tuple(r.value for r in DeclineReason)
MEASURES: tuple[str, ...] = tuple(m.value for m in Measure)
DONE = frozenset(
    ("referred", "accepted", "contact", "session", "activity", "assessment", "close", "attendance")
)
"""What a form just did, as the referral page may say it (``?done=``)."""


@router.get("/referrals")
async def my_referrals(
    page: PageOf,
    status: Annotated[str | None, Query(max_length=40)] = None,
    need: Annotated[str | None, Query(max_length=63)] = None,
) -> Response:
    """The caller's view (``GET /view``), filtered by status (the API's) and need."""
    chosen = status if status in STATUSES else None
    answer = page.checked(await page.api.get("/view", status=chosen, limit=500))
    rows = answer.body.get("referrals", []) if answer.ok else []
    if need:
        rows = [r for r in rows if need in r.get("needs", [])]
    return page.render(
        "referrals.html",
        title="My referrals",
        rows=rows,
        totals=answer.body.get("totals", {}) if answer.ok else {},
        statuses=STATUSES,
        needs=NEEDS,
        status=chosen or "",
        need=need or "",
        problem=None if answer.ok else answer.reason,
    )


@router.get("/refer")
async def refer_form(page: PageOf) -> Response:
    return await _refer_page(page, {"referred_at": forms.now_local(), "urgency": "routine"}, {})


async def _refer_page(
    page: PageOf, values: dict[str, Any], errors: dict[str, str], status: int = 200
) -> Response:
    directory = page.checked(await page.api.get("/directory"))
    areas = sorted(
        {a for o in directory.body.get("organisations", []) for a in o.get("areas", [])}
        if directory.ok
        else set()
    )
    values.setdefault("idempotency_key", new_key())
    return page.render(
        "refer.html",
        status,
        title="Refer a person",
        values=values,
        errors=errors,
        needs=NEEDS,
        urgencies=URGENCIES,
        areas=areas,
    )


@router.post("/refer")
async def refer(page: FormPageOf) -> Response:
    """``POST /referrals``; a refusal shows the API's reasons beside the fields typed."""
    form = await page.request.form()
    body = forms.referral_body(form)
    key = forms.text(form, "idempotency_key") or new_key()
    answer = page.checked(await page.api.post("/referrals", body, idempotency_key=key))
    if not answer.ok:
        errors = answer.fields or {"form": answer.reason}
        values = forms.typed(form)
        if answer.status != 422:  # a new form: this key's answer is settled
            values["idempotency_key"] = new_key()
        return await _refer_page(page, values, errors, answer.status)
    referral_id = str(answer.body["referral_id"])
    return see_other(f"/app/referrals/{referral_id}?done=referred")


@router.get("/referrals/{referral_id}")
async def referral(
    page: PageOf,
    referral_id: UUID,
    done: Annotated[str | None, Query(max_length=40)] = None,
    event: Annotated[UUID | None, Query()] = None,
) -> Response:
    """One referral as the caller's role may see it (``GET /referrals/{id}``).

    After a form (``done``), the page waits for the caller's view to hold what was just
    written (its event id, or the referral itself) before showing it, up to a deadline;
    then says honestly that it is still arriving.
    """
    path = f"/referrals/{referral_id}"
    done = done if done in DONE else None  # a word of ours, never text from a link
    if event is not None:
        answer = await page.api.wait_for(path, has_event(str(event)))
        arrived = has_event(str(event))(answer)
    elif done:
        answer = await page.api.wait_for(path, lambda a: a.ok or a.status not in (409,))
        arrived = answer.ok
    else:
        answer = await page.api.get(path)
        arrived = True
    page.checked(answer)
    if answer.status == 409:
        return page.render(
            "arriving.html",
            200,
            title="Still arriving",
            referral_id=referral_id,
            done=done,
            retry=f"/app/referrals/{referral_id}" + (f"?done={done}" if done else ""),
        )
    if not answer.ok:
        return page.render(
            "problem.html",
            answer.status,
            title="Referral not found" if answer.status in (403, 404) else "Not available",
            message=answer.reason,
        )
    return await show_referral(page, referral_id, answer, done=done, arrived=arrived)


async def show_referral(
    page: Page,
    referral_id: UUID,
    answer: Answer,
    *,
    done: str | None = None,
    arrived: bool = True,
    status: int = 200,
    **extra: Any,
) -> Response:
    """The referral page from a ``GET /referrals/{id}`` answer (``extra``: a refused
    form's values, errors and what happened)."""
    detail = answer.body
    view = detail["view"]
    activities = view.get("details", {}).get("activities", [])
    directory = await page.api.get("/directory")
    context: dict[str, Any] = {
        "title": "Referral",
        "referral_id": referral_id,
        "detail": detail,
        "view": view,
        "person": detail.get("person"),
        "role": detail["role"],
        "done": done,
        "arrived": arrived,
        "outcome_summary": outcome_summary(view.get("details", {}).get("outcomes", [])),
        "my_activities": [a for a in activities if a.get("provider_org") == page.session.org_id],
        "directory_activities": directory.body.get("activities", []) if directory.ok else [],
        "decline_reasons": DECLINE_REASONS,
        "measures": measure_form_items(),
        "now": forms.now_local(),
        "values": {},
        "errors": {},
        "refused": None,
    }
    context.update(extra)
    return page.render("referral.html", status, **context)


def outcome_summary(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per measure: the baseline score, the latest later score and the difference
    (scores as the API recorded them; which direction is better is the measure's)."""
    by_measure: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(outcomes, key=lambda r: str(r.get("recorded_at"))):
        by_measure.setdefault(str(row["measure"]), []).append(row)
    summary = []
    for measure, rows in by_measure.items():
        base = next((r for r in rows if r["timepoint"] == "baseline"), None)
        later = [r for r in rows if r["timepoint"] != "baseline"]
        latest = later[-1] if later else None
        change = None
        if base and latest and base.get("score") is not None and latest.get("score") is not None:
            change = float(latest["score"]) - float(base["score"])
        summary.append({"measure": measure, "baseline": base, "latest": latest, "change": change})
    return summary


def measure_form_items() -> list[dict[str, Any]]:
    """Each measure's inputs with their ranges, from ``schemas.measures`` (the validator's
    own table, so the form says what the API will accept)."""
    out: list[dict[str, Any]] = []
    for name in MEASURES:
        measure = Measure(name)
        scale = _SCALES.get(measure)
        if scale is None:
            out.append(
                {"name": name, "items": [], "low": 0, "high": MAX_WEEKLY_MINUTES, "score": True}
            )
            continue
        labels = _ITEM_NAMES.get(measure) or tuple(f"item {i + 1}" for i in range(scale.count))
        out.append({"name": name, "items": list(labels), "low": scale.low, "high": scale.high})
    return out


@router.get("/referrals/{referral_id}/journey")
async def journey_page(page: PageOf, referral_id: UUID) -> Response:
    """The journey across every service's store with its hash-chain check.

    Shown only to an organisation the API lets see this referral (``GET
    /referrals/{id}``, without person details); the timeline and check are
    ``referralnet.journey``'s, as ``referralnet journey --verify`` prints them.
    """
    answer = page.checked(await page.api.get(f"/referrals/{referral_id}", person="false"))
    if not answer.ok:
        return page.render(
            "problem.html",
            answer.status if answer.status != 409 else 200,
            title="Journey not available",
            message=answer.reason,
        )
    gateway = page.request.app.state.api
    conn: AsyncConnection[Any]
    async with gateway.state.pool.connection() as conn:
        steps = await journey.timeline(conn, referral_id)
        breaks = await journey.verify(
            conn, referral_id, AnchorPaths.under(page.request.app.state.home)
        )
    return page.render(
        "journey.html",
        title="Journey",
        referral_id=referral_id,
        steps=[s.as_json() for s in steps],
        breaks=breaks,
        role=answer.body["role"],
    )
