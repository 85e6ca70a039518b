"""Per-organisation rate and concurrency limits (``web.quota``), with a fake clock."""

from __future__ import annotations

from web.quota import OrgQuota


def test_a_burst_then_the_rate_then_429_with_retry_after() -> None:
    quota = OrgQuota(rate=10, burst=20, max_in_flight=0)
    admitted = [quota.admit("gp", now=100.0) for _ in range(25)]
    assert admitted[:20] == [None] * 20
    assert all(a is not None and a[1] == 1 for a in admitted[20:])
    for _ in range(20):
        quota.release("gp")
    # one second later, 10 more
    later = [quota.admit("gp", now=101.0) for _ in range(12)]
    assert later.count(None) == 10
    assert quota.refused == 7


def test_one_organisation_over_its_limit_leaves_the_others_alone() -> None:
    quota = OrgQuota(rate=0, burst=0, max_in_flight=3)
    assert [quota.admit("lw", now=0) for _ in range(3)] == [None] * 3
    refused = quota.admit("lw", now=0)
    assert refused is not None and "in flight" in refused[0]
    assert quota.admit("gp", now=0) is None  # another partner is not affected
    quota.release("lw")
    assert quota.admit("lw", now=0) is None


def test_a_slow_rate_asks_to_wait_long_enough() -> None:
    quota = OrgQuota(rate=0.25, burst=1, max_in_flight=0)
    assert quota.admit("gp", now=0) is None
    refused = quota.admit("gp", now=0)
    assert refused is not None and refused[1] == 4
