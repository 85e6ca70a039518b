"""Fault harness, CI size: 20 kill -9s while referrals flow, then a broker that loses its log.

The harness itself is ``bench.chaos`` (``make chaos`` runs it with 100 kills); see its
docstring for how accepted work is counted when the API dies mid-request. Runs on a
system of its own: killing workers and restarting the broker under the session-wide
system would disturb the other end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.chaos import Ledger, broker_restart_phase, chaos_system, kill_phase
from referralnet.supervisor import WORKERS
from referralnet.system import RunningSystem

pytestmark = pytest.mark.infra

KILLS = 20


@pytest.fixture(scope="module")
def chaos() -> Iterator[tuple[RunningSystem, dict[str, str], Ledger]]:
    """One system for the module; the ledger spans both tests (the stores do too)."""
    with chaos_system() as (system, tokens):
        yield system, tokens, Ledger()


def test_twenty_kill_9s_lose_nothing_and_double_nothing(
    chaos: tuple[RunningSystem, dict[str, str], Ledger],
) -> None:
    system, tokens, ledger = chaos
    verdict = kill_phase(system, tokens, ledger, KILLS, gap=(0.8, 2.2), concurrency=10)
    print("\n" + verdict.summary())
    assert verdict.kills >= KILLS
    assert set(verdict.kills_by_worker) == set(WORKERS), "every kind of worker was killed"
    assert verdict.commands >= 30, "enough work flowed while killing"
    assert verdict.ok, verdict.summary()


def test_broker_losing_its_log_then_republish_brings_every_view_back(
    chaos: tuple[RunningSystem, dict[str, str], Ledger],
) -> None:
    system, tokens, ledger = chaos
    verdict = broker_restart_phase(system, tokens, ledger)
    print("\n" + verdict.summary())
    assert verdict.broker_restarts == 1
    assert verdict.ok, verdict.summary()


# Republish while traffic keeps flowing is a known gap (it can reorder a referral's
# events); it is exercised by `make chaos CHAOS_ARGS=--under-traffic`, not in CI, so that
# CI skips no real-infrastructure test.
