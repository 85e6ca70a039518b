"""Every HTTP error is JSON with a reason; no stack trace ever reaches a partner."""

from __future__ import annotations

import contextlib
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventstore.store import ConcurrencyError
from services.refusal import NotYet, Refusal

log = structlog.get_logger(__name__)


class FieldProblem(BaseModel):
    """One field that was wrong and why."""

    field: str
    reason: str


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx response."""

    error: str
    reason: str
    fields: list[FieldProblem] = []
    state: dict[str, Any] | None = None


class ApiError(Exception):
    """A refusal with a status, a machine-readable code and a human reason."""

    def __init__(
        self,
        status: int,
        error: str,
        reason: str,
        *,
        fields: list[FieldProblem] | None = None,
        state: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason
        self.fields = fields or []
        self.state = state
        self.headers = headers


ERROR_TEXTS: dict[int, str] = {
    400: "Malformed request (e.g. a Content-Length that is not a number, an unreadable body)",
    401: "Missing, unknown, revoked or expired bearer token",
    403: "Your organisation may not do this (commissioners: aggregates only)",
    404: "No such referral or activity (for you)",
    405: "Method not allowed on this path (the Allow header lists those that are)",
    409: "Not possible in the referral's current state (state included), or a concurrent "
    "request with the same Idempotency-Key is still being processed",
    413: "Body larger than 64 KiB (decided before the body is read)",
    422: "Invalid input, with the fields and why",
    429: "Too many requests from your organisation; retry after Retry-After seconds",
    431: "Request headers larger than 8 KiB",
    503: "At capacity; nothing was done, retry after Retry-After seconds",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in ERROR_TEXTS.items()
}
"""Every error status any API route can answer, documented on every route (the limits,
authentication and admission control apply to all of them)."""

_ERROR_NAMES = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "body-too-large",
    422: "invalid-request",
    503: "unavailable",
}


def _body(exc: ApiError) -> dict[str, Any]:
    return ErrorBody(
        error=exc.error, reason=exc.reason, fields=exc.fields, state=exc.state
    ).model_dump(exclude_none=True)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register handlers that turn every failure into ``ErrorBody`` JSON."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Refusal)
    async def _refused(_: Request, exc: Refusal) -> JSONResponse:
        fields = [FieldProblem(field=exc.field, reason=exc.reason)] if exc.field else []
        error = ApiError(exc.status, exc.error, exc.reason, fields=fields, state=exc.state)
        headers = {"Retry-After": "1"} if isinstance(exc, NotYet) else None
        return JSONResponse(_body(error), status_code=exc.status, headers=headers)

    @app.exception_handler(ConcurrencyError)
    async def _raced(_: Request, exc: ConcurrencyError) -> JSONResponse:
        # Other writers kept appending to the referral while a handler decided again
        # (services/*/handlers.py retry on VersionConflict, then give up): the state
        # changed meanwhile, which is the caller's 409 to retry, not a server error.
        reason = "the referral changed meanwhile; read it again and retry"
        error = ApiError(409, "conflict", reason)
        return JSONResponse(_body(error), status_code=409, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for err in exc.errors():
            reason = str(err.get("msg", "invalid"))
            if err.get("type") == "json_invalid":
                reason = f"malformed JSON: {err.get('ctx', {}).get('error', reason)}"
            fields.append(FieldProblem(field=_field(tuple(err.get("loc", ()))), reason=reason))
        malformed = any(err.get("type") == "json_invalid" for err in exc.errors())
        reason = "the body is not valid JSON" if malformed else "the request has invalid fields"
        error = ApiError(422, "invalid-request", reason, fields=fields)
        return JSONResponse(_body(error), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _ERROR_NAMES.get(exc.status_code, "http-error")
        error = ApiError(exc.status_code, name, str(exc.detail))
        # keep the exception's headers: 405 must say which methods are allowed (Allow)
        return JSONResponse(_body(error), status_code=exc.status_code, headers=exc.headers)

    app.add_middleware(CatchAll)


class CatchAll:
    """Pure ASGI middleware: any unhandled error becomes a JSON 500, never a traceback.

    Not an exception handler (Starlette re-raises from those and drops the connection)
    and not ``BaseHTTPMiddleware`` (it copies every response through a stream).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            # A logger that fails (a closed stream, a full disk) must not turn the JSON
            # answer into the server's plain-text 500.
            with contextlib.suppress(Exception):
                log.error("unhandled_error", path=scope.get("path"), error_type=type(exc).__name__)
            if started:  # too late for a clean answer; the server closes the connection
                raise
            error = ApiError(500, "internal-error", "the service failed; nothing was stored")
            await JSONResponse(_body(error), status_code=500)(scope, receive, send)
