"""``referralnet erase REFERRAL_ID --reason R``: the operator erases the person behind a
referral (the same crypto-shredding as ``POST /people/{ref}/erasure``, actor
``alliance-operator``), e.g. for a request made to the alliance rather than a partner."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from psycopg import AsyncConnection

from schemas.events import ErasureReason
from services.intake.pii import PersonVault
from services.privacy.erasure import Erasure, erase_person, person_of


async def erase_referral_person(
    url: str, home: Path, referral_id: UUID, reason: ErasureReason
) -> Erasure:
    """Erase the person behind ``referral_id``; ``services.refusal.NotFound`` if unknown."""
    vault = PersonVault.from_home(home)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        person = await person_of(conn, referral_id)
        return await erase_person(conn, vault, person, reason, requested_by=None)
