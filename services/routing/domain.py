"""Routing decisions, free of I/O: which link-worker service should take a referral."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

AGE_BAND_BOUNDS = {
    "16-24": (16, 24),
    "25-34": (25, 34),
    "35-49": (35, 49),
    "50-64": (50, 64),
    "65-74": (65, 74),
    "75+": (75, 130),
}


@dataclass(frozen=True)
class Candidate:
    """A link-worker service with its current caseload (as locked for this decision)."""

    service_org: str
    areas: frozenset[str]
    needs: frozenset[str]
    min_age: int
    max_age: int | None
    caseload_limit: int
    caseload: int

    @property
    def free(self) -> int:
        return self.caseload_limit - self.caseload


@dataclass(frozen=True)
class Case:
    """What routing knows of a referral: no personal data, just what routing needs."""

    area: str
    needs: frozenset[str]
    age_band: str
    tried: tuple[str, ...] = ()


def eligible(case: Case, service: Candidate) -> bool:
    """Serves the area, covers at least one need, takes the person's age, not yet tried."""
    low, high = AGE_BAND_BOUNDS.get(case.age_band, (16, 130))
    too_young = high < service.min_age
    too_old = service.max_age is not None and low > service.max_age
    return (
        case.area in service.areas
        and bool(case.needs & service.needs)
        and not too_young
        and not too_old
        and service.service_org not in case.tried
    )


def choose_service(case: Case, services: Sequence[Candidate]) -> Candidate | None:
    """Best eligible service with room: most needs covered, then most room, then name.

    Returns None when none is left (the caller escalates). Capacity is checked against
    rows the caller has locked, so two concurrent decisions cannot both take the last place.
    """
    open_ = [s for s in services if eligible(case, s) and s.free > 0]
    if not open_:
        return None
    return min(
        open_,
        key=lambda s: (
            -len(case.needs & s.needs),
            -(s.free / s.caseload_limit),
            s.service_org,
        ),
    )
