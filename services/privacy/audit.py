"""Every read of personal data, recorded: who, when, which referral, which fields, why.

The audit log is an event store of its own (schema ``audit``): append-only by trigger,
hash-chained per referral, sealed and checkpointed into the signed anchor with the
service stores, so ``referralnet verify --all`` detects an edited, inserted, reordered
or deleted read exactly as it does for journey events (``eventstore.chain``). It has no
outbox: reads are never published (who looked at whom is itself sensitive).

One record per read, written before the details are returned: if it cannot be written,
nothing is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql

from eventstore.records import NewEvent
from eventstore.rows import ROW_COLUMNS, ROW_TYPES
from eventstore.store import EVENT_COLUMNS, EventStore
from infra.migrations.catalog import AUDIT as AUDIT_COMPONENT
from infra.migrations.runner import Target, migrate

READ_TYPE = "person-details-read"

_APPEND_ONLY = (
    "WITH ins AS (INSERT INTO {s}.events ("
    + ", ".join(ROW_COLUMNS)
    + ") OVERRIDING SYSTEM VALUE SELECT * FROM unnest("
    + ", ".join(f"%s::{t}[]" for t in ROW_TYPES)
    + ") RETURNING "
    + EVENT_COLUMNS
    + ") SELECT ins.*, %s::text AS channel FROM ins ORDER BY position"
)
"""The event store's append without its outbox rows and relay wake-up."""


class AuditStore(EventStore):
    """An event store whose events are never relayed anywhere."""

    def __init__(self) -> None:
        super().__init__("audit", "/services/privacy/audit")
        self._append = sql.SQL(_APPEND_ONLY).format(s=sql.Identifier("audit"))


AUDIT = AuditStore()


async def create(conn: AsyncConnection[Any]) -> None:
    """The audit store (idempotent)."""
    await AUDIT.create(conn)
    await migrate(conn, Target(AUDIT_COMPONENT, "audit"))


async def record_read(
    conn: AsyncConnection[Any],
    *,
    referral_id: UUID,
    reader: str,
    fields: list[str],
    purpose: str,
    at: datetime | None = None,
) -> None:
    """Append one read to the referral's audit stream (its own transaction, or a
    savepoint of the caller's). Readers of one referral queue on an advisory lock, so
    each read extends the chain head it saw."""
    event = NewEvent(
        type=READ_TYPE,
        schema_version=1,
        data={"fields": fields, "purpose": purpose},
        actor=reader,
        occurred_at=at or datetime.now(UTC),
        correlation_id=referral_id,
    )
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('audit'), hashtext(%s))", (str(referral_id),)
        )
        await AUDIT.extend(conn, referral_id, [event])


@dataclass(frozen=True)
class Access:
    """One recorded read."""

    read_at: datetime
    reader: str
    referral_id: UUID
    fields: tuple[str, ...]
    purpose: str
    position: int

    def as_json(self) -> dict[str, Any]:
        return {
            "read_at": self.read_at.isoformat(),
            "reader": self.reader,
            "referral_id": str(self.referral_id),
            "fields": list(self.fields),
            "purpose": self.purpose,
            "position": self.position,
        }


async def accesses(
    conn: AsyncConnection[Any],
    *,
    referral_id: UUID | None = None,
    reader: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[Access]:
    """Recorded reads matching every filter given, oldest first; ``after`` a position
    (the last one of a previous page) pages through."""
    cur = await conn.execute(
        "SELECT occurred_at, actor, stream_id, data, position FROM audit.events "
        "WHERE type = %s AND position > %s "
        "AND (%s::uuid IS NULL OR stream_id = %s::uuid) "
        "AND (%s::text IS NULL OR actor = %s::text) "
        "AND (%s::timestamptz IS NULL OR occurred_at >= %s::timestamptz) "
        "AND (%s::timestamptz IS NULL OR occurred_at < %s::timestamptz) "
        "ORDER BY position LIMIT %s",
        (
            READ_TYPE,
            after,
            referral_id,
            referral_id,
            reader,
            reader,
            since,
            since,
            until,
            until,
            limit,
        ),
    )
    return [
        Access(at, actor, stream, tuple(data.get("fields", ())), str(data.get("purpose")), pos)
        for at, actor, stream, data, pos in await cur.fetchall()
    ]
