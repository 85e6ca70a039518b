"""Connection pools, always in autocommit mode.

With autocommit every write happens inside an explicit ``conn.transaction()`` block that
commits before the block ends. Without it, a query before the block opens an implicit
transaction that commits only when the pooled connection is handed back: in FastAPI that
is after the response was sent, so a partner's next request could miss what the previous
one had just been told was stored.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


def connection_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 4
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """An unopened pool (``await pool.open()`` or ``async with``) of autocommit connections."""
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True},
    )
