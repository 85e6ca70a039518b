"""Per-person envelope encryption, shredding, rotation, migration and the audit store,
against PostgreSQL (embedded and external): the parts under the API and the CLI."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet
from psycopg.conninfo import make_conninfo

from eventstore.chain import BROKEN_LINK, EDITED, check_chain
from services.intake import store as intake
from services.intake.pii import (
    ENVELOPE,
    PersonVault,
    migrate_legacy,
    person_ref_for,
    read_person,
)
from services.privacy import audit, person_keys
from services.privacy import store as privacy
from services.privacy.master_keys import (
    ENV_MASTER_KEYS,
    MasterKeyError,
    MasterKeys,
    encode_keys,
    key_id,
    new_key,
)

pytestmark = pytest.mark.infra

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture
def fresh_db(database_url: str) -> Iterator[str]:
    """A database of its own on the test server: one keyring owns every key in it, as in
    a deployment (the shared database holds keys of other tests' keyrings)."""
    name = f"privacy_{uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(database_url, dbname=name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def details(marker: str) -> dict[str, Any]:
    return {"name": f"Ottoline Brisk-{marker}", "date_of_birth": "1950-02-03", "notes": marker}


async def _ready(url: str) -> Conn:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await privacy.create(conn)
    await intake.create(conn)
    return conn


async def _new_person(conn: Conn, vault: PersonVault, who: dict[str, Any]) -> tuple[str, UUID]:
    """A person and one referral of theirs, stored the way intake's API stores them."""
    async with conn.transaction():
        ref = await person_ref_for(conn, vault, who)
        rid = uuid4()
        await conn.execute(
            "INSERT INTO intake.referral_people (referral_id, person_ref, ciphertext) "
            "VALUES (%s, %s, %s)",
            (rid, ref, await vault.encrypt(conn, ref, who)),
        )
    return ref, rid


async def _ciphertexts(conn: Conn, ref: str) -> list[bytes]:
    cur = await conn.execute(
        "SELECT ciphertext FROM intake.people WHERE person_ref = %s UNION ALL "
        "SELECT ciphertext FROM intake.referral_people WHERE person_ref = %s",
        (ref, ref),
    )
    return [bytes(r[0]) for r in await cur.fetchall()]


def test_each_person_has_their_own_key_and_shredding_one_erases_only_them(fresh_db: str) -> None:
    async def run() -> None:
        vault = PersonVault(Fernet.generate_key())
        async with await _ready(fresh_db) as conn:
            marker_a, marker_b = uuid4().hex, uuid4().hex
            a, rid_a = await _new_person(conn, vault, details(marker_a))
            b, rid_b = await _new_person(conn, vault, details(marker_b))
            for token in await _ciphertexts(conn, a):
                assert token.startswith(ENVELOPE) and marker_a.encode() not in token
            key_a = await person_keys.data_key(conn, vault.masters, a)
            key_b = await person_keys.data_key(conn, vault.masters, b)
            assert key_a and key_b and key_a != key_b
            seen = await read_person(
                conn, vault, rid_a, reader="lw-x", fields=("name",), purpose="test"
            )
            assert seen == {"name": f"Ottoline Brisk-{marker_a}"}

            await person_keys.shred(conn, a, "objection")
            assert (
                await read_person(
                    conn, vault, rid_a, reader="lw-x", fields=("name",), purpose="test"
                )
                is None
            )
            with pytest.raises(person_keys.Erased):
                await vault.decrypt(conn, a, (await _ciphertexts(conn, a))[0])
            # the other person is untouched
            assert await read_person(
                conn, vault, rid_b, reader="lw-x", fields=("notes",), purpose="t"
            )
            # a shredded key cannot come back, and the table cannot be emptied
            with pytest.raises(psycopg.errors.RaiseException, match="cannot come back"):
                await conn.execute(
                    "UPDATE keys.person_keys SET wrapped = '\\x00', master_key_id = 'x', "
                    "erased_at = NULL WHERE person_ref = %s",
                    (a,),
                )
            with pytest.raises(psycopg.errors.RaiseException, match="truncated"):
                await conn.execute("TRUNCATE keys.person_keys")

    asyncio.run(run())


def test_rotation_rewraps_keys_without_touching_the_data(fresh_db: str) -> None:
    async def run() -> None:
        old, new = new_key(), new_key()
        vault = PersonVault(Fernet.generate_key(), MasterKeys([old]))
        async with await _ready(fresh_db) as conn:
            ref, rid = await _new_person(conn, vault, details(uuid4().hex))
            before = await _ciphertexts(conn, ref)
            both = MasterKeys([new, old])
            assert await person_keys.rewrap(conn, both) >= 1
            cur = await conn.execute(
                "SELECT master_key_id FROM keys.person_keys WHERE person_ref = %s", (ref,)
            )
            assert await cur.fetchone() == (key_id(new),)
            assert await _ciphertexts(conn, ref) == before  # data not re-encrypted
            rotated = PersonVault(Fernet.generate_key(), MasterKeys([new]))
            rotated._nhs_key = vault._nhs_key
            assert await read_person(
                conn, rotated, rid, reader="x-y", fields=("name",), purpose="t"
            )
            with pytest.raises(MasterKeyError):  # the old key alone opens nothing any more
                await person_keys.data_key(conn, MasterKeys([old]), ref)

    asyncio.run(run())


def test_a_wrapped_key_is_bound_to_its_person(fresh_db: str) -> None:
    async def run() -> None:
        vault = PersonVault(Fernet.generate_key())
        async with await _ready(fresh_db) as conn:
            a, _ = await _new_person(conn, vault, details("a"))
            b, _ = await _new_person(conn, vault, details("b"))
            cur = await conn.execute(
                "SELECT master_key_id, wrapped FROM keys.person_keys WHERE person_ref = %s", (a,)
            )
            master_id, wrapped = await cur.fetchone()  # type: ignore[misc]
            with pytest.raises(InvalidTag):  # a's wrapped key copied onto b opens nothing
                vault.masters.unwrap(master_id, b, bytes(wrapped))

    asyncio.run(run())


def test_details_under_the_old_alliance_key_stay_readable_and_migrate(fresh_db: str) -> None:
    async def run() -> None:
        alliance_key = Fernet.generate_key()
        vault = PersonVault(alliance_key)
        legacy = Fernet(alliance_key)
        async with await _ready(fresh_db) as conn:
            ref, rid = f"p_legacy{uuid4().hex[:12]}", uuid4()
            who = details(uuid4().hex)
            token = legacy.encrypt(b'{"name": "%s", "notes": "x"}' % who["name"].encode())
            await conn.execute(
                "INSERT INTO intake.people (person_ref, ciphertext) VALUES (%s, %s)", (ref, token)
            )
            await conn.execute(
                "INSERT INTO intake.referral_people VALUES (%s, %s, %s)", (rid, ref, token)
            )
            assert await read_person(conn, vault, rid, reader="a-b", fields=("name",), purpose="t")
            assert await migrate_legacy(conn, vault) >= 2
            assert all(t.startswith(ENVELOPE) for t in await _ciphertexts(conn, ref))
            shown = await read_person(conn, vault, rid, reader="a-b", fields=("name",), purpose="t")
            assert shown == {"name": who["name"]}

    asyncio.run(run())


def test_the_master_key_setting_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_MASTER_KEYS, base64.urlsafe_b64encode(b"short").decode())
    with pytest.raises(MasterKeyError, match="not 32"):
        MasterKeys.from_home(tmp_path)
    first, second = new_key(), new_key()
    monkeypatch.setenv(ENV_MASTER_KEYS, ",".join(encode_keys([first, second]).split()))
    assert MasterKeys.from_home(tmp_path).current_id == key_id(first)
    monkeypatch.delenv(ENV_MASTER_KEYS)
    made = MasterKeys.from_home(tmp_path)  # a key file, made once, private
    assert (tmp_path / "keys" / "master.keys").stat().st_mode & 0o077 == 0
    assert MasterKeys.from_home(tmp_path).current_id == made.current_id


