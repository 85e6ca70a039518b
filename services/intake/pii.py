"""The person's identity stays here, encrypted at rest; the bus only ever sees a pseudonym.

``person_ref`` is random, except that the same NHS number always maps to the same
``person_ref`` (via a keyed hash), so the alliance can see one person referred twice
without the NHS number leaving intake.

Envelope encryption (issue 16): each person's details are sealed with AES-256-GCM under
a data key of their own (``services.privacy.person_keys``), which the alliance's master
key wraps. Shredding that one key erases the person everywhere the ciphertext went
(tables, backups) without touching anyone else's. Details written before per-person keys
(Fernet under the single alliance key) stay readable; ``referralnet keys migrate``
re-encrypts them, and erasure migrates the person's own rows before shredding.

Every decryption for a partner goes through :func:`read_person`, which records the
read in the audit store first (``services.privacy.audit``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import AsyncConnection

from infra.keys import key_file
from referralnet.settings import settings
from services.intake.nhs_number import identifies_a_person
from services.privacy import audit, person_keys
from services.privacy.master_keys import MasterKeys
from services.privacy.person_keys import Erased
from services.refusal import NotFound

ENVELOPE = b"\x02"
"""First byte of details sealed under a person's key (a Fernet token starts with ``g``)."""
NONCE_BYTES = 12


class PersonVault:
    """Seals person details under per-person keys, and derives pseudonyms.

    ``key`` is the alliance key of before (``REFERRALNET_PII_KEY`` / ``keys/pii.key``):
    it still keys the NHS-number digest and opens details not yet migrated; it no
    longer encrypts anything new.
    """

    def __init__(self, key: bytes, masters: MasterKeys | None = None) -> None:
        self._fernet = Fernet(key)
        self._nhs_key = hashlib.sha256(b"nhs-number-pseudonym:" + key).digest()
        self.masters = masters or MasterKeys.ephemeral()

    @classmethod
    def from_home(cls, home: Path) -> PersonVault:
        """Key from ``REFERRALNET_PII_KEY`` or ``<home>/keys/pii.key`` (created 0600);
        master keys from ``REFERRALNET_MASTER_KEYS`` or ``<home>/keys/master.keys``."""
        key = key_file(home, "pii.key", Fernet.generate_key, settings().pii_key)
        return cls(key, MasterKeys.from_home(home))

    async def encrypt(
        self,
        conn: AsyncConnection[Any],
        person_ref: str,
        details: dict[str, Any],
        key: bytes | None = None,
    ) -> bytes:
        """``details`` sealed under the person's data key (made on first use), in the
        caller's transaction. ``Erased`` if the person was erased.

        ``key``: the data key ``person_and_key`` made for a new person in this same
        transaction (nobody else can see, let alone erase, that person yet), so it is
        not read back and unwrapped again.
        """
        if key is not None:
            return seal(key, person_ref, details)
        key = await person_keys.data_key(conn, self.masters, person_ref)
        if key is None:
            key = await person_keys.create_key(conn, self.masters, person_ref)
        return seal(key, person_ref, details)

    async def decrypt(
        self, conn: AsyncConnection[Any], person_ref: str, token: bytes
    ) -> dict[str, Any]:
        """The details; ``Erased`` once the person's key is shredded."""
        if not token.startswith(ENVELOPE):
            await person_keys.refuse_if_erased(conn, person_ref)
            return self.open_legacy(token)
        key = await person_keys.data_key(conn, self.masters, person_ref)
        if key is None:
            raise ValueError(f"no data key for {person_ref}")
        return open_sealed(key, person_ref, token)

    def open_legacy(self, token: bytes) -> dict[str, Any]:
        """Details sealed before per-person keys (Fernet under the alliance key)."""
        return json.loads(self._fernet.decrypt(token))  # type: ignore[no-any-return]

    def nhs_digest(self, nhs_number: str) -> str:
        return hmac.new(self._nhs_key, nhs_number.encode(), hashlib.sha256).hexdigest()


