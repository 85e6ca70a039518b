"""Admission control: past a bound on requests in flight, answer 503 + Retry-After at once.

Without it an overloaded API queues requests until clients time out: the partner does
not know whether its referral was stored, retries, and the queue grows further. With a
bound, the requests admitted keep their latency, and the ones refused are refused in
microseconds, before anything is read or written, so a refused command certainly did
nothing and may simply be sent again after ``Retry-After``.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from referralnet.settings import settings

DEFAULT_MAX_IN_FLIGHT = 64
EXEMPT_PREFIXES = ("/healthz", "/metrics")
"""Health and metrics must answer precisely when the API is busiest."""

_BODY = json.dumps(
    {
        "error": "overloaded",
        "reason": "the service is at capacity; nothing was done, retry after the given seconds",
    }
).encode()


def max_in_flight_from_env() -> int:
    """The bound from ``REFERRALNET_API_MAX_IN_FLIGHT`` (0 disables admission control)."""
    return settings().api_max_in_flight


class AdmissionControl:
    """ASGI middleware holding at most ``limit`` HTTP requests in flight."""

    def __init__(self, app: ASGIApp, limit: int, retry_after: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = str(retry_after).encode()
        self.in_flight = 0
        self.shed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.limit <= 0
            or str(scope.get("path", "")).startswith(EXEMPT_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.shed += 1
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_BODY)).encode()),
                        (b"retry-after", self.retry_after),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _BODY})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
