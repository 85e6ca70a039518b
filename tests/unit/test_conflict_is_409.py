"""A handler that keeps losing the race for a stream answers 409, never a 5xx."""

from __future__ import annotations

from uuid import uuid4

from fastapi import FastAPI
from fastapi.testclient import TestClient

from eventstore.recorder import VersionConflict
from web import errors


def test_a_version_conflict_that_reaches_the_api_is_409_with_retry_after() -> None:
    app = FastAPI()
    errors.install(app)

    @app.post("/raced")
    async def raced() -> None:
        raise VersionConflict(uuid4(), 3, 4)

    response = TestClient(app).post("/raced")
    assert response.status_code == 409
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"] == "conflict"
    assert "changed meanwhile" in response.json()["reason"]
