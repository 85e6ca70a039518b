"""``referralnet access-log``: who read whose personal details (the audit store).

The same records as ``GET /audit/access``, read straight from PostgreSQL by an operator
(who holds the database, so needs no API token)."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

from psycopg import AsyncConnection
from rich.console import Console
from rich.table import Table

from services.privacy.audit import Access, accesses


async def access_log(
    url: str,
    *,
    referral_id: UUID | None,
    reader: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[Access]:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        return await accesses(
            conn, referral_id=referral_id, reader=reader, since=since, until=until, limit=limit
        )


def show(console: Console, found: list[Access], as_json: bool) -> None:
    """Print the reads, oldest first (JSON: a list of objects)."""
    if as_json:
        print(json.dumps([a.as_json() for a in found], indent=2))
        return
    table = Table("read at (UTC)", "reader", "referral", "fields", "why")
    for a in found:
        table.add_row(
            a.read_at.isoformat(timespec="seconds"),
            a.reader,
            str(a.referral_id),
            ", ".join(a.fields),
            a.purpose,
        )
    console.print(table)
    console.print(f"{len(found)} reads")
