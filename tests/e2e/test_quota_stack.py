"""Per-organisation limits on the real API app and database (issue 12, finding 7).

The app is built by ``create_app`` (the same one ``referralnet up`` serves) on the
running system's database, plus one test route that holds its request until released,
so in-flight requests can be piled up deterministically: past its share one partner
gets 429 + Retry-After, while another partner is still served.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from referralnet.gateway import create_app
from referralnet.system import RunningSystem
from tests.conftest import Alliance
from web.deps import Caller

pytestmark = pytest.mark.infra


async def test_one_partners_burst_gets_429_and_leaves_room_for_the_others(
    system: RunningSystem, alliance: Alliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFERRALNET_API_MAX_IN_FLIGHT_PER_ORG", "5")
    app = create_app(system.database_url, system.settings.home, max_in_flight=64)
    release = asyncio.Event()
    held = 0

    @app.get("/test-hold")
    async def hold(org: Caller) -> dict[str, Any]:
        nonlocal held
        held += 1
        await release.wait()
        return {"org": org.id}

    def auth(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {alliance.tokens[alliance.ids[role]]}"}

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as client,
    ):
        burst = [
            asyncio.create_task(client.get("/test-hold", headers=auth("link_worker")))
            for _ in range(12)
        ]
        for _ in range(500):  # until the five admitted are held (bounded polling)
            if held == 5 and sum(t.done() for t in burst) == 7:
                break
            await asyncio.sleep(0.01)
        other = await client.get("/view", headers=auth("referrer"))
        release.set()
        answers = await asyncio.gather(*burst)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 5 + [429] * 7, statuses
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "too-many-requests"
    assert other.status_code == 200, other.text
    assert app.state.quota.refused == 7