def seal(key: bytes, person_ref: str, details: dict[str, Any]) -> bytes:
    """``0x02 | nonce | AES-GCM(details JSON)``, bound to ``person_ref``."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    plain = json.dumps(details, default=str).encode()
    return ENVELOPE + nonce + AESGCM(key).encrypt(nonce, plain, person_ref.encode())


def open_sealed(key: bytes, person_ref: str, token: bytes) -> dict[str, Any]:
    nonce, body = token[1 : 1 + NONCE_BYTES], token[1 + NONCE_BYTES :]
    return json.loads(AESGCM(key).decrypt(nonce, body, person_ref.encode()))  # type: ignore[no-any-return]


def random_person_ref() -> str:
    return "p_" + base64.b32encode(secrets.token_bytes(10)).decode().lower().rstrip("=")


async def person_ref_for(
    conn: AsyncConnection[Any], vault: PersonVault, details: dict[str, Any]
) -> str:
    """The person's pseudonym: reused for a known NHS number, new otherwise.

    A new person gets a data key in the same transaction as their row.
    """
    return (await person_and_key(conn, vault, details))[0]


async def person_and_key(
    conn: AsyncConnection[Any], vault: PersonVault, details: dict[str, Any]
) -> tuple[str, bytes | None]:
    """``person_ref_for``'s pseudonym, with the data key made for a new person (None for
    a known one: their key is the store's to give, and may have been shredded)."""
    nhs = details.get("nhs_number")
    # Only a number that identifies a person links referrals (never a placeholder).
    digest = vault.nhs_digest(nhs) if isinstance(nhs, str) and identifies_a_person(nhs) else None
    if digest:
        # FOR SHARE waits for an erasure of that person in flight; the erasure clears the
        # digest, so the row no longer matches and the referral starts a new person
        cur = await conn.execute(
            "SELECT person_ref FROM intake.people WHERE nhs_digest = %s FOR SHARE", (digest,)
        )
        row = await cur.fetchone()
        if row:
            return str(row[0]), None
    ref = random_person_ref()
    key = await person_keys.create_key(conn, vault.masters, ref)
    cur = await conn.execute(
        "INSERT INTO intake.people (person_ref, nhs_digest, ciphertext) VALUES (%s, %s, %s) "
        "ON CONFLICT (nhs_digest) DO NOTHING RETURNING person_ref",
        (ref, digest, seal(key, ref, details)),
    )
    if await cur.fetchone() is None:  # a concurrent referral registered the same NHS number
        await conn.execute("DELETE FROM keys.person_keys WHERE person_ref = %s", (ref,))
        cur = await conn.execute(
            "SELECT person_ref FROM intake.people WHERE nhs_digest = %s", (digest,)
        )
        row = await cur.fetchone()
        assert row is not None
        return str(row[0]), None
    return ref, key


async def read_person(
    conn: AsyncConnection[Any],
    vault: PersonVault,
    referral_id: UUID,
    *,
    reader: str,
    fields: tuple[str, ...],
    purpose: str,
) -> dict[str, Any] | None:
    """The ``fields`` of the person behind a referral, for ``reader`` (entitlement is the
    caller's to check); None if the person was erased. The read is recorded in the audit
    store (who, when, which referral, which fields, why) before anything is returned."""
    cur = await conn.execute(
        "SELECT person_ref, ciphertext FROM intake.referral_people WHERE referral_id = %s",
        (referral_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no referral {referral_id}")
    try:
        details = await vault.decrypt(conn, str(row[0]), bytes(row[1]))
    except Erased:
        return None
    shown = {k: v for k, v in details.items() if k in fields}
    await audit.record_read(
        conn, referral_id=referral_id, reader=reader, fields=sorted(shown), purpose=purpose
    )
    return shown


async def migrate_legacy(conn: AsyncConnection[Any], vault: PersonVault, batch: int = 500) -> int:
    """Re-encrypt details still under the single alliance key; how many rows were.

    One transaction per batch of people (their own row and their referrals' rows
    together). Erased people are left as they are (their key is gone; erasure migrated
    their rows first).
    """
    done = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT p.person_ref FROM intake.people p WHERE (get_byte(p.ciphertext, 0) <> 2 "
                "OR EXISTS (SELECT 1 FROM intake.referral_people r WHERE r.person_ref = "
                "p.person_ref AND get_byte(r.ciphertext, 0) <> 2)) AND NOT EXISTS (SELECT 1 "
                "FROM keys.person_keys k WHERE k.person_ref = p.person_ref AND k.wrapped IS NULL) "
                "ORDER BY p.person_ref LIMIT %s FOR UPDATE OF p",
                (batch,),
            )
            people = [str(r[0]) for r in await cur.fetchall()]
            for person_ref in people:
                done += await migrate_person(conn, vault, person_ref)
        if len(people) < batch:
            return done


async def migrate_person(conn: AsyncConnection[Any], vault: PersonVault, person_ref: str) -> int:
    """Re-encrypt one person's legacy rows under their own key; rows changed."""
    changed = 0
    cur = await conn.execute(
        "SELECT 'people', NULL::uuid, ciphertext FROM intake.people WHERE person_ref = %s "
        "UNION ALL SELECT 'referral', referral_id, ciphertext FROM intake.referral_people "
        "WHERE person_ref = %s",
        (person_ref, person_ref),
    )
    for table, referral_id, token in await cur.fetchall():
        token = bytes(token)
        if token.startswith(ENVELOPE):
            continue
        details = vault.open_legacy(token)
        sealed = await vault.encrypt(conn, person_ref, details)
        if table == "people":
            await conn.execute(
                "UPDATE intake.people SET ciphertext = %s WHERE person_ref = %s",
                (sealed, person_ref),
            )
        else:
            await conn.execute(
                "UPDATE intake.referral_people SET ciphertext = %s WHERE referral_id = %s",
                (sealed, referral_id),
            )
        changed += 1
    return changed
