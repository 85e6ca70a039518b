"""One PostgreSQL schema per partner organisation: ``view_<org_id>``.

Tables are built for reading (plain SQL answers ``GET /view`` and the report); each
schema also holds its consumer's position, so it can be dropped and rebuilt alone.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import AsyncConnection

from bus.tracking import create_tracking
from infra.migrations.catalog import VIEW
from infra.migrations.runner import Target, migrate

_SAFE = re.compile(r"[^a-z0-9_]")


def schema_name(org_id: str, suffix: str = "") -> str:
    """``view_<org_id>`` with characters PostgreSQL identifiers dislike made safe."""
    return "view_" + _SAFE.sub("_", org_id.lower()) + suffix


async def create_view(conn: AsyncConnection[Any], schema: str) -> None:
    """Create one organisation's view tables and tracking tables (idempotent)."""
    await migrate(conn, Target(VIEW, schema))
    await create_tracking(conn, schema)


VIEW_TABLES = ("referrals", "sessions", "activities", "outcomes", "timeline")
