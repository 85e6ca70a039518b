"""An unexpected failure still answers JSON with a reason, and never a traceback."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from web import errors


def test_unhandled_exception_becomes_json_500() -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("secret detail: Alex Example, 943 476 5919")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal-error",
        "reason": "the service failed; nothing was stored",
        "fields": [],
    }
    assert "Traceback" not in response.text and "Alex" not in response.text
