"""Every worker kind runs as two instances; one of each is killed -9 mid-stream (issue 17).

The system runs with ``scale`` 2 for every kind (``referralnet up --scale ...``).
Referrals flow through the API while one instance of each stream worker is killed with
SIGKILL and left dead (``Supervisor.retire``): the views instance hosting the busiest
partner, a routing and a distributor member of their faust groups, the relay leading a
store's outbox, the outcomes leader; then one of the two API processes. The survivors
must take the work over: further referrals go through, the pipeline catches up (so the
dead views instance's partners were taken over), every view holds each event exactly
once (as the stores say), and every view equals a clean replay of its topic.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from bus.membership import owner
from referralnet.lag import wait_caught_up
from referralnet.ops.replay import replay_view
from referralnet.services_table import WORKERS
from referralnet.settings import Settings
from referralnet.system import RunningSystem, running_system
from tests.conftest import Alliance, alliance_yaml, register_alliance, stack_home, wait_until
from tests.e2e.test_crash_safety import Flow, check_views_match_the_stores
from views.schema import schema_name

pytestmark = pytest.mark.infra

FIRST_WAVE = 16
SECOND_WAVE = 6


@pytest.fixture(scope="module")
def scaled() -> Iterator[RunningSystem]:
    """A whole system with two instances of every worker kind."""
    with stack_home("scaled") as home:
        settings = replace(Settings(), home=home, kafka_bootstrap_servers=None, database_url=None)
        with running_system(
            settings, pick_free_port=True, scale=dict.fromkeys(WORKERS, 2)
        ) as running:
            yield running


def _rows(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


def live_view_members(system: RunningSystem) -> dict[int, int]:
    """pid → partners owned, of the views instances with a fresh heartbeat."""
    return dict(
        _rows(
            system.database_url,
            "SELECT pid, owned FROM runtime.members WHERE kind = 'views' "
            "AND heartbeat_at > now() - interval '6 seconds'",
        )
    )


def leaders(system: RunningSystem) -> dict[str, str]:
    """Leadership lock key → the supervisor's name of the instance holding it."""
    names = _rows(
        system.database_url,
        "SELECT DISTINCT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND strpos(a.application_name, '|') > 0",
    )
    return {key: instance for instance, key in (n.split("|", 1) for (n,) in names)}


def _position(system: RunningSystem, org: str) -> int:
    (row,) = _rows(
        system.database_url,
        f'SELECT coalesce(sum(next_offset), 0) FROM "{schema_name(org)}".positions',
    )
    return int(row[0])


def _wave(flow: Flow, first: int, count: int) -> None:
    with ThreadPoolExecutor(4, thread_name_prefix="driver") as pool:
        for future in [pool.submit(flow.journey, i) for i in range(first, first + count)]:
            future.result()


def test_two_of_each_kind_one_killed_mid_stream_survivors_take_over(scaled: RunningSystem) -> None:
    system, sup = scaled, scaled.supervisor
    assert {k: len(sup.of_kind(k)) for k in WORKERS} == dict.fromkeys(WORKERS, 2)
    suffix = uuid.uuid4().hex[:8]
    alliance: Alliance = register_alliance(
        system, alliance_yaml(suffix, capacity=FIRST_WAVE + SECOND_WAVE + 10), suffix
    )
    orgs = len(alliance.ids)
    lw = alliance.ids["link_worker"]

    # Both views instances are alive and the partners are shared out between them.
    pid_of = {c.proc.pid: c.name for c in sup.of_kind("views")}
    shared = wait_until(
        lambda: (
            (m := live_view_members(system)).keys() == pid_of.keys()
            and sum(m.values()) == orgs
            and m
        ),
        timeout=60,
    )
    members = _rows(
        system.database_url,
        "SELECT member, pid FROM runtime.members WHERE kind = 'views' AND pid = ANY(%s)",
        list(shared),
    )
    lw_host = pid_of[dict(members)[owner(lw, sorted(m for m, _ in members))]]

    flow = Flow(alliance)
    wave = threading.Thread(target=_wave, args=(flow, 0, FIRST_WAVE), name="wave-1")
    wave.start()
    try:
        # Mid-stream: the link worker's view and routing have applied some, not all.
        wait_until(lambda: _position(system, lw) > 0 and len(flow.sessions) >= 3, timeout=90)
        held = leaders(system)
        victims = {
            lw_host,
            "routing-2",
            "distributor-2",
            held["relay:routing"],
            held["outcomes:consumer"],
        }
        at_kill = _position(system, lw)
        for name in sorted(victims):
            sup.retire(name)
    finally:
        wave.join(timeout=240)
    assert not wave.is_alive(), "the first wave did not finish"

    sup.retire("api-2")  # the other API process keeps serving the one port
    _wave(flow, FIRST_WAVE, SECOND_WAVE)
    assert len(flow.sessions) == FIRST_WAVE + SECOND_WAVE

    asyncio.run(wait_caught_up(system.database_url, system.bootstrap_servers, system.topics))
    # The dead instances stayed dead; the survivors hold what they held.
    assert all(sup.children[v].proc.poll() is not None for v in (*victims, "api-2"))
    survivor = next(c for c in sup.of_kind("views") if c.name != lw_host)
    wait_until(lambda: live_view_members(system) == {survivor.proc.pid: orgs}, timeout=30)
    assert _position(system, lw) > at_kill
    now_held = leaders(system)
    for key in ("relay:intake", "relay:routing", "relay:outcomes", "outcomes:consumer"):
        assert now_held.get(key) not in (None, *victims), (key, now_held)

    check_views_match_the_stores(system, flow)
    replayed = {}
    for org in alliance.ids.values():  # raises ViewDiffers where a view is not its replay
        result = asyncio.run(
            replay_view(system.database_url, system.bootstrap_servers, system.topics, org)
        )
        assert result.checksum == result.live_checksum
        replayed[org] = result.events
    assert replayed[lw] >= 3 * len(flow.sessions)  # created, routed, accepted at least
