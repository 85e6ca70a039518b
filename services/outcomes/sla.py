"""The first-contact SLA timer: flags referrals still waiting for first contact.

A breach found at first contact is recorded then (``domain`` decides it with the
contact). This timer covers the referrals nobody has contacted at all. It fires only
when the SLA has passed both in the world's time and since outcomes learned of the
routing, so loading a year of history through the API never trips it for cases
contacted moments later. It runs in the outcomes worker only: replaying views never
triggers it.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from services.outcomes.adapters import PostgresCasework, PostgresUnitOfWork
from services.outcomes.commands import FlagOverdue
from services.outcomes.handlers import Settings, handle


async def flag_overdue(conn: AsyncConnection[Any], now: datetime, limit: int = 500) -> int:
    """Append ``first-contact-overdue`` for every case past its SLA; return how many.

    One transaction: the candidates are locked (skipping any a partner's command holds),
    then each is decided on and recorded like any command.
    """
    settings = Settings()
    uow = PostgresUnitOfWork(lambda: nullcontext(conn))
    flagged = 0
    async with conn.transaction():
        for referral_id in await PostgresCasework(conn).waiting(now, settings.rules, limit):
            flagged += bool(await handle(FlagOverdue(referral_id, now), uow, settings))
    return flagged
