"""A throwaway event store per test, and a look at its outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from eventstore.store import EventStore


@pytest.fixture
async def store(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[EventStore]:
    s = EventStore(f"s_{uuid4().hex[:8]}", "/services/test")
    await s.create(conn)
    yield s
    await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s.schema)))
