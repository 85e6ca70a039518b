"""``referralnet status``, ``GET /metrics`` and ``GET /healthz/<worker>``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bus.held import HeldSummary
from infra.processes import free_port
from referralnet.ops.status import (
    ConsumerHealth,
    PartitionHealth,
    StoreHealth,
    SystemStatus,
    Thresholds,
    _problems,
)
from referralnet.system import RunningSystem
from tests.conftest import Alliance
from tests.ops.conftest import caught_up, journeys, run_cli
from web.ops_guard import ops_token


def _snapshot(**changes: object) -> SystemStatus:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    status = SystemStatus(
        now,
        None,
        None,
        stores=[StoreHealth("intake", 10, 0, None, now)],
        consumers=[ConsumerHealth("view.gp", "view", "org.gp", 0, 5, 5, now)],
    )
    for name, value in changes.items():
        setattr(status, name, value)
    return status


def test_thresholds_decide_what_is_unhealthy() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    limits = Thresholds(max_lag=100, stuck_seconds=60)
    assert _problems(_snapshot(), limits) == []
    lagging = _snapshot(consumers=[ConsumerHealth("view.gp", "view", "org.gp", 101, 0, 101, now)])
    assert [p.component for p in _problems(lagging, limits)] == ["consumer:view.gp"]
    idle = now - timedelta(seconds=61)
    stalled = _snapshot(consumers=[ConsumerHealth("routing", "service", "r", 3, 0, 3, idle)])
    assert "idle" in _problems(stalled, limits)[0].message
    stuck = _snapshot(stores=[StoreHealth("outcomes", 10, 4, 61.0, now)])
    [problem] = _problems(stuck, limits)
    assert problem.component == "store:outcomes" and "stuck" in problem.message
    young = _snapshot(stores=[StoreHealth("outcomes", 10, 4, 2.0, now)])
    assert _problems(young, limits) == []
    down = _snapshot(broker_error="KafkaConnectionError")
    assert [p.component for p in _problems(down, limits)] == ["broker"]
    assert [p.component for p in down.problems_of("views")] == []  # problems set by collect
    down.problems = _problems(down, limits)
    assert down.problems_of("views") and not down.problems_of("api")


def test_each_kind_of_untruth_is_a_problem_with_its_reason() -> None:
    """Lost log, position beyond it, a partition stuck behind one record while the
    others move, a crash loop, pending dead letters: each one problem, named."""
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    limits = Thresholds(max_lag=100, stuck_seconds=60, max_restarts=3)

    def partition(position: int, highwater: int, idle: float, moved: bool | None = None) -> Any:
        at = now - timedelta(seconds=idle)
        return PartitionHealth("routing", "referral-events", 2, position, highwater, at, moved)

    lost = _snapshot(missing_topics=["dead-letters", "referral-events"])
    [problem] = _problems(lost, limits)
    assert problem.component == "broker" and "referral-events" in problem.message
    auto_created = _snapshot(misshapen_topics={"referral-events": (4, 6)})
    [problem] = _problems(auto_created, limits)
    assert problem.component == "broker"
    assert "topic referral-events has 4 partitions, created with 6" in problem.message
    assert "run `referralnet republish`" in problem.message
    beyond = _snapshot(partitions=[partition(941, 0, 1)])
    [problem] = _problems(beyond, limits)
    assert "beyond the high watermark 0 of referral-events[2]" in problem.message
    stuck = _snapshot(partitions=[partition(3, 4, 61)])
    [problem] = _problems(stuck, limits)
    assert problem.component == "consumer:routing"
    assert "stuck at referral-events[2] offset 3 (high watermark 4)" in problem.message
    assert _problems(_snapshot(partitions=[partition(3, 4, 61, moved=True)]), limits) == []
    assert _problems(_snapshot(partitions=[partition(3, 4, 5)]), limits) == []
    assert _problems(_snapshot(partitions=[partition(4, 4, 600)]), limits) == []
    looping = _snapshot(restarts={"views": 4, "api": 3})
    [problem] = _problems(looping, limits)
    assert problem.component == "worker:views" and "restarted 4 times" in problem.message
    looping.problems = [problem]
    assert looping.problems_of("views") and not looping.problems_of("api")
    letters = _snapshot(dead_letters_by_consumer={"distributor": 2})
    [problem] = _problems(letters, limits)
    assert "2 pending dead letter(s)" in problem.message
    letters.problems = [problem]
    assert not letters.problems_of("distributor"), "a worker with dead letters goes on"
    waiting = HeldSummary(3, now - timedelta(seconds=31), 1)
    [problem] = _problems(_snapshot(held={"view.gp": waiting}), limits)
    assert problem.component == "held:view.gp"
    assert not _snapshot(problems=[problem]).problems_of("views"), "the worker goes on"
    assert "3 event(s) of 1 stream(s) held behind a missing version for 31s" in problem.message
    just_held = HeldSummary(1, now - timedelta(seconds=2), 1)  # its gap is still filling
    assert _problems(_snapshot(held={"view.gp": just_held}), limits) == []


@pytest.mark.infra
def test_status_reports_every_service_and_view(system: RunningSystem, alliance: Alliance) -> None:
    journeys(alliance, 1)
    caught_up(system)
    # Other tests leave poison behind on purpose; decided, it no longer counts.
    assert run_cli(system, "dead-letters", "discard", "--all").exit_code == 0
    # Crash-safety tests kill workers of this system on purpose: not a crash loop here;
    # stream-gap tests leave a forged far-ahead version held on purpose.
    quiet = ("--max-restarts", "1000", "--held-seconds", "1000000")
    result = run_cli(system, "status", "--json", *quiet)
    body = json.loads(result.stdout)
    assert result.exit_code == 0, body["problems"]
    assert body["healthy"] and body["database"]["reachable"] and body["broker"]["reachable"]
    assert {s["service"] for s in body["stores"]} == {"intake", "routing", "outcomes"}
    consumers = {c["consumer"]: c for c in body["consumers"]}
    assert {"routing", "distributor", "outcomes"} <= consumers.keys()
    mine = consumers[f"view.{alliance.ids['link_worker']}"]
    assert mine["kind"] == "view" and mine["lag"] == 0 and mine["position"] > 0
    assert mine["last_applied_at"] is not None
    table = run_cli(system, "status", *quiet)
    assert table.exit_code == 0 and "healthy" in table.output


@pytest.mark.infra
def test_unreachable_broker_or_database_exits_1(system: RunningSystem) -> None:
    no_broker = run_cli(
        system, "status", "--json", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"
    )
    assert no_broker.exit_code == 1
    body = json.loads(no_broker.stdout)
    assert not body["broker"]["reachable"] and body["database"]["reachable"]
    no_database = run_cli(
        system,
        "status",
        "--json",
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
    )
    assert no_database.exit_code == 1
    assert not json.loads(no_database.stdout)["database"]["reachable"]


@pytest.mark.infra
def test_metrics_and_per_worker_health_on_the_api(
    system: RunningSystem, alliance: Alliance
) -> None:
    journeys(alliance, 1)
    caught_up(system)
    ops = {"Authorization": f"Bearer {ops_token(system.settings.home)}"}
    assert httpx.get(f"{system.base_url}/metrics", timeout=30).status_code == 401
    metrics = httpx.get(f"{system.base_url}/metrics", headers=ops, timeout=30)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    view = alliance.ids["referrer"]
    assert f'referralnet_consumer_lag{{consumer="view.{view}",kind="view",' in text
    assert 'referralnet_outbox_backlog{service="outcomes"}' in text
    assert 'referralnet_up{component="broker"} 1.0' in text
    assert "referralnet_dead_letters " in text
    for worker in ("api", "intake", "routing", "outcomes", "distributor", "relay", "views"):
        health = httpx.get(f"{system.base_url}/healthz/{worker}", headers=ops, timeout=30)
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
    nope = httpx.get(f"{system.base_url}/healthz/nope", headers=ops, timeout=30)
    assert nope.status_code == 404
