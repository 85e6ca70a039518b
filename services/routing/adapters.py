"""Routing's PostgreSQL side: the case table and the capacity ledger beside its stream.

Both tables are projections of routing's stream (and, for closings, of outcomes'):
written here in the append's transaction from the decision's ``after`` state and
caseload changes; ``referralnet projections verify`` recomputes them from the stores.
Locks are taken case first, then capacity rows in service name order, so concurrent
decisions never deadlock and the ledger's CHECK never lets a place be taken twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from eventstore.recorder import PostgresRecorder
from eventstore.records import StoredEvent
from schemas.events.referral import ReferralCreated
from services.existence import known_to_intake
from services.routing.domain import Candidate, Decision, RoutingCase
from services.routing.store import STORE, sync_capacity
from services.routing.unit_of_work import RoutingWork

LOCK = "SELECT 1 FROM routing.cases WHERE referral_id = %s FOR UPDATE"
CASE = (
    "SELECT c.referral_id, c.area, c.needs, c.age_band, c.status, c.service_org, c.tried, "
    "c.holds_place, c.referred_at, coalesce((SELECT max(e.version) FROM routing.events e "
    "WHERE e.stream_id = c.referral_id), 0) AS version FROM routing.cases c"
)
CANDIDATES = (
    "SELECT service_org, areas, needs, min_age, max_age, caseload_limit, caseload "
    "FROM routing.capacity WHERE %s = ANY(areas) ORDER BY service_org FOR UPDATE"
)


def case_from_row(row: dict[str, Any]) -> RoutingCase:
    return RoutingCase(**{**row, "needs": tuple(row["needs"]), "tried": tuple(row["tried"])})


class PostgresRoutingWork:
    """``RoutingWork`` on one connection, inside the unit's transaction."""

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self.conn = conn
        self.recorder = PostgresRecorder(STORE, conn)

    async def open(self, created: ReferralCreated, at: datetime) -> bool:
        cur = await self.conn.execute(
            "INSERT INTO routing.cases (referral_id, area, needs, age_band, urgency, "
            "referrer_org, status, referred_at, updated_at) SELECT %s, %s, %s, %s, "
            "%s, %s, 'new', %s, %s ON CONFLICT (referral_id) DO NOTHING RETURNING 1",
            (
                created.referral_id,
                created.area,
                [str(n) for n in created.needs],
                str(created.age_band),
                str(created.urgency),
                created.referrer_org,
                created.referred_at,
                at,
            ),
        )
        return await cur.fetchone() is not None

    async def case(self, referral_id: UUID) -> RoutingCase | None:
        # The lock by a statement of its own: one that waited for the row lock would read
        # the stream's version as it was before the writer it waited for.
        async with self.conn.cursor(row_factory=dict_row) as cur:
            async with self.conn.pipeline():
                await self.conn.execute(LOCK, (referral_id,))
                await cur.execute(CASE + " WHERE c.referral_id = %s", (referral_id,))
            row = await cur.fetchone()
        return case_from_row(row) if row else None

    async def candidates(self, area: str) -> list[Candidate]:
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(CANDIDATES, (area,))
            rows = await cur.fetchall()
        return [
            Candidate(
                service_org=r["service_org"],
                areas=frozenset(r["areas"]),
                needs=frozenset(r["needs"]),
                min_age=r["min_age"],
                max_age=r["max_age"],
                caseload_limit=r["caseload_limit"],
                caseload=r["caseload"],
            )
            for r in rows
        ]

    async def sync_capacity(self) -> None:
        await sync_capacity(self.conn)

    async def known_to_intake(self, referral_id: UUID) -> bool:
        return await known_to_intake(self.conn, referral_id)

    async def record(
        self, before: RoutingCase, decision: Decision, at: datetime
    ) -> list[StoredEvent]:
        stored = await self.recorder.append(before.referral_id, before.version, decision.events)
        after = decision.after
        await self.conn.execute(
            "UPDATE routing.cases SET status = %s, service_org = %s, tried = %s, "
            "holds_place = %s, updated_at = %s WHERE referral_id = %s",
            (after.status, after.service_org, list(after.tried), after.holds_place, at,
             after.referral_id),
        )  # fmt: skip
        for org, delta in sorted(decision.places.items()):
            if delta:
                await self.conn.execute(
                    "UPDATE routing.capacity SET caseload = caseload + %s WHERE service_org = %s",
                    (delta, org),
                )
        return stored


Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]]


class PostgresUnitOfWork:
    """``UnitOfWork`` over PostgreSQL. ``transaction=False`` when the caller already holds
    one on the connection (the bus consumer writes its position in it; the API's
    deadlock retry wraps it): the unit then runs in the caller's transaction."""

    def __init__(self, connect: Connect, *, transaction: bool = True) -> None:
        self.connect, self.transaction = connect, transaction
        self.retryable = transaction

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[RoutingWork]:
        async with self.connect() as conn:
            if not self.transaction:
                yield PostgresRoutingWork(conn)
                return
            async with conn.transaction():
                yield PostgresRoutingWork(conn)

    def begin(self) -> AbstractAsyncContextManager[RoutingWork]:
        return self._unit()
