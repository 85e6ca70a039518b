"""Issue 11 item 4, the consumers' side: after `up` again on the same home (the embedded
broker starts empty, PostgreSQL keeps every stored position), no consumer skips new
events as "already read", and after `republish` every consumer catches up with no new
traffic (routing and the distributor used to stall, "lag 941 for minutes", until new
traffic reached each of their partitions).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from referralnet.lag import consumer_lags, wait_caught_up
from referralnet.ops.republish import republish
from referralnet.settings import Settings
from referralnet.system import running_system
from tests.conftest import alliance_yaml, referral_body, register_alliance, wait_until

pytestmark = pytest.mark.infra

SLOW = 90.0


def _view(client: httpx.Client, rid: str) -> dict[str, Any] | None:
    response = client.get(f"/referrals/{rid}", params={"person": "false"})
    return response.json()["view"] if response.status_code == 200 else None


def _refer(client: httpx.Client, area: str) -> str:
    created = client.post("/referrals", json=referral_body(area=area))
    assert created.status_code == 201, created.text
    return str(created.json()["referral_id"])


async def _positions(database_url: str, bootstrap: str, topics: Any) -> dict[str, int]:
    conn: psycopg.AsyncConnection[Any]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        lags = await consumer_lags(conn, bootstrap, topics)
    totals: dict[str, int] = {}
    for lag in lags:
        if lag.topic == topics.referral_events:
            totals[lag.consumer] = totals.get(lag.consumer, 0) + lag.position
    return totals


def test_up_again_on_the_same_home_loses_nothing_and_catches_up_without_traffic(
    tmp_path: Path,
) -> None:
    settings = replace(Settings(), home=tmp_path, kafka_bootstrap_servers=None, database_url=None)
    suffix = uuid.uuid4().hex[:8]
    area = f"area-{suffix}"
    with running_system(settings, pick_free_port=True) as first:
        alliance = register_alliance(first, alliance_yaml(suffix), suffix)
        referrer = alliance.client("referrer")
        before = [_refer(referrer, area) for _ in range(6)]
        for rid in before:
            wait_until(
                lambda r=rid: (v := _view(referrer, r)) and v["status"] == "routed", timeout=SLOW
            )
        stale = asyncio.run(_positions(first.database_url, first.bootstrap_servers, first.topics))
        assert all(n > 0 for n in stale.values()), stale

    with running_system(settings, pick_free_port=True) as second:
        alliance = replace(alliance, base_url=second.base_url)
        referrer = alliance.client("referrer")
        # The broker starts empty; positions in PostgreSQL are beyond its log. A new
        # referral's events land below them and must not be taken for re-deliveries.
        fresh = _refer(referrer, area)
        view = wait_until(
            lambda: (v := _view(referrer, fresh)) and v["status"] == "routed" and v, timeout=SLOW
        )
        assert view["service_org"] == alliance.ids["link_worker"]

        # Refill from the stores: no new traffic follows, yet every consumer catches up.
        asyncio.run(republish(second.database_url, second.bootstrap_servers, second.topics))
        asyncio.run(
            wait_caught_up(
                second.database_url, second.bootstrap_servers, second.topics, wait_seconds=SLOW
            )
        )
        caught_up = asyncio.run(
            _positions(second.database_url, second.bootstrap_servers, second.topics)
        )
        assert all(n > 0 for n in caught_up.values()), caught_up
        for rid in [*before, fresh]:  # the views are as they were, nothing doubled
            view = _view(referrer, rid)
            assert view is not None and view["status"] == "routed", (rid, view)
