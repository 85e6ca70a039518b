"""Applies one organisation's topic to its view schema, a whole batch at a time.

The distributor already decided what this organisation may see, so the projection is
the same for every role: it records what arrives. A batch is folded in memory into
rows per table and one change per referral, then written with a handful of set-based
statements (``unnest``) in one pipeline, whatever its size: per-event statements were
what limited both the live views and ``replay``. ``apply_batches`` only hands over
events not applied before, so the additions below happen once per event.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, assert_never
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from bus.tracking import ORG_SEQUENCE, Outgoing
from domain import lifecycle
from domain.lifecycle import LifecycleEvent, Referral, Status
from schemas.envelope import CloudEvent
from schemas.events import (
    ActivityAttended,
    ActivityReferred,
    ConsentWithdrawn,
    EventModel,
    FirstContactMade,
    FirstContactOverdue,
    OutcomeRecorded,
    PersonErased,
    ReferralAccepted,
    ReferralClosed,
    ReferralCreated,
    ReferralDeclined,
    ReferralEscalated,
    ReferralRouted,
    SessionHeld,
)

HANDLES: frozenset[type[EventModel]] = frozenset(lifecycle.EVENT_CLASSES)
"""Every journey event: each is folded into its referral's row and added to the timeline
(some also add rows: see ``ViewProjection._rows_of``)."""

IGNORES: frozenset[type[EventModel]] = frozenset()


FIRST_STATUS = str(lifecycle.next_status(None, ReferralCreated))
"""The status a row starts with (the lifecycle's, after ``referral-created``)."""

_UNMOVED: tuple[Status, ...] = tuple(Status)


@functools.cache
def _moved(moves: tuple[Status, ...], event_class: type[EventModel]) -> tuple[Status, ...]:
    """Where each stored status ends up once an event of ``event_class`` follows ``moves``
    (cached: there are few distinct paths, and this runs for most events of a batch)."""
    return tuple(lifecycle.next_status(now, event_class) or now for now in moves)


@functools.cache
def _changed(moves: tuple[Status, ...]) -> dict[str, str] | None:
    """``{stored status: new status}`` for the statuses ``moves`` changes; None: none
    (cached like :func:`_moved`: every referral of a batch shares a few paths)."""
    changed = {str(k): str(v) for k, v in zip(Status, moves, strict=True) if k is not v}
    return changed or None


@dataclass
class ReferralChange:
    """What a batch's events do to one ``referrals`` row, in their order.

    ``state`` is the lifecycle folded over the batch alone (the row holds what came
    before): its counters are added to the row's, its milestones replace the row's
    where set. The status depends on the stored one (a session moves only an accepted
    referral on), so ``moves`` follows every status the row may hold.
    """

    state: Referral = lifecycle.NEW
    moves: tuple[Status, ...] | None = None  # per stored status (Status order); None: none

    def fold(self, event: CloudEvent, model: LifecycleEvent) -> None:
        """Add one event (its time: the envelope's ``ce_time``)."""
        self.state = lifecycle.apply(self.state, model, at=event.time)
        # follow the event on every status the stored row might have (stored → after);
        # the rules are the lifecycle's, so none is written out here
        if type(model) in lifecycle.STATUS_TRANSITIONS:
            self.moves = _moved(self.moves or _UNMOVED, type(model))

    def status_moves(self) -> Jsonb | None:
        """``{stored status: new status}`` for the statuses the batch changes; None: none."""
        changed = None if self.moves is None else _changed(self.moves)
        return None if changed is None else Jsonb(changed)

    def columns(self) -> tuple[Any, ...]:
        """This change's values, in ``CHANGE_COLUMNS`` order after ``referral_id``."""
        st = self.state
        return (
            self.status_moves(),
            st.holder_changes > 0,
            st.parties.service_org,
            st.routed_at,
            st.accepted_at,
            st.first_contact_at,
            st.closed_at,
            None if st.close_reason is None else str(st.close_reason),
            st.overdue,
            st.declines,
            st.sessions,
            st.minutes,
            st.activities,
            st.attendances,
            st.outcomes,
            st.last_event_at,
        )


CHANGE_COLUMNS = (
    ("referral_id", "uuid"),
    ("moves", "int4"),  # index into the batch's list of status moves (None: none)
    ("set_service", "bool"),
    ("service_org", "text"),
    ("routed_at", "timestamptz"),
    ("accepted_at", "timestamptz"),
    ("first_contact_at", "timestamptz"),
    ("closed_at", "timestamptz"),
    ("close_reason", "text"),
    ("overdue", "bool"),
    ("declines", "int4"),
    ("sessions", "int4"),
    ("minutes", "int4"),
    ("activities", "int4"),
    ("attendances", "int4"),
    ("outcomes", "int4"),
    ("last_event_at", "timestamptz"),
)

_UPDATE_REFERRALS = (
    "UPDATE {s}.referrals AS r SET "
    # the status rules are domain.lifecycle's: the batch sends, per referral, where each
    # stored status goes; nothing is decided in SQL
    # (ReferralChange.status_moves): the distinct moves once, as one JSON array, and per
    # referral its index; a jsonb per row cost more to escape into the array than the
    # whole statement took to run
    "status = COALESCE(%s::jsonb -> c.moves ->> r.status, r.status), "
    "service_org = CASE WHEN c.set_service THEN c.service_org ELSE r.service_org END, "
    "routed_at = COALESCE(c.routed_at, r.routed_at), "
    "accepted_at = COALESCE(c.accepted_at, r.accepted_at), "
    "first_contact_at = COALESCE(c.first_contact_at, r.first_contact_at), "
    "closed_at = COALESCE(c.closed_at, r.closed_at), "
    "close_reason = COALESCE(c.close_reason, r.close_reason), "
    "overdue = r.overdue OR c.overdue, "
    "declines = r.declines + c.declines, sessions = r.sessions + c.sessions, "
    "session_minutes = r.session_minutes + c.minutes, "
    "activities = r.activities + c.activities, attendances = r.attendances + c.attendances, "
    "outcomes = r.outcomes + c.outcomes, "
    "last_event_at = GREATEST(r.last_event_at, c.last_event_at) "
    "FROM unnest("
    + ", ".join(f"%s::{t}[]" for _, t in CHANGE_COLUMNS)
    + ") AS c("
    + ", ".join(n for n, _ in CHANGE_COLUMNS)
    + ") WHERE r.referral_id = c.referral_id"
)
_INSERT_REFERRALS = (
    "INSERT INTO {s}.referrals (referral_id, person_ref, referrer_org, referrer_kind, needs, "
    "urgency, area, age_band, status, referred_at, last_event_at) "
    "SELECT c.id, c.person_ref, c.referrer_org, c.referrer_kind, "
    "ARRAY(SELECT jsonb_array_elements_text(c.needs)), c.urgency, c.area, c.age_band, "
    "%s::text, c.referred_at, c.referred_at FROM unnest(%s::uuid[], %s::text[], %s::text[], "
    "%s::text[], %s::jsonb[], %s::text[], %s::text[], %s::text[], %s::timestamptz[]) "
    "AS c(id, person_ref, referrer_org, referrer_kind, needs, urgency, area, age_band, "
    "referred_at) ON CONFLICT (referral_id) DO NOTHING"
)
_INSERT_SESSIONS = (
    "INSERT INTO {s}.sessions (session_id, referral_id, kind, minutes, mode, held_at) "
    "SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::int4[], %s::text[], "
    "%s::timestamptz[]) ON CONFLICT DO NOTHING"
)
_INSERT_ACTIVITIES = (
    "INSERT INTO {s}.activities (referral_id, activity_id, provider_org, activity_kind, "
    "referred_at) SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], "
    "%s::timestamptz[]) ON CONFLICT DO NOTHING"
)
_ATTENDANCE = (
    "UPDATE {s}.activities AS a SET attended = a.attended + c.attended, "
    "missed = a.missed + c.missed FROM unnest(%s::uuid[], %s::text[], %s::int4[], %s::int4[]) "
    "AS c(referral_id, activity_id, attended, missed) "
    "WHERE a.referral_id = c.referral_id AND a.activity_id = c.activity_id"
)
_INSERT_OUTCOMES = (
    "INSERT INTO {s}.outcomes (event_id, referral_id, measure, timepoint, score, items, "
    "recorded_at) SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], "
    "%s::float8[], %s::jsonb[], %s::timestamptz[]) ON CONFLICT DO NOTHING"
)
_WITHDRAW_OUTCOMES = (
    "WITH gone AS (DELETE FROM {s}.outcomes o USING {s}.referrals r "
    "WHERE o.referral_id = r.referral_id AND r.referral_id = ANY(%s) AND r.referrer_org = %s) "
    "UPDATE {s}.referrals SET outcomes = 0 WHERE referral_id = ANY(%s) AND referrer_org = %s"
)
"""Consent to share outcomes withdrawn: the referrer's outcome summary goes (issue 16).
Only the referrer's view: the link-worker service keeps the outcomes it recorded."""
_INSERT_TIMELINE = (
    "INSERT INTO {s}.timeline (event_id, referral_id, type, at, actor) "
    "SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::timestamptz[], %s::text[]) "
    "ON CONFLICT DO NOTHING"
)


class _Rows:
    """Column lists for one batch, table by table (the ``unnest`` arguments)."""

    def __init__(self, width: int) -> None:
        self.columns: list[list[Any]] = [[] for _ in range(width)]

    def add(self, *values: Any) -> None:
        # appended column by column, not kept as row tuples: every tuple kept until the
        # batch is written would be one more object for the garbage collector to scan
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)

    def __bool__(self) -> bool:
        return bool(self.columns[0])


