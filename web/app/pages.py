"""What every page shares: templates, the signed-in session, CSRF, the API client.

A page handler takes ``Page`` (the request, the session and an ``Api`` for the signed in
organisation) and renders a template; ``SignInNeeded`` anywhere sends the browser to
sign in and back to the page it asked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from web.app.client import Answer, Api
from web.app.session import COOKIE, Session, Sessions, same_secret

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

NAV: dict[str, list[tuple[str, str]]] = {
    "referrer": [("/app/referrals", "My referrals"), ("/app/refer", "Refer a person")],
    "link-worker-service": [("/app/incoming", "Incoming"), ("/app/caseload", "Caseload")],
    "voluntary-group": [("/app/connected", "People connected")],
    "commissioner": [("/app/report", "Alliance report")],
}


def role_of(kind: str) -> str:
    """The app's role for an organisation kind (every other kind refers people)."""
    return kind if kind in NAV else "referrer"


def home_of(kind: str) -> str:
    return NAV[role_of(kind)][0][0]


class SignInNeeded(Exception):
    """No valid session (none, expired, tampered, or the API no longer knows the token)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class FormRefused(Exception):
    """A POST without this session's CSRF value: nothing is done."""


@dataclass
class Page:
    request: Request
    session: Session
    api: Api

    def render(self, template: str, code: int = 200, /, **context: Any) -> HTMLResponse:
        return render(self.request, template, code, session=self.session, **context)

    def checked(self, answer: Answer) -> Answer:
        """``answer``, unless it says the token stopped working (then sign in again)."""
        if answer.status == 401:
            raise SignInNeeded(_here(self.request))
        return answer


def render(request: Request, template: str, code: int = 200, /, **context: Any) -> HTMLResponse:
    """``template`` with ``context`` (``code``: the HTTP status; positional, so that a
    page may have a ``status`` of its own in its context)."""
    session: Session | None = context.get("session")
    context.setdefault("nav", NAV[role_of(session.kind)] if session else [])
    context.setdefault("csrf", session.csrf if session else "")
    context.setdefault("path", request.url.path)
    return TEMPLATES.TemplateResponse(request, template, context, status_code=code)


def sessions(request: Request) -> Sessions:
    return request.app.state.sessions  # type: ignore[no-any-return]


def _here(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return request.url.path + query


async def page(request: Request) -> AsyncIterator[Page]:
    """The signed-in page context; ``SignInNeeded`` if there is no valid session."""
    session = sessions(request).open(request.cookies.get(COOKIE))
    if session is None:
        # a POST's own URL is no page to come back to: go back to the page it came from
        raise SignInNeeded(_here(request) if request.method == "GET" else "")
    api = Api(request.app.state.api, session.token)
    try:
        yield Page(request, session, api)
    finally:
        await api.close()


async def form_page(request: Request) -> AsyncIterator[Page]:
    """``page`` for a form POST, refused unless the form carries the session's CSRF value."""
    async for p in page(request):
        form = await request.form()
        given = form.get("csrf")
        if not same_secret(p.session.csrf, given if isinstance(given, str) else None):
            raise FormRefused()
        yield p


PageOf = Annotated[Page, Depends(page)]
FormPageOf = Annotated[Page, Depends(form_page)]


def to_sign_in(path: str) -> RedirectResponse:
    target = "/app/sign-in" + (f"?next={quote(path, safe='')}" if path else "")
    return RedirectResponse(target, status_code=303)


def see_other(path: str) -> Response:
    return RedirectResponse(path, status_code=303)
