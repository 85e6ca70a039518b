"""Admission control: past the in-flight bound the API answers 503 + Retry-After at once,
without the request reaching any route (so a refused command certainly did nothing)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from referralnet.gateway import create_app
from referralnet.settings import variable
from web.admission import AdmissionControl


async def test_over_the_bound_is_refused_at_once_and_reaches_nothing() -> None:
    release = asyncio.Event()
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])
        if scope["path"] != "/healthz":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guarded = AdmissionControl(app, limit=2)
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        busy = [asyncio.create_task(client.get(f"/slow/{i}")) for i in range(2)]
        for _ in range(200):
            if guarded.in_flight == 2:
                break
            await asyncio.sleep(0.01)  # polling the middleware's counter, bounded
        refused = await client.post("/referrals", json={"any": "thing"})
        health = await client.get("/healthz")  # exempt: answers even when full
        release.set()
        answered = await asyncio.gather(*busy)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert json.loads(refused.content)["error"] == "overloaded"
    assert health.status_code == 200
    assert [r.status_code for r in answered] == [200, 200]
    assert "/referrals" not in reached
    assert guarded.shed == 1 and guarded.in_flight == 0


def test_the_gateway_installs_it_with_the_configured_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable("api_max_in_flight"), "7")
    app = create_app("postgresql://unused/none", tmp_path)
    (middleware,) = [m for m in app.user_middleware if cast(Any, m.cls) is AdmissionControl]
    assert middleware.kwargs == {"limit": 7}
