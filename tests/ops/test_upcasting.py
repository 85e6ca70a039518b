"""Events stored as ``session-held`` v1 are still published, projected, replayed and shown.

v2 renamed ``minutes`` to ``duration_minutes``; the stores keep v1 events forever and
every reader upcasts them (``schemas.registry.decode``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from eventstore.records import NewEvent
from referralnet.ops.replay import replay_view
from referralnet.system import RunningSystem
from schemas.registry import latest_version
from services.outcomes.store import STORE as OUTCOMES
from tests.conftest import Alliance, wait_until
from tests.ops.conftest import accepted_referral, query, run_cli, view_of
from views.schema import schema_name

pytestmark = pytest.mark.infra


async def _append_v1_session(database_url: str, rid: str, actor: str, minutes: int) -> str:
    """Store a v1 ``session-held`` the way the outcomes service wrote them before v2."""
    session_id = str(uuid.uuid4())
    data = {
        "referral_id": rid,
        "session_id": session_id,
        "kind": "short-conversation",
        "minutes": minutes,
        "mode": "phone",
        "held_at": "2026-01-09T11:00:00+00:00",
    }
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        stream = uuid.UUID(rid)
        version, _ = await OUTCOMES.stream_head(conn, stream)
        await OUTCOMES.append(
            conn,
            stream,
            version,
            [
                NewEvent(
                    type="session-held",
                    schema_version=1,
                    data=data,
                    actor=actor,
                    occurred_at=datetime(2026, 1, 9, 11, tzinfo=UTC),
                    correlation_id=stream,
                )
            ],
        )
    return session_id


def test_v1_session_held_is_read_everywhere(
    system: RunningSystem, alliance: Alliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written as the outcomes service would, so sealed with this system's key (another
    # system started in this process may have left its REFERRALNET_HOME behind).
    monkeypatch.setenv("REFERRALNET_HOME", str(system.settings.home))
    assert latest_version("session-held") == 2
    rid, service = accepted_referral(alliance)
    org = query(system, "SELECT service_org FROM outcomes.cases WHERE referral_id = %s", (rid,))
    service_org = str(org[0][0])
    session_id = asyncio.run(_append_v1_session(system.database_url, rid, service_org, 35))

    # Published by the relay, fanned out by the distributor, projected by the view.
    view = wait_until(lambda: (v := view_of(service, rid)) and v["sessions"] == 1 and v, timeout=60)
    assert view["session_minutes"] == 35
    view_schema = schema_name(service_org)
    minutes = f"SELECT minutes FROM {view_schema}.sessions WHERE session_id = %s"
    assert query(system, minutes, (session_id,)) == [(35,)]

    # The journey shows it as stored (v1) with its minutes, and its chain verifies.
    journey = run_cli(system, "journey", rid, "--verify", "--json")
    assert journey.exit_code == 0, journey.output
    [step] = [s for s in json.loads(journey.stdout)["steps"] if s["type"] == "session-held"]
    assert step["schema_version"] == 1
    assert "35 min" in step["summary"]

    # Replay reads the v1 event from the log again and ends where the live view is.
    result = asyncio.run(
        replay_view(system.database_url, system.bootstrap_servers, system.topics, service_org)
    )
    assert result.matches
    assert query(system, minutes, (session_id,)) == [(35,)]
