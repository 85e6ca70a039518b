"""Intake's PostgreSQL side: idempotency keys, the directory's areas, the person tables.

The unit's statements run in one transaction on one connection: the key claim first (an
``INSERT ... ON CONFLICT DO NOTHING``, so concurrent uses of one key wait for the first
and then see its row, without a unique violation), then the pseudonym and the encrypted
details (``services.intake.pii``, issue 16's per-person keys), then the append.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from eventstore.recorder import PostgresRecorder
from eventstore.records import StoredEvent
from services.intake.commands import IdempotencyKey
from services.intake.domain import Claim, Create
from services.intake.pii import PersonVault, person_and_key
from services.intake.requests import Person
from services.intake.store import STORE
from services.intake.unit_of_work import IntakeWork

AREAS = (
    "SELECT a FROM directory.organisations, unnest(areas) AS a "
    "UNION SELECT area FROM directory.activities"
)


class AreaCache:
    """The directory's areas seen so far. An area not among them is looked up again,
    so an area added by ``directory load`` is accepted at once."""

    def __init__(self) -> None:
        self.areas: set[str] = set()

    async def known(self, conn: AsyncConnection[Any], area: str) -> bool:
        if area in self.areas:
            return True
        cur = await conn.execute(AREAS)
        self.areas = {str(r[0]) for r in await cur.fetchall()}
        return area in self.areas


async def claim(
    conn: AsyncConnection[Any], org_id: str, key: IdempotencyKey, referral_id: UUID
) -> Claim | None:
    """Claim ``key`` for ``referral_id`` in the caller's transaction: None when this
    request claimed it, else the earlier use. Keys are stored only as digests, so a key
    never appears in SQL text, a constraint violation or the PostgreSQL log."""
    cur = await conn.execute(
        "INSERT INTO intake.idempotency (org_id, key, referral_id, request_hash) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (org_id, key) DO NOTHING RETURNING referral_id",
        (org_id, key.key_digest, referral_id, key.body_digest),
    )
    if await cur.fetchone() is not None:
        return None
    cur = await conn.execute(
        "SELECT referral_id, request_hash FROM intake.idempotency WHERE org_id = %s AND key = %s",
        (org_id, key.key_digest),
    )
    row = await cur.fetchone()
    if row is None:  # claimed and rolled back between our two statements: retry the claim
        return await claim(conn, org_id, key, referral_id)
    return Claim(UUID(str(row[0])), None if row[1] is None else str(row[1]))


class PostgresIntakeWork:
    """``IntakeWork`` on one connection, inside the unit's transaction."""

    def __init__(self, conn: AsyncConnection[Any], vault: PersonVault, areas: AreaCache) -> None:
        self.conn, self.vault, self.areas = conn, vault, areas
        self.recorder = PostgresRecorder(STORE, conn)
        self._new_keys: dict[str, bytes] = {}
        """Data keys made in this unit, by person_ref (sealing reuses them unread)."""

    async def area_known(self, area: str) -> bool:
        return await self.areas.known(self.conn, area)

    async def claim(self, org_id: str, key: IdempotencyKey, referral_id: UUID) -> Claim | None:
        return await claim(self.conn, org_id, key, referral_id)

    async def person_ref(self, person: Person) -> str:
        ref, key = await person_and_key(self.conn, self.vault, person.model_dump(mode="json"))
        if key is not None:
            self._new_keys[ref] = key
        return ref

    async def record(self, decision: Create, person_ref: str, person: Person) -> list[StoredEvent]:
        details = person.model_dump(mode="json")
        sealed = await self.vault.encrypt(
            self.conn, person_ref, details, self._new_keys.get(person_ref)
        )
        await self.conn.execute(
            "INSERT INTO intake.referral_people (referral_id, person_ref, ciphertext) "
            "VALUES (%s, %s, %s)",
            (decision.referral_id, person_ref, sealed),
        )
        return await self.recorder.append(decision.referral_id, 0, decision.events)


Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]]


class PostgresUnitOfWork:
    """``UnitOfWork`` over PostgreSQL: a transaction per unit on the connection
    ``connect`` gives; person details sealed by ``vault``; areas remembered in ``areas``."""

    def __init__(self, connect: Connect, vault: PersonVault, areas: AreaCache) -> None:
        self.connect, self.vault, self.areas = connect, vault, areas

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[IntakeWork]:
        async with self.connect() as conn, conn.transaction():
            yield PostgresIntakeWork(conn, self.vault, self.areas)

    def begin(self) -> AbstractAsyncContextManager[IntakeWork]:
        return self._unit()
