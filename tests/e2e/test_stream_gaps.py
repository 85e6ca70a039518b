"""Issue 11, reproduction 1 on the real stack: a version gap never makes a consumer drop
real events, and a forged far-ahead version is never shown.

The forged and reordered events are produced with ``confluent_kafka`` (librdkafka), an
independent client, with the Java default partitioner (murmur2), so they land on the
referral's partition exactly as a rogue producer's would.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Producer

from referralnet.ops.status import Thresholds, collect
from referralnet.system import RunningSystem
from schemas.envelope import CloudEvent, to_kafka
from schemas.registry import dataschema_uri
from tests.conftest import Alliance, referral_body, wait_until

pytestmark = pytest.mark.infra

SLOW = 90.0
CONSUMER_SCHEMAS = ("distributor", "routing", "outcomes")


def _session(rid: str, version: int, minutes: int, actor: str) -> CloudEvent:
    held_at = datetime(2026, 1, 9, 10, tzinfo=UTC) + timedelta(hours=version)
    return CloudEvent(
        id=uuid.uuid4(),
        source="/services/outcomes",
        type="session-held",
        subject=rid,
        time=held_at,
        dataschema=dataschema_uri("session-held", 2),
        data={
            "referral_id": rid,
            "session_id": str(uuid.uuid4()),
            "kind": "short-conversation",
            "duration_minutes": minutes,
            "mode": "phone",
            "held_at": held_at.isoformat(),
        },
        streamversion=version,
        correlationid=uuid.UUID(rid),
        causationid=None,
        actor=actor,
    )


def _produce(system: RunningSystem, events: list[CloudEvent]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": system.bootstrap_servers,
            "acks": "all",
            "partitioner": "murmur2_random",  # what the system's own clients use
        }
    )
    errors: list[str] = []
    for event in events:
        key, value, raw = to_kafka(event)
        headers: list[tuple[str, str | bytes | None]] = list(raw)
        producer.produce(
            system.topics.referral_events,
            key=key,
            value=value,
            headers=headers,
            on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
        )
        assert producer.flush(30) == 0, "not delivered within 30 s"
    assert not errors, errors


def _query(system: RunningSystem, sql: str, *args: Any) -> Any:
    async def run() -> Any:
        conn: psycopg.AsyncConnection[Any]
        async with await psycopg.AsyncConnection.connect(system.database_url) as conn:
            cur = await conn.execute(sql, args)
            row = await cur.fetchone()
            return row[0] if row else None

    return asyncio.run(run())


def _outcomes_version(system: RunningSystem, rid: str) -> int:
    return int(
        _query(system, "SELECT max(version) FROM outcomes.events WHERE stream_id = %s", rid) or 0
    )


def _held(system: RunningSystem, schema: str, rid: str) -> list[int]:
    return list(
        _query(
            system,
            f"SELECT coalesce(array_agg(version ORDER BY version), '{{}}') FROM {schema}.held "
            "WHERE stream_id = %s",
            rid,
        )
    )


def _view(client: httpx.Client, rid: str) -> dict[str, Any] | None:
    response = client.get(f"/referrals/{rid}", params={"person": "false"})
    return response.json()["view"] if response.status_code == 200 else None


def _session_body(minutes: int, day: int) -> dict[str, Any]:
    return {
        "kind": "short-conversation",
        "minutes": minutes,
        "mode": "phone",
        "held_at": f"2026-01-{day:02d}T10:00:00Z",
    }


def _accepted_with_one_session(alliance: Alliance) -> tuple[str, httpx.Client, httpx.Client]:
    referrer, lw = alliance.client("referrer"), alliance.client("link_worker")
    created = referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}"))
    assert created.status_code == 201, created.text
    rid = created.json()["referral_id"]
    wait_until(lambda: (v := _view(referrer, rid)) and v["status"] == "routed", timeout=SLOW)
    accepted = lw.post(f"/referrals/{rid}/accept", json={"accepted_at": "2026-01-06T09:00:00Z"})
    assert accepted.status_code == 200, accepted.text
    first = lw.post(f"/referrals/{rid}/sessions", json=_session_body(20, 7))
    assert first.status_code == 201, first.text
    wait_until(lambda: (v := _view(lw, rid)) and v["sessions"] == 1, timeout=SLOW)
    return rid, referrer, lw


def test_a_forged_far_ahead_version_is_held_and_the_real_journey_reaches_every_view(
    system: RunningSystem, alliance: Alliance
) -> None:
    rid, referrer, lw = _accepted_with_one_session(alliance)
    at = _outcomes_version(system, rid)
    forged = _session(rid, at + 5, 600, alliance.ids["link_worker"])
    _produce(system, [forged])
    for schema in CONSUMER_SCHEMAS:  # every consumer of referral-events holds it
        wait_until(lambda s=schema: _held(system, s, rid) == [at + 5], timeout=SLOW)
    # ... and `status` tells: held behind a missing version (threshold 0 s here).
    seen = asyncio.run(
        collect(
            system.database_url, system.bootstrap_servers, system.topics, Thresholds(held_seconds=0)
        )
    )
    for consumer in CONSUMER_SCHEMAS:
        assert seen.held[consumer].count >= 1, seen.held
        assert any(
            p.component == f"held:{consumer}" and "held behind a missing version" in p.message
            for p in seen.problems
        ), seen.problems

    for minutes, day in ((30, 8), (40, 9)):
        answer = lw.post(f"/referrals/{rid}/sessions", json=_session_body(minutes, day))
        assert answer.status_code == 201, answer.text
    closed = lw.post(
        f"/referrals/{rid}/close", json={"reason": "completed", "closed_at": "2026-01-20T10:00:00Z"}
    )
    assert closed.status_code == 201, closed.text
    assert _outcomes_version(system, rid) == at + 3  # the real stream stops short of 6

    for client in (lw, referrer):
        view = wait_until(
            lambda c=client: (v := _view(c, rid)) and v["status"] == "closed" and v, timeout=SLOW
        )
        assert view["sessions"] == 3, view
        assert view.get("session_minutes", 90) == 90, view  # 20 + 30 + 40, not the forged 600
    for schema in CONSUMER_SCHEMAS:
        assert _held(system, schema, rid) == [at + 5]  # still held, never applied


def test_version_4_before_3_is_applied_in_order_not_dropped(
    system: RunningSystem, alliance: Alliance
) -> None:
    rid, _, lw = _accepted_with_one_session(alliance)
    at = _outcomes_version(system, rid)
    early, late = (_session(rid, at + n, 10 * n, alliance.ids["link_worker"]) for n in (1, 2))
    _produce(system, [late])
    wait_until(lambda: _held(system, "distributor", rid) == [at + 2], timeout=SLOW)
    _produce(system, [early])
    view = wait_until(lambda: (v := _view(lw, rid)) and v["sessions"] == 3 and v, timeout=SLOW)
    assert view["session_minutes"] == 20 + 10 + 20, view
    for schema in CONSUMER_SCHEMAS:
        wait_until(lambda s=schema: _held(system, s, rid) == [], timeout=SLOW)
