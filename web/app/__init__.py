"""The partners' web app, served under ``/app`` by the API process (issue 15).

Server-rendered (Jinja2, no JavaScript needed); every page reads and writes through the
JSON API in-process (``web.app.client``), so no rule or query exists twice.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from web.app import auth, casework, referrer, report
from web.app.pages import FormRefused, SignInNeeded, render, to_sign_in
from web.app.session import Sessions


def create_web_app(api: ASGIApp, home: Path) -> FastAPI:
    """The web app for mounting at ``/app`` in front of ``api`` (the gateway app)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.api = api
    app.state.sessions = Sessions.from_home(home)
    app.state.home = home
    for module in (auth, referrer, casework, report):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.exception_handler(SignInNeeded)
    async def _sign_in(_: Request, exc: SignInNeeded) -> Response:
        return to_sign_in(exc.path)

    @app.exception_handler(FormRefused)
    async def _refused(request: Request, _: FormRefused) -> HTMLResponse:
        return render(
            request,
            "problem.html",
            403,
            title="This form was not accepted",
            message="The form came without this sign-in's security code (it may be from an "
            "older page or another site). Nothing was changed. Go back, reload the page "
            "and try again.",
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_address(request: Request, _: RequestValidationError) -> HTMLResponse:
        # e.g. /app/referrals/not-an-id: no such page (the API's 422s reach forms instead)
        return render(
            request,
            "problem.html",
            404,
            title="Page not found",
            message="This address names no page of the app: check the link.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        return render(
            request,
            "problem.html",
            exc.status_code,
            title="Page not found" if exc.status_code == 404 else "This did not work",
            message=str(exc.detail),
        )

    @app.exception_handler(Exception)
    async def _failed(request: Request, exc: Exception) -> HTMLResponse:
        return render(
            request,
            "problem.html",
            500,
            title="Something went wrong",
            message="The page failed; nothing was stored by it. Try again in a moment.",
        )

    return app
