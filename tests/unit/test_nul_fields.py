"""A NUL inside a JSON string is refused with 422 naming the field, on every JSON route.

PostgreSQL cannot store NUL in text, so ``web.limits`` refuses it before any work; the
partner must be told which field held it, as for any other invalid field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from referralnet.gateway import create_app


def _json_body_routes(schema: dict[str, Any]) -> list[tuple[str, str]]:
    routes = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                routes.append((method, path.replace("{", "").replace("}", "")))
    return routes


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    home: Path = tmp_path_factory.mktemp("nul-home")
    # No lifespan (no `with`): the limits answer before the pool or a token is needed.
    return TestClient(create_app("postgresql://127.0.0.1:1/none", home))


def test_every_json_route_names_the_field_holding_a_nul(client: TestClient) -> None:
    routes = _json_body_routes(client.app.openapi())  # type: ignore[attr-defined]
    assert len(routes) >= 8, routes  # referrals, accept, decline, sessions, outcomes ...
    body = '{"person": {"name": "Alex", "aliases": ["ok", "A\\u0000B"]}, "area": "north"}'
    for method, path in routes:
        response = client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (method, path, response.text)
        problem = response.json()
        assert [f["field"] for f in problem["fields"]] == ["person.aliases.1"], problem
        assert "NUL" in problem["fields"][0]["reason"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"area": "nor\\u0000th"}', "area"),
        ('{"items": [1, {"note": "\\u0000"}]}', "items.1.note"),
        ('{"a\\u0000b": 1}', "a\\u0000b"),
        ('["x", "\\u0000"]', "1"),
        ('"\\u0000"', "body"),
    ],
)
def test_the_path_is_given_as_validation_errors_give_theirs(
    client: TestClient, body: str, field: str
) -> None:
    response = client.post("/referrals", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == field


def test_an_escaped_backslash_before_u0000_is_no_nul(client: TestClient) -> None:
    body = '{"area": "C:\\\\u0000"}'  # the text C:\u0000, no NUL in it
    response = client.post("/referrals", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 401  # past the limits: it is the token that is missing


def test_a_body_over_the_limit_is_still_413(client: TestClient) -> None:
    response = client.post(
        "/referrals", content=b"{" + b" " * 70_000 + b"}",
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 413
