"""Each person's data key, wrapped by the master key, in schema ``keys`` (its own schema,
so that a role can be given the person tables without the keys, or the reverse).

Shredding a key (``shred``) is what erases a person: every copy of their details, in
the live tables and in any backup, is ciphertext under that key. The row stays as a
tombstone (``erased_at``, ``reason``) so that "erased" can be told from "never existed".
A trigger refuses bringing a shredded key back and emptying the table wholesale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import AsyncConnection

from services.privacy.master_keys import MasterKeys


class Erased(Exception):
    """The person's key was shredded: their details can never be read again."""

    def __init__(self, person_ref: str, erased_at: datetime) -> None:
        super().__init__(f"person erased at {erased_at.isoformat()}")
        self.person_ref, self.erased_at = person_ref, erased_at


async def create_key(conn: AsyncConnection[Any], masters: MasterKeys, person_ref: str) -> bytes:
    """A new data key for a new person (AES-256), stored wrapped, in the caller's
    transaction; an existing live key is returned instead (a concurrent first use)."""
    key = AESGCM.generate_key(bit_length=256)
    master_id, wrapped = masters.wrap(person_ref, key)
    cur = await conn.execute(
        "INSERT INTO keys.person_keys (person_ref, master_key_id, wrapped) VALUES (%s, %s, %s) "
        "ON CONFLICT (person_ref) DO NOTHING RETURNING person_ref",
        (person_ref, master_id, wrapped),
    )
    if await cur.fetchone() is None:
        found = await data_key(conn, masters, person_ref)
        if found is None:  # raced with a delete of an unused key: cannot happen twice
            raise RuntimeError(f"no key for {person_ref} after a conflicting insert")
        return found
    return key


async def data_key(
    conn: AsyncConnection[Any], masters: MasterKeys, person_ref: str
) -> bytes | None:
    """The person's data key; None if they never had one (details from before per-person
    keys); ``Erased`` if it was shredded."""
    cur = await conn.execute(
        "SELECT master_key_id, wrapped, erased_at FROM keys.person_keys WHERE person_ref = %s",
        (person_ref,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    master_id, wrapped, erased_at = row
    if wrapped is None:
        raise Erased(person_ref, erased_at)
    return masters.unwrap(master_id, person_ref, bytes(wrapped))


async def shred(conn: AsyncConnection[Any], person_ref: str, reason: str) -> datetime | None:
    """Destroy the person's key (keep a tombstone); when it was erased, first or before.

    A person without a key row gets a tombstone too, so nothing can give them one later.
    """
    cur = await conn.execute(
        "INSERT INTO keys.person_keys (person_ref, master_key_id, wrapped, erased_at, reason) "
        "VALUES (%s, NULL, NULL, now(), %s) ON CONFLICT (person_ref) DO UPDATE SET "
        "master_key_id = NULL, wrapped = NULL, erased_at = now(), reason = EXCLUDED.reason "
        "WHERE keys.person_keys.erased_at IS NULL RETURNING erased_at",
        (person_ref, reason),
    )
    row = await cur.fetchone()
    if row is not None:
        return row[0]  # type: ignore[no-any-return]
    cur = await conn.execute(
        "SELECT erased_at FROM keys.person_keys WHERE person_ref = %s", (person_ref,)
    )
    before = await cur.fetchone()
    return None if before is None else before[0]


async def refuse_if_erased(conn: AsyncConnection[Any], person_ref: str) -> None:
    """``Erased`` if the person was erased (for details not under a key of their own)."""
    when = await erased_at(conn, person_ref)
    if when is not None:
        raise Erased(person_ref, when)


async def erased_at(conn: AsyncConnection[Any], person_ref: str) -> datetime | None:
    cur = await conn.execute(
        "SELECT erased_at FROM keys.person_keys WHERE person_ref = %s", (person_ref,)
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def rewrap(conn: AsyncConnection[Any], masters: MasterKeys, batch: int = 1000) -> int:
    """Re-wrap every live key not under the current master key; how many were.

    Only the wrapped keys change (data stays encrypted under the same data keys), one
    transaction per batch, so it can run while the services run.
    """
    current, done = masters.current_id, 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT person_ref, master_key_id, wrapped FROM keys.person_keys "
                "WHERE wrapped IS NOT NULL AND master_key_id <> %s LIMIT %s FOR UPDATE",
                (current, batch),
            )
            rows = await cur.fetchall()
            for person_ref, master_id, wrapped in rows:
                key = masters.unwrap(master_id, person_ref, bytes(wrapped))
                new_id, new_wrapped = masters.wrap(person_ref, key)
                await conn.execute(
                    "UPDATE keys.person_keys SET master_key_id = %s, wrapped = %s "
                    "WHERE person_ref = %s",
                    (new_id, new_wrapped, person_ref),
                )
        done += len(rows)
        if len(rows) < batch:
            return done


async def master_key_use(conn: AsyncConnection[Any]) -> dict[str, int]:
    """Live data keys per master key id (``keys status``)."""
    cur = await conn.execute(
        "SELECT master_key_id, count(*) FROM keys.person_keys WHERE wrapped IS NOT NULL "
        "GROUP BY master_key_id ORDER BY master_key_id"
    )
    return {str(r[0]): int(r[1]) for r in await cur.fetchall()}
