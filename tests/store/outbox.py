"""What a store's outbox holds, in relay order."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from eventstore.store import EventStore


async def outbox_positions(conn: psycopg.AsyncConnection[Any], store: EventStore) -> list[int]:
    cur = await conn.execute(
        sql.SQL("SELECT event_position FROM {}.outbox ORDER BY id").format(
            sql.Identifier(store.schema)
        )
    )
    return [r[0] for r in await cur.fetchall()]
