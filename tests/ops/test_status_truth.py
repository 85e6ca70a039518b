"""``referralnet status`` tells the truth on a system of its own (broker restarts, a
frozen worker and a crash loop would disturb the session-wide one): each fault is one
problem with its reason, and exit 1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from referralnet.settings import Settings
from referralnet.system import RunningSystem, running_system
from tests.conftest import alliance_yaml, referral_body, register_alliance, wait_until
from tests.ops.conftest import caught_up, journeys, query, run_cli
from tests.ops.test_dead_letters_cli import _created, _produce
from tests.ops.test_republish import _touch_topic

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    home = tmp_path_factory.mktemp("status")
    settings = replace(Settings(), home=home, kafka_bootstrap_servers=None, database_url=None)
    with running_system(settings, pick_free_port=True) as running:
        yield running


def _status(system: RunningSystem, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(system, "status", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def _problems(system: RunningSystem, *args: str) -> list[str]:
    code, body = _status(system, *args)
    messages = [p["message"] for p in body["problems"]]
    assert (code == 1) == bool(messages), (code, messages)
    return messages


def test_pending_dead_letters_are_a_problem_until_decided(own_system: RunningSystem) -> None:
    system = own_system
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix), suffix)
    journeys(alliance, 1)
    caught_up(system)
    assert _problems(system) == []
    topic = system.topics.org(alliance.ids["referrer"])
    key, _, headers = _created(alliance, uuid.uuid4())
    _produce(system.bootstrap_servers, topic, [((key, b"{not json", headers), None)])
    consumer = f"view.{alliance.ids['referrer']}"
    problems = wait_until(
        lambda: [m for m in _problems(system) if "pending dead letter" in m], timeout=60
    )
    assert problems == [
        f"{consumer}: 1 pending dead letter(s): see `referralnet dead-letters`, then `retry` "
        "or `discard` them"
    ]
    assert run_cli(system, "dead-letters", "discard", "--all").exit_code == 0
    caught_up(system)
    assert _problems(system) == []


def test_a_consumer_that_stopped_behind_a_record_is_stuck(own_system: RunningSystem) -> None:
    system = own_system
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix), suffix)
    journeys(alliance, 1)
    caught_up(system)
    views = system.supervisor.children["views"].proc
    os.kill(views.pid, signal.SIGSTOP)  # frozen, not dead: the supervisor sees nothing
    try:
        referrer = alliance.client("referrer")
        created = referrer.post("/referrals", json=referral_body(area=f"area-{suffix}"))
        assert created.status_code == 201, created.text
        consumer = f"view.{alliance.ids['referrer']}"
        topic = system.topics.org(alliance.ids["referrer"])
        stuck = wait_until(
            lambda: [
                m
                for m in _problems(system, "--stuck-seconds", "1", "--recheck-seconds", "1")
                if m.startswith(f"{consumer} stuck at {topic}[0]")
            ],
            timeout=60,
        )
        assert "no progress for" in stuck[0]
    finally:
        os.kill(views.pid, signal.SIGCONT)
    caught_up(system)
    assert not [m for m in _problems(system, "--stuck-seconds", "1") if "stuck" in m]


def test_a_broker_that_lost_its_log_is_unhealthy_until_republished(
    own_system: RunningSystem,
) -> None:
    system = own_system
    caught_up(system)
    assert system.broker is not None
    system.broker.restart()
    problems = _problems(system)
    assert any("topic(s) missing on the broker" in m and "dead-letters" in m for m in problems)
    # A client touching the topic re-creates it empty: then positions are beyond its end.
    asyncio.run(_touch_topic(system.bootstrap_servers, system.topics.referral_events))
    # Positions beyond its end, or (once the workers found that and read it again from
    # the start) the loss they noted: either way the lost log is reported.
    problems = _problems(system)
    beyond = [m for m in problems if "beyond the high watermark 0 of referral-events" in m]
    noted = [m for m in problems if "lost its log of referral-events" in m]
    assert noted or {m.split(":")[0] for m in beyond} >= {"routing", "distributor"}, problems
    assert run_cli(system, "republish").exit_code == 0
    caught_up(system, wait_seconds=90)
    assert _problems(system) == []


def test_a_lost_log_the_workers_already_re_read_is_reported_until_republished(
    own_system: RunningSystem,
) -> None:
    """As after `up` again on the same home: the topics exist again (empty) and new
    events flow, so every consumer finds its position beyond the log, reads it again from
    the start and stores small positions: nothing in the positions shows the loss any
    more, yet everything before it is missing from the bus until `republish`."""
    from referralnet.bootstrap import create_topics

    system = own_system
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix), suffix)
    journeys(alliance, 3)
    caught_up(system)
    assert system.broker is not None
    system.broker.restart()
    orgs = [r[0] for r in query(system, "SELECT id FROM directory.organisations")]
    create_topics(system.bootstrap_servers, system.topics, orgs)  # as `up` does
    referrer = alliance.client("referrer")
    created = referrer.post("/referrals", json=referral_body(area=f"area-{suffix}"))
    assert created.status_code == 201, created.text

    def lost_log_reported() -> list[str]:
        problems = _problems(system)
        lost = [m for m in problems if "lost its log of referral-events" in m]
        beyond = [m for m in problems if "beyond the high watermark" in m]
        return lost if lost and not beyond else []  # the workers have reset themselves

    reported = wait_until(lost_log_reported, timeout=60, interval=0.5)
    assert "run `referralnet republish`" in reported[0]
    assert run_cli(system, "republish").exit_code == 0
    caught_up(system, wait_seconds=90)
    assert not [m for m in _problems(system) if "lost its log" in m]


def test_a_worker_in_a_crash_loop(own_system: RunningSystem) -> None:
    system = own_system
    for _ in range(4):
        child = system.supervisor.children["relay"]
        wait_until(lambda c=child: c.proc.poll() is None, timeout=30)
        system.supervisor.kill("relay")
        wait_until(lambda c=child, p=child.proc.pid: c.proc.pid != p, timeout=30)
    problems = _problems(system)
    assert any(m.startswith("worker relay restarted 4 times in the last 60s") for m in problems)
    _, body = _status(system, "--max-restarts", "10")
    assert body["restarts_in_window"]["relay"] == 4
