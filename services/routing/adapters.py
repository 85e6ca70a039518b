"""Routing's PostgreSQL side: the case table and the capacity ledger beside its stream.

Both tables are projections of routing's stream (and, for closings, of outcomes'):
written here in the append's transaction from the decision's ``after`` state and
caseload changes; ``referralnet projections verify`` recomputes them from the stores.
Locks are taken case first, then capacity rows in service name order, so concurrent
decisions never deadlock and the ledger's CHECK never lets a place be taken twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from domain import lifecycle
from eventstore.recorder import PostgresRecorder
from eventstore.records import StoredEvent
from schemas.events.base import EventModel
from schemas.events.referral import ReferralClosed, ReferralCreated
from schemas.registry import decode
from services import existence
from services.routing.domain import Candidate, Decision, RoutingCase, from_lifecycle
from services.routing.store import STORE, sync_capacity
from services.routing.unit_of_work import RoutingWork

LOCK = "SELECT 1 FROM routing.cases WHERE referral_id = %s FOR UPDATE"
CASE = (
    "SELECT c.referral_id, c.area, c.needs, c.age_band, c.status, c.service_org, c.tried, "
    "c.holds_place, c.referred_at, c.urgency, c.referrer_org, "
    "coalesce((SELECT max(e.version) FROM routing.events e "
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

    async def case(
        self, referral_id: UUID, *, lock: bool = True, versioned: bool = True
    ) -> RoutingCase | None:
        # The lock by a statement of its own: one that waited for the row lock reads the
        # row as the writer it waited for left it, but the stream's version (a subquery)
        # as it was before; unless the version does not matter, read after locking.
        async with self.conn.cursor(row_factory=dict_row) as cur:
            if lock and not versioned:
                await cur.execute(
                    CASE + " WHERE c.referral_id = %s FOR UPDATE OF c", (referral_id,)
                )
            elif lock:
                async with self.conn.pipeline():
                    await self.conn.execute(LOCK, (referral_id,))
                    await cur.execute(CASE + " WHERE c.referral_id = %s", (referral_id,))
            else:
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
        return await existence.known_to_intake(self.conn, referral_id)

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


async def holder(conn: AsyncConnection[Any], referral_id: UUID) -> tuple[str, str] | None:
    """(service_org, status) of the case now, or None if routing has not routed it (for
    ``services.existence``: other services ask routing, not its table)."""
    cur = await conn.execute(
        "SELECT service_org, status FROM routing.cases WHERE referral_id = %s", (referral_id,)
    )
    row = await cur.fetchone()
    return (str(row[0]), str(row[1])) if row and row[0] else None


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


# --- the tables rebuilt from the stores (``referralnet projections``) --------------------


async def _stream_events(
    conn: AsyncConnection[Any], schema: str, types: Sequence[str] | None
) -> list[tuple[UUID, EventModel]]:
    cur = await conn.execute(
        sql.SQL(
            "SELECT stream_id, type, schema_version, data FROM {}.events "
            "WHERE %s::text[] IS NULL OR type = ANY(%s) ORDER BY stream_id, version"
        ).format(sql.Identifier(schema)),
        (types, types),
    )
    return [(r[0], decode(r[1], r[2], r[3])) for r in await cur.fetchall()]


async def cases_from_stores(conn: AsyncConnection[Any]) -> dict[UUID, RoutingCase]:
    """Every case as the stores say: the referral's lifecycle folded over intake's
    ``referral-created``, routing's own events and outcomes' ``referral-closed``."""
    created: dict[UUID, ReferralCreated] = {}
    for rid, model in await _stream_events(conn, "intake", [ReferralCreated.event_type]):
        if isinstance(model, ReferralCreated):
            created.setdefault(rid, model)
    own: dict[UUID, list[EventModel]] = {}
    for rid, model in await _stream_events(conn, "routing", None):
        own.setdefault(rid, []).append(model)
    closed = await _stream_events(conn, "outcomes", [ReferralClosed.event_type])
    for rid, model in closed:
        own.setdefault(rid, []).append(model)
    cases = {}
    for rid, events in own.items():
        if rid not in created or not any(not isinstance(e, ReferralClosed) for e in events):
            continue  # routing never opened it (a closing of a referral routing never saw)
        state = lifecycle.fold([lifecycle.as_event(created[rid])])
        state = lifecycle.fold((lifecycle.as_event(e) for e in events), state)
        version = sum(not isinstance(e, ReferralClosed) for e in events)
        cases[rid] = from_lifecycle(created[rid], state, version)
    return cases


async def cases_in_table(conn: AsyncConnection[Any]) -> dict[UUID, RoutingCase]:
    """Every case as ``routing.cases`` holds it now."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CASE)
        return {row["referral_id"]: case_from_row(row) for row in await cur.fetchall()}


@dataclass(frozen=True)
class Caseload:
    """A service's places taken, as the ledger says (or as the cases say)."""

    caseload: int


async def caseloads_from_stores(conn: AsyncConnection[Any]) -> dict[str, Caseload]:
    """Places taken per service: the cases, from the stores, that hold one there."""
    cur = await conn.execute("SELECT service_org FROM routing.capacity")
    loads = {row[0]: 0 for row in await cur.fetchall()}
    for case in (await cases_from_stores(conn)).values():
        if case.holds_place and case.service_org:
            loads[case.service_org] = loads.get(case.service_org, 0) + 1
    return {org: Caseload(n) for org, n in loads.items()}


async def caseloads_in_table(conn: AsyncConnection[Any]) -> dict[str, Caseload]:
    cur = await conn.execute("SELECT service_org, caseload FROM routing.capacity")
    return {row[0]: Caseload(row[1]) for row in await cur.fetchall()}


async def write_cases(conn: AsyncConnection[Any], cases: dict[UUID, RoutingCase]) -> None:
    """Make ``routing.cases`` say ``cases`` (routing's writers wait meanwhile)."""
    await conn.execute("LOCK TABLE routing.cases IN EXCLUSIVE MODE")
    await conn.execute("DELETE FROM routing.cases WHERE NOT referral_id = ANY(%s)", (list(cases),))
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO routing.cases (referral_id, area, needs, age_band, urgency, "
            "referrer_org, status, service_org, tried, holds_place, referred_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
            "ON CONFLICT (referral_id) DO UPDATE SET status = EXCLUDED.status, "
            "service_org = EXCLUDED.service_org, tried = EXCLUDED.tried, "
            "holds_place = EXCLUDED.holds_place",
            [
                (c.referral_id, c.area, list(c.needs), c.age_band, c.urgency, c.referrer_org,
                 c.status, c.service_org, list(c.tried), c.holds_place, c.referred_at)
                for c in cases.values()
            ],
        )  # fmt: skip


async def write_caseloads(conn: AsyncConnection[Any], loads: dict[str, Caseload]) -> None:
    """Set each service's caseload in the ledger (routing's writers wait meanwhile)."""
    await conn.execute("LOCK TABLE routing.capacity IN EXCLUSIVE MODE")
    async with conn.cursor() as cur:
        await cur.executemany(
            "UPDATE routing.capacity SET caseload = %s WHERE service_org = %s",
            [(load.caseload, org) for org, load in loads.items()],
        )
