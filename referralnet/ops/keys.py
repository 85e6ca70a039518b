"""``referralnet keys status | rotate | migrate``: the master keys and the person keys.

``rotate`` re-wraps every person's data key under a new master key and retires the old
one; the data itself is not touched (it stays sealed under the same data keys). With
the keys in ``<home>/keys/master.keys`` it makes the new key itself: the file holds new
and old while it re-wraps (running processes re-read it), then the new key alone. With
``REFERRALNET_MASTER_KEYS`` the operator puts the new key first (``new,old``), runs
``rotate``, then drops the old key from the setting.

``migrate`` re-encrypts details still sealed under the single alliance key of before
per-person keys (reads keep working without it; erasure migrates a person's rows itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psycopg import AsyncConnection

from services.intake.pii import PersonVault, migrate_legacy
from services.privacy import person_keys
from services.privacy.master_keys import MasterKeys, key_id, new_key, write_key_file


@dataclass(frozen=True)
class Rotation:
    current: str
    rewrapped: int
    retired: tuple[str, ...]
    from_file: bool


async def status(url: str) -> tuple[dict[str, int], int, int]:
    """(live data keys per master key id, erased people, details rows not yet migrated)."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        use = await person_keys.master_key_use(conn)
        cur = await conn.execute("SELECT count(*) FROM keys.person_keys WHERE wrapped IS NULL")
        erased = await cur.fetchone()
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM intake.people WHERE get_byte(ciphertext, 0) <> 2) "
            "+ (SELECT count(*) FROM intake.referral_people WHERE get_byte(ciphertext, 0) <> 2)"
        )
        legacy = await cur.fetchone()
    return use, int(erased[0] if erased else 0), int(legacy[0] if legacy else 0)


async def rotate(url: str, home: Path) -> Rotation:
    """Re-wrap every live data key under a new (file) or the first (environment) key."""
    masters = MasterKeys.from_home(home)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        if masters.path is None:  # the environment: its first key is the new one
            done = await person_keys.rewrap(conn, masters)
            use = await person_keys.master_key_use(conn)
            retired = tuple(key_id(k) for k in masters.keys[1:] if key_id(k) not in use)
            return Rotation(masters.current_id, done, retired, from_file=False)
        old = list(masters.keys)
        fresh = new_key()
        write_key_file(masters.path, [fresh, *old])  # others wrap with the new key now
        both = MasterKeys([fresh, *old])
        done = await person_keys.rewrap(conn, both)
        write_key_file(masters.path, [fresh])
        # a process that wrapped with an old key just before re-reading the file
        done += await person_keys.rewrap(conn, both)
    return Rotation(key_id(fresh), done, tuple(key_id(k) for k in old), from_file=True)


async def migrate(url: str, home: Path) -> int:
    """Re-encrypt every legacy details row under its person's key; rows changed."""
    vault = PersonVault.from_home(home)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        return await migrate_legacy(conn, vault)
