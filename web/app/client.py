"""The pages' only way to the data: the partners' JSON API, called in-process.

Every page calls the gateway app itself through ``httpx.ASGITransport`` with the signed
in organisation's bearer token. So authentication, quotas, admission control, request
validation, entitlement and error texts are exactly those of the API (one code path),
and a change of a service's handlers reaches the pages without touching them. No
network hop: the request never leaves the process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp

READ_YOUR_WRITES_SECONDS = 5.0
"""How long a page waits for the caller's view to show what it just wrote."""


@dataclass(frozen=True)
class Answer:
    """An API response: its status and JSON body (an ``ErrorBody`` when status >= 400)."""

    status: int
    body: Any
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""

    @property
    def fields(self) -> dict[str, str]:
        """Field path (``person.name``) -> the API's reason, for 422 answers."""
        if not isinstance(self.body, dict):
            return {}
        out: dict[str, str] = {}
        for problem in self.body.get("fields", []):
            out.setdefault(str(problem.get("field")), str(problem.get("reason")))
        return out

    @property
    def state(self) -> dict[str, Any]:
        state = self.body.get("state") if isinstance(self.body, dict) else None
        return state if isinstance(state, dict) else {}


@dataclass
class Api:
    """The gateway app, called as one organisation (``token``)."""

    app: ASGIApp
    token: str
    _client: httpx.AsyncClient | None = field(default=None, repr=False)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app),
                base_url="http://in-process",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=30,
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def get(self, path: str, **params: Any) -> Answer:
        query = {k: v for k, v in params.items() if v not in (None, "")}
        return _answer(await self._http().get(path, params=query))

    async def post(self, path: str, body: Any, idempotency_key: str | None = None) -> Answer:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _answer(await self._http().post(path, json=body, headers=headers))

    async def wait_for(
        self,
        path: str,
        arrived: Callable[[Answer], bool],
        seconds: float = READ_YOUR_WRITES_SECONDS,
    ) -> Answer:
        """GET ``path`` until ``arrived`` says the view holds the change or the deadline
        passes; returns the last answer (the caller says "still arriving" if need be)."""
        return await poll(lambda: self.get(path), arrived, seconds)


async def poll(
    read: Callable[[], Awaitable[Answer]], arrived: Callable[[Answer], bool], seconds: float
) -> Answer:
    """Call ``read`` until ``arrived(answer)`` or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    pause = 0.02
    answer = await read()
    while not arrived(answer) and time.monotonic() < deadline:
        await asyncio.sleep(pause)  # the view is fed by another process: poll it
        pause = min(pause * 2, 0.25)
        answer = await read()
    return answer


def has_event(event_id: str) -> Callable[[Answer], bool]:
    """Whether a ``GET /referrals/{id}`` answer's view already holds event ``event_id``
    (the view's timeline lists every event it applied, by id)."""

    def check(answer: Answer) -> bool:
        if not answer.ok:
            return False
        timeline = answer.body.get("view", {}).get("details", {}).get("timeline", [])
        return any(str(step.get("event_id")) == event_id for step in timeline)

    return check


def new_key() -> str:
    """An Idempotency-Key for one form: a resubmitted form makes no second referral."""
    return uuid.uuid4().hex


def _answer(response: httpx.Response) -> Answer:
    try:
        body = response.json()
    except ValueError:
        body = {"reason": response.text[:200]}
    return Answer(response.status_code, body, response.headers.get("Retry-After"))
