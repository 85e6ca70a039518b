"""``/metrics`` and ``/healthz/<worker>`` for operators only.

They name every partner (one consumer per partner view) and describe the system's
weak points, so they answer only to ``Authorization: Bearer <ops token>``: the token is
``REFERRALNET_OPS_TOKEN`` or ``<home>/keys/ops.token`` (created 0600 on first use, the
way Prometheus' ``bearer_token_file`` expects). Plain ``/healthz`` (is the API up?)
stays open: it says nothing but "ok".
"""

from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from infra.keys import key_file
from referralnet.settings import settings

_BODY = json.dumps(
    {
        "error": "unauthenticated",
        "reason": "operations routes need 'Authorization: Bearer <ops token>' "
        "(REFERRALNET_OPS_TOKEN or <home>/keys/ops.token)",
    }
).encode()


def ops_token(home: Path) -> str:
    """The operators' token (created on first use)."""
    return key_file(
        home, "ops.token", lambda: secrets.token_urlsafe(32).encode(), settings().ops_token
    ).decode()


def guarded(path: str) -> bool:
    return path == "/metrics" or path.startswith(("/metrics/", "/healthz/"))


class OpsGuard:
    """ASGI middleware: 401 on the operations routes without the ops token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # other methods go on to the router, which answers 405 with Allow (nothing leaks)
        reads = scope.get("method") in ("GET", "HEAD")
        if scope["type"] == "http" and reads and guarded(str(scope.get("path", ""))):
            given = dict(scope.get("headers", [])).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(_BODY)).encode()),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _BODY})
                return
        await self.app(scope, receive, send)
