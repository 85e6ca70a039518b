"""Erasure by crypto-shredding (UK GDPR Art. 17): destroy the person's data key.

What it does, in one transaction: re-encrypt any of the person's details still under
the old alliance key (so the shredding covers them too), shred the key (tombstone kept),
forget the NHS-number digest (a new referral with that number starts a new person),
and append ``person-erased`` to intake's stream of each of the person's referrals.
Events, chains, checkpoints and views are untouched: none of them holds the details.
After the commit, ``VACUUM`` removes the key's dead row version from the table files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from schemas.events import ErasureReason, PersonErased
from services.intake.pii import PersonVault, migrate_person
from services.privacy import person_keys, streams
from services.refusal import NotFound


@dataclass(frozen=True)
class Erasure:
    """The outcome: when the person was erased, and whether this request did it."""

    person_ref: str
    erased_at: datetime
    referrals: tuple[UUID, ...]
    now: bool  # False: erased before; nothing new was recorded


async def person_of(conn: AsyncConnection[Any], referral_id: UUID) -> str:
    """The (real) pseudonym of the person behind a referral; NotFound if none."""
    cur = await conn.execute(
        "SELECT person_ref FROM intake.referral_people WHERE referral_id = %s", (referral_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no referral {referral_id}")
    return str(row[0])


async def erase_person(
    conn: AsyncConnection[Any],
    vault: PersonVault,
    person_ref: str,
    reason: ErasureReason,
    requested_by: str | None,
) -> Erasure:
    """Erase one person (idempotent: a second request records nothing new)."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT person_ref FROM intake.people WHERE person_ref = %s FOR UPDATE",
            (person_ref,),
        )
        if await cur.fetchone() is None:
            raise NotFound(f"no person {person_ref}")
        cur = await conn.execute(
            "SELECT referral_id FROM intake.referral_people WHERE person_ref = %s "
            "ORDER BY referral_id",
            (person_ref,),
        )
        referrals = tuple(r[0] for r in await cur.fetchall())
        before = await person_keys.erased_at(conn, person_ref)
        if before is not None:
            return Erasure(person_ref, before, referrals, now=False)
        await migrate_person(conn, vault, person_ref)
        at = await person_keys.shred(conn, person_ref, str(reason))
        assert at is not None
        await conn.execute(
            "UPDATE intake.people SET nhs_digest = NULL WHERE person_ref = %s", (person_ref,)
        )
        for referral_id in referrals:
            event = PersonErased(
                referral_id=referral_id,
                reason=reason,
                requested_by=requested_by,
                erased_at=datetime.now(UTC),
            )
            await streams.append(
                conn, referral_id, event, requested_by or streams.OPERATOR, event.erased_at
            )
    if not conn.info.transaction_status:  # idle, autocommit: VACUUM may run
        # the shredded key's old row version stays in the table file until vacuumed
        await conn.execute("VACUUM keys.person_keys")
    return Erasure(person_ref, at, referrals, now=True)
