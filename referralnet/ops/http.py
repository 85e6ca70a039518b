"""Operations routes on the API: ``/metrics`` and ``/healthz/<worker>``.

Worker processes serve no HTTP of their own; their health is read from the outside
(positions, outboxes, high watermarks), so the API answers for each of them.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from bus.topics import Topics
from referralnet.ops.metrics import exposition
from referralnet.ops.status import SERVICE_COMPONENTS, SystemStatus, Thresholds, collect
from referralnet.settings import Settings

router = APIRouter(tags=["operations"])

CACHE_SECONDS = 2.0


class OpsConfig:
    """Where status reads from, and the last snapshot (scrapes come in bursts)."""

    def __init__(
        self,
        database_url: str,
        bootstrap_servers: str | None,
        topics: Topics,
        home: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.home = home
        self._snapshot: tuple[float, SystemStatus] | None = None

    async def status(self) -> SystemStatus:
        if self.bootstrap_servers is None:
            raise HTTPException(503, "no broker configured (KAFKA_BOOTSTRAP_SERVERS)")
        if self._snapshot and time.monotonic() - self._snapshot[0] < CACHE_SECONDS:
            return self._snapshot[1]
        status = await collect(
            self.database_url, self.bootstrap_servers, self.topics, Thresholds(), self.home
        )
        self._snapshot = (time.monotonic(), status)
        return status


def install(app: FastAPI, database_url: str, settings: Settings | None = None) -> None:
    """Add the routes to ``app``; the broker address comes from the environment."""
    settings = settings or Settings.from_env()
    app.state.ops = OpsConfig(
        database_url,
        settings.kafka_bootstrap_servers,
        Topics(prefix=settings.topic_prefix),
        settings.home,
    )
    app.include_router(router)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format: lag, outbox backlog, last event, dead letters, reachability."""
    status = await request.app.state.ops.status()
    return Response(exposition(status), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz/{service}")
async def service_health(service: str, request: Request) -> JSONResponse:
    """200 when the named worker's part of the system is healthy, else 503 with why."""
    if service not in SERVICE_COMPONENTS:
        raise HTTPException(404, f"no service {service!r}; one of {', '.join(SERVICE_COMPONENTS)}")
    status: SystemStatus = await request.app.state.ops.status()
    problems = status.problems_of(service)
    return JSONResponse(
        {
            "service": service,
            "status": "ok" if not problems else "unhealthy",
            "problems": [p.message for p in problems],
        },
        status_code=200 if not problems else 503,
    )
