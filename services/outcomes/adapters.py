"""Outcomes' PostgreSQL side: the case table read and written beside the stream.

The case table (``outcomes.cases`` + ``outcomes.activity_links``) is a projection: the
columns routing's answers set come from the journey log (``projection.CaseProjection``),
the rest from outcomes' own stream, written here in the append's transaction by folding
the new events with ``domain.evolve``, so the table equals the fold by construction;
``referralnet projections verify`` checks it against the stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from directory import store as directory
from directory.model import Activity
from eventstore.recorder import PostgresRecorder
from eventstore.records import StoredEvent
from schemas.events.base import EventModel
from schemas.events.referral import ReferralCreated
from schemas.registry import decode
from services.existence import known_to_intake, routing_holder
from services.outcomes.domain import ActivityLink, Case, Decision, Rules, evolve
from services.outcomes.routing_answers import hear, opened
from services.outcomes.store import STORE
from services.outcomes.unit_of_work import Casework

CASE = (
    "SELECT c.referral_id, c.referrer_org, c.referred_at, c.service_org, c.status, "
    "c.routed_at, c.accepted_at, c.first_contact_at, c.overdue_flagged, c.closed_at, "
    "c.routed_seen_at, "
    "coalesce((SELECT max(e.version) FROM outcomes.events e "
    "WHERE e.stream_id = c.referral_id), 0) AS version, "
    "coalesce((SELECT jsonb_object_agg(l.activity_id, jsonb_build_array(l.provider_org, "
    "l.referred_at)) FROM outcomes.activity_links l "
    "WHERE l.referral_id = c.referral_id), '{}') AS activities "
    "FROM outcomes.cases c"
)
"""A case and its stream's head in one round trip (both primary-key lookups)."""

LOCK = "SELECT 1 FROM outcomes.cases WHERE referral_id = %s FOR UPDATE"

WAITING = (
    "SELECT referral_id FROM outcomes.cases "
    "WHERE first_contact_at IS NULL AND closed_at IS NULL AND NOT overdue_flagged "
    "AND status IN ('routed', 'accepted') "
    "AND ((routed_at AT TIME ZONE %(zone)s) + make_interval(days => %(days)s)) "
    "AT TIME ZONE %(zone)s < %(now)s "
    "AND ((routed_seen_at AT TIME ZONE %(zone)s) + make_interval(days => %(days)s)) "
    "AT TIME ZONE %(zone)s < %(now)s "
    "ORDER BY routed_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)
"""Candidates for the SLA timer, on the ``cases_waiting`` index. Days are added on the
alliance's calendar, not the database session's TimeZone."""


def case_from_row(row: dict[str, Any]) -> Case:
    """A ``Case`` from a row of ``CASE``."""
    links = {
        activity: ActivityLink(provider, datetime.fromisoformat(at))
        for activity, (provider, at) in row.pop("activities").items()
    }
    return Case(**row, activities=links)


async def read_case(conn: AsyncConnection[Any], referral_id: UUID, lock: bool) -> Case | None:
    """The case, locked for this transaction if ``lock``: the lock serialises outcomes'
    writers of the referral (and keeps the SLA timer's ``SKIP LOCKED`` off it).

    The lock is taken by a statement of its own, before the read: a statement that waited
    for a row lock still reads with the snapshot it started with, so a single
    ``SELECT ... FOR UPDATE`` would see the stream's head and activities as they were
    before the writer it waited for. Pipelined, the two cost one round trip.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        if lock:
            async with conn.pipeline():
                await conn.execute(LOCK, (referral_id,))
                await cur.execute(CASE + " WHERE c.referral_id = %s", (referral_id,))
        else:
            await cur.execute(CASE + " WHERE c.referral_id = %s", (referral_id,))
        row = await cur.fetchone()
    return case_from_row(row) if row else None


async def write_case(conn: AsyncConnection[Any], before: Case, after: Case) -> None:
    """Write what outcomes' own events changed from ``before`` to ``after``."""
    own = ("first_contact_at", "overdue_flagged", "closed_at", "status")
    if any(getattr(before, k) != getattr(after, k) for k in own):
        await conn.execute(
            "UPDATE outcomes.cases SET first_contact_at = %s, overdue_flagged = %s, "
            "closed_at = %s, status = %s WHERE referral_id = %s",
            (
                after.first_contact_at,
                after.overdue_flagged,
                after.closed_at,
                after.status,
                after.referral_id,
            ),
        )
    for activity_id, link in after.activities.items():
        if activity_id not in before.activities:
            await conn.execute(
                "INSERT INTO outcomes.activity_links (referral_id, activity_id, provider_org, "
                "referred_at) VALUES (%s, %s, %s, %s)",
                (after.referral_id, activity_id, link.provider_org, link.referred_at),
            )


class PostgresCasework:
    """``Casework`` on one connection (in the unit's transaction when writing)."""

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self.conn = conn
        self.recorder = PostgresRecorder(STORE, conn)

    async def case(self, referral_id: UUID, *, lock: bool = False) -> Case | None:
        return await read_case(self.conn, referral_id, lock)

    async def record(self, case: Case, decision: Decision) -> list[StoredEvent]:
        stored = await self.recorder.append(case.referral_id, case.version, decision.events)
        await write_case(self.conn, case, decision.after)
        return stored

    async def activity(self, activity_id: str) -> Activity | None:
        return await directory.activity(self.conn, activity_id)

    async def known_to_intake(self, referral_id: UUID) -> bool:
        return await known_to_intake(self.conn, referral_id)

    async def routing_holder(self, referral_id: UUID) -> tuple[str, str] | None:
        return await routing_holder(self.conn, referral_id)

    async def waiting(self, now: datetime, rules: Rules, limit: int) -> list[UUID]:
        params = {"days": rules.sla_days, "zone": rules.zone.key, "now": now, "limit": limit}
        cur = await self.conn.execute(WAITING, params)
        return [row[0] for row in await cur.fetchall()]


Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]]
"""Where connections come from: ``pool.connection``, or one connection already held."""


