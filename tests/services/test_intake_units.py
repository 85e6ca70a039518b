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
