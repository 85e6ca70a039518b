"""The alliance directory file: partner organisations, link-worker services, activities.

Shaped after Open Referral UK (organisation / service / schedule) with what HSDS lacks
and routing needs: areas served, needs covered and caseload capacity.
"""

from __future__ import annotations

from datetime import time
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.events import Need

SLUG = r"^[a-z0-9][a-z0-9-]{1,62}$"


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
    opens_at: time | None = None
    closes_at: time | None = None


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
    """Cross-references that do not resolve, as (location, reason) pairs.

    Kept out of the model's validators so that the loader can name the offending entry
    (its line and path) rather than the file as a whole.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[str] = set()
    for i, org in enumerate(directory.organisations):
        if org.id in seen:
            problems.append(
                (
                    ("organisations", i, "id"),
                    f"organisation ids must be unique; {org.id!r} is repeated",
                )
            )
        seen.add(org.id)
    for j, activity in enumerate(directory.activities):
        if activity.provider not in seen:
            problems.append(
                (
                    ("activities", j, "provider"),
                    f"activity {activity.id!r}: unknown provider {activity.provider!r}",
                )
            )
    return problems
