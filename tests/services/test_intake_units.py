"""Intake's handler on the PostgreSQL unit of work, side by side with the in-memory one.

The same commands through ``handle`` on both units give the same decisions and the same
streams (the fake is a faithful twin); on PostgreSQL, concurrent uses of one
``Idempotency-Key`` create one referral and replay it to the others, a refusal leaves
no row behind, and keys are stored only as digests. Real database (embedded and the
external PostgreSQL 15).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from cryptography.fernet import Fernet

from directory import store as directory
from directory.model import OrgKind
from services.intake import store as intake
from services.intake.adapters import AreaCache, PostgresUnitOfWork
from services.intake.commands import CreateReferral, from_request
from services.intake.domain import Create, Decision, Replay
from services.intake.handlers import handle
from services.intake.pii import PersonVault
from services.intake.requests import ReferralRequest
from services.intake.unit_of_work import MemoryIntake, MemoryUnitOfWork, UnitOfWork
from services.privacy import store as privacy
from services.refusal import Invalid
from tests.conftest import referral_body

pytestmark = pytest.mark.infra

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Conn = psycopg.AsyncConnection[Any]


def command(key: str | None = None, **body: Any) -> CreateReferral:
    return from_request(
        ReferralRequest.model_validate(referral_body(**body)),
        referral_id=uuid4(),
        referrer_id="gp-1",
        referrer_kind=OrgKind.GP_PRACTICE,
        received_at=NOW,
        idempotency_key=key,
    )


async def prepared(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await directory.create(conn)
        await intake.create(conn)
        await privacy.create(conn)  # per-person data keys
        await conn.execute(
            "INSERT INTO directory.organisations (id, name, kind, areas, spec) "
            "VALUES ('gp-1', 'GP', 'gp-practice', '{north}', '{}') ON CONFLICT DO NOTHING"
        )


def postgres(url: str) -> PostgresUnitOfWork:
    @asynccontextmanager
    async def connect() -> AsyncIterator[Conn]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            yield conn

    return PostgresUnitOfWork(connect, PersonVault(Fernet.generate_key()), AreaCache())


async def journey(uow: UnitOfWork) -> list[str]:
    """One script of commands; what each came to (the decision's kind or the refusal)."""
    key = f"k-{uuid4()}"
    out: list[str] = []
    for cmd in [
        command(key),
        command(key),
        command(key, urgency="urgent"),
        command(area="atlantis"),
        command(consent={"share_with_link_worker": False}),
        command(),
    ]:
        try:
            decision: Decision = await handle(cmd, uow)
            out.append(type(decision).__name__)
        except Invalid as refused:
            out.append(f"Invalid({refused.field})")
    return out


def test_postgres_and_memory_units_decide_alike(database_url: str) -> None:
    async def both() -> tuple[list[str], list[str]]:
        await prepared(database_url)
        return await journey(MemoryUnitOfWork(MemoryIntake(areas={"north"}))), await journey(
            postgres(database_url)
        )

    memory, real = asyncio.run(both())
    assert (
        memory
        == real
        == [
            "Create",
            "Replay",
            "Invalid(Idempotency-Key)",
            "Invalid(area)",
            "Invalid(consent.share_with_link_worker)",
            "Create",
        ]
    )


def test_concurrent_uses_of_one_key_create_one_referral(database_url: str) -> None:
    key = f"race-{uuid4()}"

    async def race() -> tuple[list[Decision], int, int, list[str]]:
        await prepared(database_url)
        uow = postgres(database_url)
        decisions = await asyncio.gather(*(handle(command(key), uow) for _ in range(6)))
        ids = [d.referral_id for d in decisions]
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM intake.events WHERE stream_id = ANY(%s)", (ids,)
            )
            events = (await cur.fetchone() or (0,))[0]
            cur = await conn.execute(
                "SELECT count(*) FROM intake.referral_people WHERE referral_id = ANY(%s)", (ids,)
            )
            people = (await cur.fetchone() or (0,))[0]
            cur = await conn.execute("SELECT key FROM intake.idempotency")
            keys = [str(r[0]) for r in await cur.fetchall()]
        return decisions, events, people, keys

    decisions, events, people, keys = asyncio.run(race())
    created = [d for d in decisions if isinstance(d, Create)]
    assert len(created) == 1
    assert all(d == Replay(created[0].referral_id) for d in decisions if d is not created[0])
    assert (events, people) == (1, 1)
    assert key not in keys and all(len(k) == 64 for k in keys)  # SHA-256 digests only


def test_details_are_sealed_under_the_persons_key_and_a_new_key_is_not_read_back(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new person's details are sealed under the key made for them in the same unit,
    without reading it back (issue 14); a known person's key is read (it may have been
    shredded). Either way the details open again with the person's key."""
    reads: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def counted(self: psycopg.AsyncCursor[Any], query: Any, *args: Any, **kw: Any) -> Any:
        text = query if isinstance(query, str) else query.as_string(self.connection)
        if text.startswith("SELECT") and "keys.person_keys" in text:
            reads.append(text)
        return await execute(self, query, *args, **kw)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted)

    async def run() -> tuple[int, int, list[dict[str, Any]]]:
        await prepared(database_url)
        uow = postgres(database_url)
        nobody = {**referral_body()["person"], "nhs_number": None}  # never linked: new
        new = await handle(command(person=nobody), uow)
        after_new = len(reads)
        await handle(command(), uow)  # this NHS number: new here or from an earlier test
        known = await handle(command(), uow)  # now certainly a known person
        after_known = len(reads)
        opened = []
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            for decision in (new, known):
                cur = await conn.execute(
                    "SELECT person_ref, ciphertext FROM intake.referral_people "
                    "WHERE referral_id = %s",
                    (decision.referral_id,),
                )
                ref, token = await cur.fetchone() or ("", b"")
                opened.append(await uow.vault.decrypt(conn, ref, bytes(token)))
        return after_new, after_known, opened

    after_new, after_known, opened = asyncio.run(run())
    assert after_new == 0, reads
    assert after_known >= 1  # the known person's key was read to seal their details
    assert opened[0]["name"] == opened[1]["name"] == "Alex Example"
    assert opened[0]["nhs_number"] is None and opened[1]["nhs_number"] == "9434765919"
