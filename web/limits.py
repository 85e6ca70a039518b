"""Limits decided before any work: body size, header size, NUL bytes.

Pure ASGI middleware, outermost but for admission control: a request over a limit is
answered before its body is read, before its token is looked up and before anything
touches PostgreSQL.

| limit                                   | answer |
| --------------------------------------- | ------ |
| ``Content-Length`` over ``MAX_BODY``    | 413 at once, body unread |
| streamed body passing ``MAX_BODY``      | 413 as soon as the limit is passed (nothing stored) |
| ``Content-Length`` not a number         | 400 |
| headers over ``MAX_HEADERS`` in total   | 431 |
| a NUL byte in the path or query         | 422 (PostgreSQL cannot store NUL in text) |
| a ``\\u0000`` escape in a JSON body     | 422 naming the field (``person.name``, ``items.0``) |

The body is read here in full before the route sees it (it is at most ``MAX_BODY``),
so a NUL can be answered with the field it sits in: the JSON is decoded and walked,
and the path is given as the validation errors give theirs (dots, list indices).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 64 * 1024
"""Bytes. The largest legitimate body (a referral with 4,000 characters of notes) is
under 8 KiB; 64 KiB leaves room without letting one request cost real memory."""
MAX_HEADERS = 8 * 1024
"""Bytes of all header names and values together."""

_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""``\\u0000`` in JSON text, not preceded by an escaping backslash."""


def _refusal(status: int, error: str, reason: str, field: str | None = None) -> bytes:
    body: dict[str, object] = {"error": error, "reason": reason}
    if field:
        body["fields"] = [{"field": field, "reason": reason}]
    return json.dumps(body).encode()


async def _answer(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """ASGI middleware enforcing the limits above."""

    def __init__(
        self, app: ASGIApp, max_body: int = MAX_BODY, max_headers: int = MAX_HEADERS
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._check_head(scope)
        if refused is not None:
            await _answer(send, *refused, [])
            return
        body = await self._read_body(receive)
        if body is None:
            return  # the client left before its body was complete: nothing to answer
        if isinstance(body, tuple):
            await _answer(send, *body, [])
            return
        if _NUL_ESCAPE.search(body):
            field = _nul_field(body)
            if field is not None:
                reason = "text must not contain NUL characters (\\u0000)"
                await _answer(send, 422, _refusal(422, "invalid-request", reason, field), [])
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytes | tuple[int, bytes] | None:
        """The whole body (at most ``max_body`` bytes); (status, refusal) as soon as it
        passes the limit (the rest is never read); None when the client disconnected."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                reason = f"the body exceeds the limit of {self.max_body} bytes"
                return 413, _refusal(413, "body-too-large", reason)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _check_head(self, scope: Scope) -> tuple[int, bytes] | None:
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if sum(len(k) + len(v) for k, v in headers) > self.max_headers:
            return 431, _refusal(
                431, "headers-too-large", f"request headers exceed {self.max_headers} bytes"
            )
        raw_path: bytes = scope.get("raw_path") or scope.get("path", "").encode()
        query: bytes = scope.get("query_string", b"")
        for part, value in (("path", raw_path), ("query", query)):
            if b"\x00" in value or b"%00" in value.lower():
                return 422, _refusal(
                    422, "invalid-request", "must not contain NUL characters (%00)", part
                )
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit():
                    return 400, _refusal(400, "bad-request", "Content-Length is not a number")
                if int(value) > self.max_body:
                    return 413, _refusal(
                        413,
                        "body-too-large",
                        f"the body exceeds the limit of {self.max_body} bytes",
                    )
        return None


def _nul_field(body: bytes) -> str | None:
    """The field of the first string (or key) holding a NUL, as ``a.b.0.c``; None when
    the body is not JSON (the route then says so) or holds no NUL after all."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    for path in _nul_paths(document, ()):
        return ".".join(path) or "body"
    return None


def _nul_paths(value: object, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield (*path, key.replace("\x00", "\\u0000"))
            yield from _nul_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, (*path, str(index)))
