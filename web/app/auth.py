"""Sign-in with an organisation's token, sign-out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from web.app.client import Api
from web.app.pages import FormPageOf, home_of, render, see_other, sessions
from web.app.session import COOKIE, LOGIN_CSRF_COOKIE, safe_next, same_secret

router = APIRouter()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/")
async def start(request: Request) -> Response:
    session = sessions(request).open(request.cookies.get(COOKIE))
    return see_other(home_of(session.kind) if session else "/app/sign-in")


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(
    request: Request, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    return _form(request, safe_next(next_path) or "", None, 200)


def _form(request: Request, next_path: str, error: str | None, status: int) -> Response:
    login_csrf = secrets.token_urlsafe(24)
    response = render(
        request,
        "sign_in.html",
        status,
        title="Sign in",
        next_path=next_path,
        error=error,
        login_csrf=login_csrf,
        expired=bool(next_path),
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        login_csrf,
        max_age=3600,
        path="/app",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.post("/sign-in")
async def sign_in(
    request: Request,
    token: Annotated[str, Form(max_length=500)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2000)] = "",
) -> Response:
    """The token is checked by the API itself (``GET /view``), then kept in the cookie."""
    target = safe_next(next_path) or ""
    if not same_secret(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
        return _form(request, target, "The sign-in form had expired. Please try again.", 403)
    if not token.strip():
        return _form(request, target, "Enter your organisation's token.", 422)
    api = Api(request.app.state.api, token.strip())
    try:
        view = await api.get("/view", limit=1)
        if not view.ok:
            why = (
                "This token is not known, or was revoked or has expired. Check it with "
                "your alliance's administrator."
                if view.status == 401
                else f"Signing in did not work: {view.reason}"
            )
            return _form(request, target, why, 401 if view.status == 401 else view.status)
        org_id = str(view.body["org"])
        directory = await api.get("/directory")
    finally:
        await api.close()
    org: dict[str, str] = next(
        (o for o in directory.body.get("organisations", []) if o["id"] == org_id), {}
    )
    session = sessions(request).new(
        token.strip(), org_id, str(org.get("name", org_id)), str(org.get("kind", ""))
    )
    response = see_other(target or home_of(session.kind))
    response.set_cookie(
        COOKIE,
        sessions(request).seal(session),
        max_age=sessions(request).max_age,
        path="/app",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/app")
    return response


@router.post("/sign-out")
async def sign_out(page: FormPageOf) -> Response:
    response = render(
        page.request,
        "problem.html",
        title="Signed out",
        message="You are signed out. The token is no longer kept in this browser.",
        signed_out=True,
    )
    response.delete_cookie(COOKIE, path="/app", httponly=True, samesite="strict")
    return response
