"""Applies one organisation's topic to its view schema.

The distributor already decided what this organisation may see, so the projection is
the same for every role: it records what arrives. Each statement is idempotent in
effect because ``apply_batch`` skips events applied before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from bus.tracking import Outgoing
from schemas.envelope import CloudEvent

STATUS_UPDATES: dict[str, str] = {
    "referral-routed": "status = 'routed', service_org = %(service_org)s, routed_at = %(at)s",
    "referral-accepted": "status = 'accepted', accepted_at = %(at)s",
    "referral-declined": "status = 'declined', declines = declines + 1",
    "referral-escalated": "status = 'escalated', service_org = NULL",
    "first-contact-made": "status = 'in-progress', first_contact_at = %(at)s",
    "first-contact-overdue": "overdue = true",
    "session-held": "sessions = sessions + 1, session_minutes = session_minutes + %(minutes)s, "
    "status = CASE WHEN status = 'accepted' THEN 'in-progress' ELSE status END",
    "activity-referred": "activities = activities + 1",
    "activity-attended": "attendances = attendances + %(attended)s",
    "outcome-recorded": "outcomes = outcomes + 1",
    "referral-closed": "status = 'closed', closed_at = %(at)s, close_reason = %(reason)s",
}


def session_minutes(model: Any) -> int:
    """Minutes of a session, whichever schema version named them."""
    return int(getattr(model, "duration_minutes", None) or model.minutes)


class ViewProjection:
    """Consumer ``view.<org_id>`` writing schema ``view_<org_id>`` (or a replay schema)."""

    def __init__(self, org_id: str, schema: str) -> None:
        self.org_id = org_id
        self.schema = schema
        self.consumer = f"view.{org_id}"
        self.interested_in: frozenset[str] | None = None
        self.may_reject = False
        self._s = sql.Identifier(schema)

    async def apply(
        self, conn: AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]:
        rid = UUID(event.subject)
        if event.type == "referral-created":
            await self._created(conn, rid, model)
        await self._details(conn, rid, event, model)
        # One round trip: the timeline row and the referral's status change together.
        update = STATUS_UPDATES.get(event.type, "status = status")
        await conn.execute(
            sql.SQL(
                "WITH t AS (INSERT INTO {s}.timeline (event_id, referral_id, type, at, actor) "
                "VALUES (%(event_id)s, %(id)s, %(type)s, %(at)s, %(actor)s) "
                "ON CONFLICT DO NOTHING) "
                "UPDATE {s}.referrals SET " + update + ", last_event_at = "
                "GREATEST(last_event_at, %(at)s) WHERE referral_id = %(id)s"
            ).format(s=self._s),
            {
                "event_id": event.id,
                "type": event.type,
                "actor": event.actor,
                "id": rid,
                "at": event.time,
                "service_org": getattr(model, "service_org", None),
                "minutes": session_minutes(model) if event.type == "session-held" else 0,
                "attended": 1 if getattr(model, "attended", False) else 0,
                "reason": str(getattr(model, "reason", "")),
            },
        )
        return ()

    async def _created(self, conn: AsyncConnection[Any], rid: UUID, model: Any) -> None:
        await conn.execute(
            sql.SQL(
                "INSERT INTO {}.referrals (referral_id, person_ref, referrer_org, referrer_kind, "
                "needs, urgency, area, age_band, status, referred_at, last_event_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'referred', %s, %s) "
                "ON CONFLICT (referral_id) DO NOTHING"
            ).format(self._s),
            (
                rid,
                model.person_ref,
                model.referrer_org,
                model.referrer_kind,
                [str(n) for n in model.needs],
                str(model.urgency),
                model.area,
                str(model.age_band),
                model.referred_at,
                model.referred_at,
            ),
        )

    async def _details(
        self, conn: AsyncConnection[Any], rid: UUID, event: CloudEvent, model: Any
    ) -> None:
        if event.type == "session-held":
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.sessions (session_id, referral_id, kind, minutes, mode, "
                    "held_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                ).format(self._s),
                (
                    model.session_id,
                    rid,
                    str(model.kind),
                    session_minutes(model),
                    str(model.mode),
                    model.held_at,
                ),
            )
        elif event.type == "activity-referred":
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.activities (referral_id, activity_id, provider_org, "
                    "activity_kind, referred_at) VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING"
                ).format(self._s),
                (
                    rid,
                    model.activity_id,
                    model.provider_org,
                    model.activity_kind,
                    model.referred_at,
                ),
            )
        elif event.type == "activity-attended":
            column = "attended" if model.attended else "missed"
            await conn.execute(
                sql.SQL(
                    "UPDATE {}.activities SET {} = {} + 1 WHERE referral_id = %s "
                    "AND activity_id = %s"
                ).format(self._s, sql.Identifier(column), sql.Identifier(column)),
                (rid, model.activity_id),
            )
        elif event.type == "outcome-recorded":
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.outcomes (event_id, referral_id, measure, timepoint, score, "
                    "items, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING"
                ).format(self._s),
                (
                    event.id,
                    rid,
                    str(model.measure),
                    str(model.timepoint),
                    model.score,
                    Jsonb(model.items) if model.items is not None else None,
                    model.recorded_at,
                ),
            )