class PostgresUnitOfWork:
    """``UnitOfWork`` over PostgreSQL: a connection per unit, a transaction if writing."""

    def __init__(self, connect: Connect) -> None:
        self.connect = connect

    @asynccontextmanager
    async def _unit(self, write: bool) -> AsyncIterator[Casework]:
        async with self.connect() as conn:
            if not write:
                yield PostgresCasework(conn)
                return
            async with conn.transaction():
                yield PostgresCasework(conn)

    def begin(self, *, write: bool = True) -> AbstractAsyncContextManager[Casework]:
        return self._unit(write)


# --- the case table rebuilt from the stores (``referralnet projections``) ---------------


async def _typed(
    conn: AsyncConnection[Any], schema: str, models: Sequence[type[EventModel]] | None
) -> list[tuple[UUID, datetime, EventModel]]:
    """(stream, occurred_at, typed model) of the ``models`` (None: all) in ``schema``'s
    store, each stream in version order."""
    types = None if models is None else sorted({m.event_type for m in models})
    cur = await conn.execute(
        sql.SQL(
            "SELECT stream_id, occurred_at, type, schema_version, data FROM {}.events "
            "WHERE %s::text[] IS NULL OR type = ANY(%s) ORDER BY stream_id, version"
        ).format(sql.Identifier(schema)),
        (types, types),
    )
    return [(r[0], r[1], decode(r[2], r[3], r[4])) for r in await cur.fetchall()]


def _handled(dispatch: Any) -> list[type[EventModel]]:
    """The event classes a ``singledispatch`` fold has a clause for."""
    return [k for k in dispatch.registry if k is not object and k is not EventModel]


async def cases_from_stores(conn: AsyncConnection[Any]) -> dict[UUID, Case]:
    """Every case as the stores say it must be: opened by intake's ``referral-created``,
    moved by routing's answers (``domain.hear``), then outcomes' own events
    (``domain.evolve``). ``routed_seen_at`` is when outcomes heard: not in any store."""
    cases: dict[UUID, Case] = {}
    for rid, _, created in await _typed(conn, "intake", [ReferralCreated]):
        assert isinstance(created, ReferralCreated)
        cases.setdefault(rid, opened(rid, created.referrer_org, created.referred_at))
    for rid, at, model in await _typed(conn, "routing", _handled(hear)):
        if rid in cases:
            cases[rid] = hear(model, cases[rid], at)
    own: dict[UUID, list[EventModel]] = {}
    for rid, _, model in await _typed(conn, "outcomes", None):  # each one is a version
        own.setdefault(rid, []).append(model)
    for rid, models in own.items():
        if rid in cases:
            cases[rid] = evolve(cases[rid], models)
    return cases


async def cases_in_table(conn: AsyncConnection[Any]) -> dict[UUID, Case]:
    """Every case as ``outcomes.cases`` and ``outcomes.activity_links`` hold it now."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CASE + " ORDER BY c.referral_id")
        return {row["referral_id"]: case_from_row(row) for row in await cur.fetchall()}


async def write_cases(conn: AsyncConnection[Any], cases: dict[UUID, Case]) -> None:
    """Make the case table say ``cases`` (in the caller's transaction), keeping each
    row's ``routed_seen_at`` (new rows: the routing time). Writers wait meanwhile."""
    await conn.execute("LOCK TABLE outcomes.cases, outcomes.activity_links IN EXCLUSIVE MODE")
    await conn.execute("DELETE FROM outcomes.activity_links")
    await conn.execute("DELETE FROM outcomes.cases WHERE NOT referral_id = ANY(%s)", (list(cases),))
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO outcomes.cases (referral_id, referrer_org, referred_at, service_org, "
            "status, routed_at, routed_seen_at, accepted_at, first_contact_at, overdue_flagged, "
            "closed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (referral_id) DO UPDATE SET referrer_org = EXCLUDED.referrer_org, "
            "referred_at = EXCLUDED.referred_at, service_org = EXCLUDED.service_org, "
            "status = EXCLUDED.status, routed_at = EXCLUDED.routed_at, "
            "accepted_at = EXCLUDED.accepted_at, first_contact_at = EXCLUDED.first_contact_at, "
            "overdue_flagged = EXCLUDED.overdue_flagged, closed_at = EXCLUDED.closed_at",
            [
                (
                    c.referral_id,
                    c.referrer_org,
                    c.referred_at,
                    c.service_org,
                    c.status,
                    c.routed_at,
                    c.routed_at,
                    c.accepted_at,
                    c.first_contact_at,
                    c.overdue_flagged,
                    c.closed_at,
                )
                for c in cases.values()
            ],
        )
        await cur.executemany(
            "INSERT INTO outcomes.activity_links (referral_id, activity_id, provider_org, "
            "referred_at) VALUES (%s, %s, %s, %s)",
            [
                (c.referral_id, activity, link.provider_org, link.referred_at)
                for c in cases.values()
                for activity, link in c.activities.items()
            ],
        )
