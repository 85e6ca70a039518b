"""Fixtures of the bus tests: a counting projection in its own schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from bus.tracking import create_tracking
from tests.bus.test_tracking import CountingProjection


@pytest.fixture
async def projection(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[CountingProjection]:
    p = CountingProjection(schema=f"t_{uuid4().hex[:8]}")
    await create_tracking(conn, p.schema)
    await conn.execute(
        sql.SQL("CREATE TABLE {}.seen (event_id uuid NOT NULL, minutes integer NOT NULL)").format(
            sql.Identifier(p.schema)
        )
    )
    yield p
    await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(p.schema)))
