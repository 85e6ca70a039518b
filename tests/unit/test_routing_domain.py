"""Routing's pure decision: which link-worker service takes a referral (no I/O)."""

from __future__ import annotations

from services.routing.domain import Candidate, Case, choose_service, eligible


def service(
    org: str,
    *,
    areas: tuple[str, ...] = ("north",),
    needs: tuple[str, ...] = ("social-connection",),
    min_age: int = 16,
    max_age: int | None = None,
    limit: int = 10,
    caseload: int = 0,
) -> Candidate:
    return Candidate(
        service_org=org,
        areas=frozenset(areas),
        needs=frozenset(needs),
        min_age=min_age,
        max_age=max_age,
        caseload_limit=limit,
        caseload=caseload,
    )


def case(
    *,
    area: str = "north",
    needs: tuple[str, ...] = ("social-connection",),
    age_band: str = "35-49",
    tried: tuple[str, ...] = (),
) -> Case:
    return Case(area=area, needs=frozenset(needs), age_band=age_band, tried=tried)


def chosen(c: Case, *services: Candidate) -> str | None:
    picked = choose_service(c, list(services))
    return picked.service_org if picked else None


def test_only_services_serving_the_area_are_chosen() -> None:
    south = service("lw-south", areas=("south",))
    north = service("lw-north", areas=("north", "east"))
    assert chosen(case(area="north"), south, north) == "lw-north"
    assert chosen(case(area="east"), south, north) == "lw-north"
    assert chosen(case(area="west"), south, north) is None


def test_a_service_must_cover_at_least_one_need() -> None:
    money = service("lw-money", needs=("financial-insecurity",))
    assert chosen(case(needs=("stress",)), money) is None
    assert chosen(case(needs=("stress", "financial-insecurity")), money) == "lw-money"


def test_the_service_covering_most_needs_is_preferred_even_with_less_room() -> None:
    narrow = service("lw-a", needs=("stress",), limit=100, caseload=0)
    broad = service("lw-b", needs=("stress", "social-connection"), limit=10, caseload=9)
    assert chosen(case(needs=("stress", "social-connection")), narrow, broad) == "lw-b"


def test_equal_coverage_prefers_most_relative_room_then_name() -> None:
    busy = service("lw-a", limit=10, caseload=8)  # 20% free
    quiet = service("lw-b", limit=100, caseload=50)  # 50% free
    assert chosen(case(), busy, quiet) == "lw-b"
    twin_b, twin_a = service("lw-b", caseload=5), service("lw-a", caseload=5)
    assert chosen(case(), twin_b, twin_a) == "lw-a"


def test_a_full_service_is_never_chosen() -> None:
    full = service("lw-full", limit=3, caseload=3)
    over = service("lw-over", limit=3, caseload=4)  # a lowered limit below caseload
    assert chosen(case(), full, over) is None
    assert chosen(case(), full, service("lw-free", limit=3, caseload=2)) == "lw-free"


def test_services_already_tried_are_excluded() -> None:
    a, b = service("lw-a"), service("lw-b")
    assert chosen(case(tried=("lw-a",)), a, b) == "lw-b"
    assert chosen(case(tried=("lw-a", "lw-b")), a, b) is None


def test_age_bands_against_minimum_and_maximum_age() -> None:
    young_only = service("lw-young", min_age=16, max_age=24)
    older_only = service("lw-older", min_age=65)
    # the whole band is inside the service's range
    assert eligible(case(age_band="16-24"), young_only)
    assert not eligible(case(age_band="25-34"), young_only)
    assert eligible(case(age_band="65-74"), older_only)
    assert eligible(case(age_band="75+"), older_only)
    assert not eligible(case(age_band="50-64"), older_only)
    # a band straddling a bound may hold an eligible person: not excluded
    straddle = service("lw-50", min_age=50, max_age=70)
    assert eligible(case(age_band="50-64"), straddle)
    assert eligible(case(age_band="65-74"), straddle)
    assert not eligible(case(age_band="35-49"), straddle)
    assert not eligible(case(age_band="75+"), straddle)
    # an unknown band is treated as any adult age
    assert eligible(case(age_band="unknown"), service("lw-any"))


def test_ineligible_services_are_skipped_even_with_more_room() -> None:
    wrong_age = service("lw-a", min_age=65, limit=100)
    right = service("lw-b", limit=2, caseload=1)
    assert chosen(case(age_band="25-34"), wrong_age, right) == "lw-b"


def test_no_services_means_no_choice() -> None:
    assert choose_service(case(), []) is None
