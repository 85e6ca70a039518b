"""A fresh, empty database per test on the embedded or the external PostgreSQL 15.

The session's ``database_url`` is shared by every test using it; a test that reads a
whole table (rebuilding a projection, verifying it) needs one nobody else writes to.
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from psycopg import sql

from tests.conftest import EXTERNAL_URL, Stack, _external_reachable

BACKENDS = [
    pytest.param("embedded", marks=pytest.mark.infra),
    pytest.param("external", marks=pytest.mark.infra),
]


def fresh_database(kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of a new database on ``kind`` ("embedded" or "external")."""
    name = f"f_{uuid.uuid4().hex[:10]}"
    if kind == "embedded":
        stack: Stack = request.getfixturevalue("stack")
        return stack.database.create_database(name)
    if not _external_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"external PostgreSQL at {EXTERNAL_URL} is not reachable on CI")
        pytest.skip(f"external PostgreSQL at {EXTERNAL_URL} is not reachable")
    with psycopg.connect(EXTERNAL_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return EXTERNAL_URL.rsplit("/", 1)[0] + f"/{name}"