def test_every_read_is_recorded_in_a_chained_append_only_store(fresh_db: str) -> None:
    async def run() -> None:
        vault = PersonVault(Fernet.generate_key())
        async with await _ready(fresh_db) as conn:
            _, rid = await _new_person(conn, vault, details(uuid4().hex))
            for reader in ("gp-one", "lw-two"):
                await read_person(
                    conn, vault, rid, reader=reader, fields=("name", "notes"), purpose="care"
                )
            found = await audit.accesses(conn, referral_id=rid)
            assert [(a.reader, a.fields, a.purpose) for a in found] == [
                ("gp-one", ("name", "notes"), "care"),
                ("lw-two", ("name", "notes"), "care"),
            ]
            assert [a.referral_id for a in await audit.accesses(conn, reader="lw-two")][-1] == rid
            events = await audit.AUDIT.read_stream(conn, rid)
            assert check_chain("audit", events) == []
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                await conn.execute("DELETE FROM audit.events WHERE stream_id = %s", (rid,))
            # even with the trigger out of the way, an edit or a deletion shows in the chain
            edited = [events[0], events[1].__class__(**{**events[1].__dict__, "actor": "x-y"})]
            assert check_chain("audit", edited)[0].kind == EDITED
            assert check_chain("audit", events[1:])[0].kind in (BROKEN_LINK, "deleted")
            cur = await conn.execute(
                "SELECT count(*) FROM audit.outbox"
            )  # reads are never published
            assert await cur.fetchone() == (0,)

    asyncio.run(run())
