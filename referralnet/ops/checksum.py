"""A checksum of one view's content, to prove a rebuilt view equals the one it replaces.

Each table's rows are rendered as text in primary-key order (so the order in which rows
were inserted does not matter) and hashed; the table digests are hashed together in a
fixed table order. Tracking tables (positions, applied, parked dead letters) are left
out: they record how the view was built, not what it says. Time zone and float output are
pinned, so the text form of a row does not depend on the session.
"""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg import AsyncConnection, sql

from views.schema import VIEW_TABLES

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "referrals": ("referral_id",),
    "sessions": ("session_id",),
    "activities": ("referral_id", "activity_id"),
    "outcomes": ("event_id",),
    "timeline": ("event_id", "type"),
}


async def table_digests(conn: AsyncConnection[Any], schema: str) -> dict[str, tuple[int, str]]:
    """(row count, md5 of the rows in key order) per view table, from one snapshot."""
    async with conn.transaction():
        # One snapshot for all tables, so a view being written to hashes consistently.
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return await digests_in_transaction(conn, schema)


async def digests_in_transaction(
    conn: AsyncConnection[Any], schema: str
) -> dict[str, tuple[int, str]]:
    """``table_digests`` inside the caller's transaction (replay's swap holds locks)."""
    await conn.execute("SET LOCAL timezone = 'UTC'")
    await conn.execute("SET LOCAL extra_float_digits = 1")
    digests: dict[str, tuple[int, str]] = {}
    for table in VIEW_TABLES:
        keys = sql.SQL(", ").join(sql.Identifier("t", k) for k in PRIMARY_KEYS[table])
        cur = await conn.execute(
            sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY {})), '') "
                "FROM {}.{} t"
            ).format(keys, sql.Identifier(schema), sql.Identifier(table))
        )
        row = await cur.fetchone()
        assert row is not None
        digests[table] = (int(row[0]), str(row[1]))
    return digests


def combine(digests: dict[str, tuple[int, str]]) -> str:
    """One hex digest from the per-table digests (tables in ``VIEW_TABLES`` order)."""
    combined = "\n".join(f"{t}:{n}:{d}" for t, (n, d) in digests.items())
    return hashlib.sha256(combined.encode()).hexdigest()[:32]


async def view_checksum(conn: AsyncConnection[Any], schema: str) -> str:
    """The checksum of one view schema (see the module docstring)."""
    return combine(await table_digests(conn, schema))
