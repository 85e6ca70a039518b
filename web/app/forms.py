"""HTML form input -> the API's JSON bodies, and the API's 422 fields -> form fields.

Inputs are named by the API's field paths (``person.name``, ``consent.share_...``), so
a 422 answer's ``fields[].field`` names the input to show its reason beside: the API is
the only validator, and its words are the ones shown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.datastructures import FormData

from infra.local_time import alliance_zone


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional(form: FormData, name: str) -> str | None:
    return text(form, name) or None


def world_time(value: str) -> str:
    """A ``datetime-local`` value (the alliance's wall-clock time) as ISO 8601 with its
    offset; text that is no such time is passed on as typed, for the API to name."""
    try:
        naive = datetime.fromisoformat(value)
    except ValueError:
        return value
    if naive.tzinfo is not None:
        return naive.isoformat()
    return naive.replace(tzinfo=alliance_zone()).isoformat()


def now_local() -> str:
    """Now, as a ``datetime-local`` input's value in the alliance's time zone."""
    return datetime.now(alliance_zone()).strftime("%Y-%m-%dT%H:%M")


def number(value: str) -> int | float | str:
    """A typed number as a JSON number; anything else as typed (the API says why not)."""
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def referral_body(form: FormData) -> dict[str, Any]:
    """``POST /referrals`` from the refer form."""
    person = {
        "name": text(form, "person.name"),
        "date_of_birth": text(form, "person.date_of_birth"),
    }
    for name in ("nhs_number", "phone", "email", "address", "notes"):
        value = optional(form, f"person.{name}")
        if value is not None:
            person[name] = value
    return {
        "person": person,
        "needs": [str(n) for n in form.getlist("needs")],
        "consent": {
            "share_with_link_worker": form.get("consent.share_with_link_worker") == "yes",
            "share_outcomes_with_referrer": form.get("consent.share_outcomes_with_referrer")
            == "yes",
        },
        "area": text(form, "area"),
        "urgency": text(form, "urgency") or "routine",
        "referred_at": world_time(text(form, "referred_at")),
    }


def assessment_body(form: FormData, measures: dict[str, int]) -> dict[str, Any]:
    """``POST /referrals/{id}/assessments``: every measure with any item filled in.

    ``measures``: measure name -> number of items (0: a single score). An item left
    empty is sent as typed (absent), so the API names the missing item.
    """
    taken: list[dict[str, Any]] = []
    for measure, count in measures.items():
        if count:
            values = [text(form, f"{measure}.{i}") for i in range(count)]
            if any(values):
                taken.append({"measure": measure, "items": [number(v) for v in values]})
        elif text(form, f"{measure}.score"):
            taken.append({"measure": measure, "score": number(text(form, f"{measure}.score"))})
    return {
        "timepoint": text(form, "timepoint"),
        "recorded_at": world_time(text(form, "recorded_at")),
        "measures": taken,
    }


def typed(form: FormData) -> dict[str, Any]:
    """What was typed, to put back in the form after a refusal (lists kept as lists)."""
    values: dict[str, Any] = {}
    for key in form:
        items = form.getlist(key)
        values[key] = [str(i) for i in items] if key == "needs" else str(items[-1])
    return values
