"""The partners' HTTP API: one base URL in front of every service's routes (DESIGN §6a).

Each service contributes its own router and writes only its own schema; the gateway
only wires them together with the shared auth, error format and connection pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from eventstore.pool import connection_pool
from referralnet.ops import http as ops_http
from services.intake.api import router as intake_router
from services.intake.pii import PersonVault
from services.outcomes.api import router as outcomes_router
from services.privacy.api import auditor_token
from services.privacy.api import router as privacy_router
from services.routing.api import router as routing_router
from views.api import router as views_router
from web import errors, tokens
from web.admission import AdmissionControl, max_in_flight_from_env
from web.app import create_web_app
from web.errors import ERROR_TEXTS
from web.limits import RequestLimits
from web.ops_guard import OpsGuard, ops_token
from web.quota import OrgQuota
from web.tokens import TokenCache

DESCRIPTION = """Referral Network: partners of a social-prescribing alliance exchange
referrals and each keep their own view of what happens next.

Every call carries `Authorization: Bearer <token>` of one organisation. Times that
happened in the world (`referred_at`, `held_at`, ...) are given by the caller and
validated: never in the future, never before the referral."""


def create_app(
    database_url: str, home: Path, pool_size: int = 16, max_in_flight: int | None = None
) -> FastAPI:
    """The API app; its pool opens on startup and closes on shutdown.

    At most ``max_in_flight`` requests (default ``REFERRALNET_API_MAX_IN_FLIGHT``, 64;
    0: no bound) are served at once; the rest get 503 with Retry-After (web.admission).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = connection_pool(database_url, min_size=2, max_size=pool_size)
        await pool.open()
        async with pool.connection() as conn:
            await tokens.create(conn)  # rotation/revocation tables (idempotent)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Referral Network", version="0.1.0", description=DESCRIPTION, lifespan=lifespan
    )
    app.state.vault = PersonVault.from_home(home)
    app.state.auditor_token = auditor_token(home)
    app.state.token_cache = TokenCache()
    app.state.quota = OrgQuota.from_env()
    errors.install(app)
    for router in (intake_router, routing_router, outcomes_router, views_router, privacy_router):
        app.include_router(router)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        async with app.state.pool.connection() as conn:
            await conn.execute("SELECT 1")
        return {"status": "ok"}

    ops_http.install(app, database_url)  # /metrics and /healthz/<worker>
    app.mount("/app", create_web_app(app, home))  # the partners' web app (docs/webapp.md)
    limit = max_in_flight_from_env() if max_in_flight is None else max_in_flight
    app.add_middleware(OpsGuard, token=ops_token(home))  # /metrics, /healthz/<worker>
    app.add_middleware(AdmissionControl, limit=limit)
    app.add_middleware(RequestLimits)  # outermost: body/header limits before any work
    app.openapi = lambda: documented_openapi(app)  # type: ignore[method-assign]
    return app


def documented_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document with every status each operation can answer.

    The limits, admission control and error handlers apply to every route, including
    the operations routes mounted from ``referralnet.ops``; documenting them once here
    keeps the contract honest (schemathesis checks that no status is undocumented).
    """
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in schema.get("paths", {}).items():
        # the operations routes answer their own JSON shapes (503: the problems found)
        body = {} if path.startswith(("/healthz", "/metrics")) else error_ref
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, text in ERROR_TEXTS.items():
                responses.setdefault(
                    str(code),
                    {"description": text, "content": {"application/json": {"schema": body}}},
                )
    app.openapi_schema = schema
    return schema
