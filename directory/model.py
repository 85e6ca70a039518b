"""The alliance directory file: partner organisations, link-worker services, activities.

Shaped after Open Referral UK (organisation / service / schedule) with what HSDS lacks
and routing needs: areas served, needs covered and caseload capacity.
"""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.events import Need

SLUG = r"^[a-z0-9][a-z0-9-]{1,62}$"
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")


class OrgKind(StrEnum):
    """What an organisation is; referrers are every kind but the last three."""

    GP_PRACTICE = "gp-practice"
    HOSPITAL = "hospital"
    FIRE_SERVICE = "fire-service"
    POLICE = "police"
    HOUSING_ASSOCIATION = "housing-association"
    PHARMACY = "pharmacy"
    JOB_CENTRE = "job-centre"
    LOCAL_AUTHORITY = "local-authority"
    SOCIAL_CARE = "social-care"
    VOLUNTARY_GROUP = "voluntary-group"
    LINK_WORKER_SERVICE = "link-worker-service"
    COMMISSIONER = "commissioner"


REFERRER_KINDS = frozenset(OrgKind) - {OrgKind.LINK_WORKER_SERVICE, OrgKind.COMMISSIONER}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkWorkerCapacity(Strict):
    """How many people a link-worker service can hold at once (DOMAIN: ~40 per worker)."""

    needs: list[Need] = Field(min_length=1)
    link_workers: int = Field(ge=1, le=500)
    caseload_per_worker: int = Field(default=40, ge=1, le=200)
    min_age: int = Field(default=16, ge=16, le=120)
    max_age: int | None = Field(default=None, ge=16, le=120)

    @property
    def caseload_limit(self) -> int:
        return self.link_workers * self.caseload_per_worker

    @model_validator(mode="after")
    def _someone_can_be_referred(self) -> LinkWorkerCapacity:
        if self.max_age is not None and self.min_age > self.max_age:
            raise ValueError(
                f"min_age {self.min_age} is above max_age {self.max_age}: nobody could "
                "ever be routed to this service"
            )
        return self


class Organisation(Strict):
    """A partner of the alliance; each gets its own bearer token and its own view."""

    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1, max_length=200)
    kind: OrgKind
    areas: list[str] = Field(default_factory=list)
    link_worker_service: LinkWorkerCapacity | None = None

    @model_validator(mode="after")
    def _capacity_only_for_link_workers(self) -> Organisation:
        is_lw = self.kind is OrgKind.LINK_WORKER_SERVICE
        if is_lw and self.link_worker_service is None:
            raise ValueError(
                "a link-worker-service needs link_worker_service: {needs, link_workers}"
            )
        if not is_lw and self.link_worker_service is not None:
            raise ValueError("only a link-worker-service has link_worker_service")
        if is_lw and not self.areas:
            raise ValueError("a link-worker-service must list the areas it serves")
        return self


class Schedule(Strict):
    """When an activity runs (HSDS schedule, RRULE-like)."""

    freq: Literal["WEEKLY", "MONTHLY"] = "WEEKLY"
    interval: int = Field(default=1, ge=1, le=12)
    byday: list[Literal["MO", "TU", "WE", "TH", "FR", "SA", "SU"]] = Field(default_factory=list)
    opens_at: time | None = Field(default=None, description='quoted "HH:MM", local time')
    closes_at: time | None = Field(default=None, description='quoted "HH:MM", local time')

    @field_validator("opens_at", "closes_at", mode="before")
    @classmethod
    def _quoted_clock_time(cls, value: Any) -> Any:
        """Only ``"HH:MM"`` (or ``"HH:MM:SS"``) text: a number here is YAML 1.1 reading an
        unquoted 10:00 as 600, or seconds nobody meant."""
        if value is None or isinstance(value, time):
            return value
        if isinstance(value, str) and _CLOCK.match(value):
            return value
        raise ValueError(f'must be a quoted "HH:MM" time (24-hour), not {value!r}')

    @model_validator(mode="after")
    def _opens_before_it_closes(self) -> Schedule:
        if (self.opens_at is None) != (self.closes_at is None):
            raise ValueError("give both opens_at and closes_at, or neither")
        opens, closes = self.opens_at, self.closes_at
        if opens is not None and closes is not None and opens >= closes:
            raise ValueError(f"opens_at {opens:%H:%M} is not before closes_at {closes:%H:%M}")
        if len(set(self.byday)) != len(self.byday):
            raise ValueError("byday lists a day twice")
        return self


class Activity(Strict):
    """An onward activity or service a link worker can connect a person to."""

    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1, max_length=200)
    provider: str = Field(pattern=SLUG)
    kind: str = Field(pattern=SLUG)
    needs: list[Need] = Field(min_length=1)
    area: str
    status: Literal["active", "inactive", "defunct", "temporarily closed"] = "active"
    schedule: Schedule | None = None


class DirectoryFile(Strict):
    """The whole file `referralnet directory load` reads."""

    alliance: str = Field(min_length=1)
    organisations: list[Organisation] = Field(min_length=1)
    activities: list[Activity] = Field(default_factory=list)


def reference_problems(directory: DirectoryFile) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field rules across entries, as (location, reason) pairs.

    Unique organisation and activity ids; lists without repeats; every activity's
    provider exists, is not a commissioner and serves the activity's area. Kept out of
    the model's validators so that the loader can name the offending entry (its line
    and path) rather than the file as a whole.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    orgs: dict[str, Organisation] = {}
    for i, org in enumerate(directory.organisations):
        if org.id in orgs:
            problems.append(
                (
                    ("organisations", i, "id"),
                    f"organisation ids must be unique; {org.id!r} is repeated",
                )
            )
        orgs.setdefault(org.id, org)
        if len(set(org.areas)) != len(org.areas):
            problems.append((("organisations", i, "areas"), "an area is listed twice"))
        lws = org.link_worker_service
        if lws is not None and len(set(lws.needs)) != len(lws.needs):
            problems.append(
                (("organisations", i, "link_worker_service", "needs"), "a need is listed twice")
            )
    activity_ids: set[str] = set()
    for j, activity in enumerate(directory.activities):
        if activity.id in activity_ids:
            problems.append(
                (
                    ("activities", j, "id"),
                    f"activity ids must be unique; {activity.id!r} is repeated",
                )
            )
        activity_ids.add(activity.id)
        provider = orgs.get(activity.provider)
        if provider is None:
            problems.append(
                (
                    ("activities", j, "provider"),
                    f"activity {activity.id!r}: unknown provider {activity.provider!r}",
                )
            )
        elif provider.kind is OrgKind.COMMISSIONER:
            problems.append(
                (
                    ("activities", j, "provider"),
                    f"{provider.id!r} is a commissioner, not a provider",
                )
            )
        elif activity.area not in provider.areas:
            problems.append(
                (
                    ("activities", j, "area"),
                    f"{activity.area!r} is not among the areas its provider {provider.id!r} "
                    f"serves ({', '.join(provider.areas) or 'none'})",
                )
            )
        if len(set(activity.needs)) != len(activity.needs):
            problems.append((("activities", j, "needs"), "a need is listed twice"))
    return problems
