"""Consent withdrawal (UK GDPR Art. 7(3)): recorded as ``consent-withdrawn``.

Today one consent can be withdrawn: sharing outcomes with the referrer. The distributor
stops sending outcomes to the referrer from that event on, and the referrer's view drops
the outcome summary it already holds (``views.projection``), live and on replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from schemas.events import ConsentWithdrawn, WithdrawnConsent
from services.privacy import streams
from services.refusal import Conflict, Invalid, NotFound


async def withdraw(
    conn: AsyncConnection[Any],
    referral_id: UUID,
    consent: WithdrawnConsent,
    recorded_by: str,
    withdrawn_at: datetime,
) -> bool:
    """Record the withdrawal; False if it was already recorded (nothing new stored).

    Refuses (409) a consent that was never given, and (422) a time before the referral
    (``web.fields.WorldTime`` already refused one in the future).
    """
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('intake-stream'), hashtext(%s))",
            (str(referral_id),),
        )
        events = await streams.types_in(conn, referral_id)
        if not events:
            raise NotFound(f"no referral {referral_id}")
        made = events[0][1]
        if withdrawn_at < datetime.fromisoformat(str(made["referred_at"])):
            raise Invalid("must not be before the referral was made", field="withdrawn_at")
        if any(t == ConsentWithdrawn.event_type and d["consent"] == consent for t, d in events):
            return False
        if not made["consent"]["share_outcomes_with_referrer"]:
            raise Conflict(
                "the person never consented to share outcomes with the referrer",
                state={"share_outcomes_with_referrer": False},
            )
        event = ConsentWithdrawn(
            referral_id=referral_id,
            consent=consent,
            recorded_by=recorded_by,
            withdrawn_at=withdrawn_at,
        )
        await streams.append(conn, referral_id, event, recorded_by, withdrawn_at)
    return True
