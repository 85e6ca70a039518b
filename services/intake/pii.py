"""The person's identity stays here, encrypted at rest; the bus only ever sees a pseudonym.

``person_ref`` is random, except that the same NHS number always maps to the same
``person_ref`` (via a keyed hash), so the alliance can see one person referred twice
without the NHS number leaving intake.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from psycopg import AsyncConnection

from infra.keys import key_file
from referralnet.settings import settings
from services.intake.nhs_number import identifies_a_person


class PersonVault:
    """Encrypts person details (Fernet, AES-128-CBC + HMAC) and derives pseudonyms."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._nhs_key = hashlib.sha256(b"nhs-number-pseudonym:" + key).digest()

    @classmethod
    def from_home(cls, home: Path) -> PersonVault:
        """Key from ``REFERRALNET_PII_KEY`` or ``<home>/keys/pii.key`` (created 0600)."""
        return cls(key_file(home, "pii.key", Fernet.generate_key, settings().pii_key))

    def encrypt(self, details: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(details, default=str).encode())

    def decrypt(self, token: bytes) -> dict[str, Any]:
        return json.loads(self._fernet.decrypt(token))  # type: ignore[no-any-return]

    def nhs_digest(self, nhs_number: str) -> str:
        return hmac.new(self._nhs_key, nhs_number.encode(), hashlib.sha256).hexdigest()


def random_person_ref() -> str:
    return "p_" + base64.b32encode(secrets.token_bytes(10)).decode().lower().rstrip("=")


async def person_ref_for(
    conn: AsyncConnection[Any], vault: PersonVault, details: dict[str, Any]
) -> str:
    """The person's pseudonym: reused for a known NHS number, new otherwise."""
    nhs = details.get("nhs_number")
    # Only a number that identifies a person links referrals (never a placeholder).
    digest = vault.nhs_digest(nhs) if isinstance(nhs, str) and identifies_a_person(nhs) else None
    if digest:
        cur = await conn.execute(
            "SELECT person_ref FROM intake.people WHERE nhs_digest = %s", (digest,)
        )
        row = await cur.fetchone()
        if row:
            return str(row[0])
    ref = random_person_ref()
    cur = await conn.execute(
        "INSERT INTO intake.people (person_ref, nhs_digest, ciphertext) VALUES (%s, %s, %s) "
        "ON CONFLICT (nhs_digest) DO NOTHING RETURNING person_ref",
        (ref, digest, vault.encrypt(details)),
    )
    if await cur.fetchone() is None:  # a concurrent referral registered the same NHS number
        cur = await conn.execute(
            "SELECT person_ref FROM intake.people WHERE nhs_digest = %s", (digest,)
        )
        row = await cur.fetchone()
        assert row is not None
        return str(row[0])
    return ref