class ViewProjection:
    """Consumer ``view.<org_id>`` writing schema ``view_<org_id>`` (or a replay schema)."""

    def __init__(self, org_id: str, schema: str) -> None:
        self.org_id = org_id
        self.schema = schema
        self.consumer = f"view.{org_id}"
        self.interested_in: frozenset[str] | None = None
        self.may_reject = False
        self.ordering = ORG_SEQUENCE  # a partner topic: gaps are detected by ce_orgsequence
        s = sql.Identifier(schema)
        self._sql = {
            name: sql.SQL(text).format(s=s)
            for name, text in (
                ("referrals", _INSERT_REFERRALS),
                ("sessions", _INSERT_SESSIONS),
                ("activities", _INSERT_ACTIVITIES),
                ("attendance", _ATTENDANCE),
                ("outcomes", _INSERT_OUTCOMES),
                ("timeline", _INSERT_TIMELINE),
                ("changes", _UPDATE_REFERRALS),
                ("withdrawals", _WITHDRAW_OUTCOMES),
            )
        }

    async def apply(
        self, conn: AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]:
        return await self.apply_all(conn, [(event, model)])

    async def apply_all(
        self, conn: AsyncConnection[Any], items: Sequence[tuple[CloudEvent, Any]]
    ) -> Sequence[Outgoing]:
        """Write a batch: new rows first, then each referral's folded change."""
        rows = {
            "referrals": _Rows(9),
            "sessions": _Rows(6),
            "activities": _Rows(5),
            "outcomes": _Rows(7),
            "timeline": _Rows(5),
        }
        attendance: dict[tuple[UUID, str], list[int]] = {}
        changes: dict[UUID, ReferralChange] = {}
        withdrawn: list[UUID] = []
        for event, decoded in items:
            rid = UUID(event.subject)
            model = lifecycle.as_event(decoded)
            if isinstance(model, ConsentWithdrawn):
                withdrawn.append(rid)
            self._rows_of(rows, attendance, rid, event, model)
            rows["timeline"].add(event.id, rid, event.type, event.time, event.actor)
            changes.setdefault(rid, ReferralChange()).fold(event, model)
        statements: list[tuple[str, list[Any]]] = [
            (name, [FIRST_STATUS, *r.columns] if name == "referrals" else r.columns)
            for name, r in rows.items()
            if r and name != "timeline"
        ]
        if attendance:
            keys = list(attendance)
            statements.append(
                (
                    "attendance",
                    [
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [attendance[k][0] for k in keys],
                        [attendance[k][1] for k in keys],
                    ],
                )
            )
        statements.append(("timeline", rows["timeline"].columns))
        statements.append(("changes", _change_columns(changes)))
        if withdrawn:  # after the rows and counters the same batch may have added
            statements.append(("withdrawals", [withdrawn, self.org_id, withdrawn, self.org_id]))
        async with conn.pipeline():
            for name, params in statements:
                await conn.execute(self._sql[name], params)
        return ()

    @staticmethod
    def _rows_of(
        rows: dict[str, _Rows],
        attendance: dict[tuple[UUID, str], list[int]],
        rid: UUID,
        event: CloudEvent,
        model: LifecycleEvent,
    ) -> None:
        # Enums go in as str(): psycopg would write a member's name, and str() of a
        # StrEnum (its value) costs a tenth of ``.value`` on this per-copy path.
        match model:
            case ReferralCreated():
                rows["referrals"].add(
                    rid,
                    model.person_ref,
                    model.referrer_org,
                    model.referrer_kind,
                    Jsonb([str(n) for n in model.needs]),
                    str(model.urgency),
                    model.area,
                    str(model.age_band),
                    model.referred_at,
                )
            case SessionHeld():
                rows["sessions"].add(
                    model.session_id,
                    rid,
                    str(model.kind),
                    model.duration_minutes,
                    str(model.mode),
                    model.held_at,
                )
            case ActivityReferred():
                rows["activities"].add(
                    rid,
                    model.activity_id,
                    model.provider_org,
                    model.activity_kind,
                    model.referred_at,
                )
            case ActivityAttended():
                counts = attendance.setdefault((rid, model.activity_id), [0, 0])
                counts[0 if model.attended else 1] += 1
            case OutcomeRecorded():
                rows["outcomes"].add(
                    event.id,
                    rid,
                    str(model.measure),
                    str(model.timepoint),
                    None if model.score is None else float(model.score),
                    Jsonb(model.items) if model.items is not None else None,
                    model.recorded_at,
                )
            case (
                ReferralRouted()
                | ReferralAccepted()
                | ReferralDeclined()
                | ReferralEscalated()
                | FirstContactMade()
                | FirstContactOverdue()
                | ReferralClosed()
                | ConsentWithdrawn()  # and the referrer's outcomes go (below)
                | PersonErased()  # the timeline shows it; the details were never here
            ):
                pass  # the referral's row only (ReferralChange)
            case _:
                assert_never(model)


def _change_columns(changes: dict[UUID, ReferralChange]) -> list[Any]:
    """The referrals update's parameters: the distinct status moves (a JSON array), then
    the ``unnest`` arguments in ``CHANGE_COLUMNS`` order, ``moves`` as an index into it."""
    index: dict[tuple[Status, ...], int] = {}
    paths: list[dict[str, str]] = []
    rows = []
    for c in changes.values():
        row = c.columns()
        changed = None if c.moves is None else _changed(c.moves)
        if changed is not None:
            assert c.moves is not None
            i = index.get(c.moves)
            if i is None:
                i = index[c.moves] = len(paths)
                paths.append(changed)
            row = (i, *row[1:])
        rows.append(row)
    columns = ([row[i] for row in rows] for i in range(len(CHANGE_COLUMNS) - 1))
    return [Jsonb(paths), list(changes), *columns]
