"""The stream rule (``bus.ordering.plan``) alone: no broker, no database."""

from __future__ import annotations

from bus.ordering import Candidate, StreamKey, plan

S: StreamKey = ("referral-1", "/services/outcomes")
T: StreamKey = ("referral-2", "/services/outcomes")


def c(version: int, tag: str = "", stream: StreamKey = S, held: bool = False) -> Candidate[str]:
    name = f"v{version}{tag}"
    return Candidate(stream, version, hash(name), name, held)


def names(cs: list[Candidate[str]]) -> list[str]:
    return [x.item for x in cs]


def test_next_versions_apply_in_order() -> None:
    p = plan([c(2), c(3)], {S: 1}, {}, [])
    assert names(p.apply) == ["v2", "v3"] and p.heads == {S: 3}
    assert not (p.hold or p.dead or p.duplicates)


def test_a_later_version_waits_for_the_earlier_one() -> None:
    p = plan([c(4), c(3)], {S: 2}, {}, [])
    assert names(p.apply) == ["v3", "v4"] and p.hold == [] and p.heads == {S: 4}


def test_a_version_beyond_the_next_is_held_and_released_by_the_missing_one() -> None:
    first = plan([c(6)], {S: 1}, {}, [])
    assert names(first.hold) == ["v6"] and first.apply == [] and first.heads == {}
    later = plan([c(2), c(3), c(4), c(5)], {S: 1}, {}, [c(6, held=True)])
    assert names(later.apply) == ["v2", "v3", "v4", "v5", "v6"]
    assert names(later.unhold) == ["v6"] and later.heads == {S: 6}


def test_an_exact_duplicate_is_ignored() -> None:
    p = plan([c(2)], {S: 3}, {(S, 2): hash("v2")}, [])
    assert names(p.duplicates) == ["v2"] and not (p.apply or p.dead)


def test_the_same_version_with_other_content_is_a_conflicting_duplicate() -> None:
    p = plan([c(2, "forged")], {S: 3}, {(S, 2): hash("v2")}, [])
    assert p.apply == [] and len(p.dead) == 1
    assert p.dead[0][1].startswith("conflicting duplicate: version 2 of stream referral-1")


def test_two_claims_for_one_future_version_are_both_dead_and_the_stream_parks() -> None:
    held_forged = c(6, "forged", held=True)
    p = plan([c(6, "real"), c(7)], {S: 1}, {}, [held_forged])
    assert sorted(names([x for x, _ in p.dead])) == ["v6forged", "v6real"]
    assert names(p.unhold) == ["v6forged"] and names(p.hold) == ["v7"]
    # The stream reaches 5: 6 is missing, so 7 waits behind it; ops re-drives the real 6.
    p = plan([c(2), c(3), c(4), c(5)], {S: 1}, {}, [c(7, held=True)])
    assert names(p.apply) == ["v2", "v3", "v4", "v5"] and p.heads == {S: 5}
    p = plan([c(6, "real")], {S: 5}, {}, [c(7, held=True)])
    assert names(p.apply) == ["v6real", "v7"] and p.heads == {S: 7}


def test_a_repeated_held_record_is_a_duplicate_not_a_conflict() -> None:
    p = plan([c(6)], {S: 1}, {}, [c(6, held=True)])
    assert names(p.duplicates) == ["v6"] and p.dead == [] and p.hold == []


def test_streams_are_independent() -> None:
    p = plan([c(3, stream=T), c(1, stream=S)], {}, {}, [])
    assert names(p.apply) == ["v1"] and names(p.hold) == ["v3"]


def test_an_unknown_digest_below_the_head_counts_as_a_duplicate() -> None:
    """Versions applied before digests were kept cannot be compared: re-delivery."""
    p = plan([c(1, "whatever")], {S: 4}, {}, [])
    assert names(p.duplicates) == ["v1whatever"] and p.dead == []
