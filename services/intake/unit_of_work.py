"""The unit of work intake's handler runs in, and its in-memory implementation.

One unit is one transaction: the ``Idempotency-Key`` claimed first (concurrent uses of
one key wait for the first), the person's pseudonym looked up or made, their details
stored encrypted and ``referral-created`` appended with ``expected_version`` 0, all or
nothing. The PostgreSQL implementation is ``adapters.PostgresUnitOfWork``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from eventstore.recorder import MemoryRecorder
from eventstore.records import StoredEvent
from services.intake.commands import IdempotencyKey
from services.intake.domain import Claim, Create
from services.intake.nhs_number import identifies_a_person
from services.intake.requests import Person


class IntakeWork(Protocol):
    """What one unit of work offers intake's handler."""

    async def area_known(self, area: str) -> bool:
        """Some organisation or activity of the directory has ``area`` (one added by
        ``directory load`` counts at once)."""
        ...

    async def claim(self, org_id: str, key: IdempotencyKey, referral_id: UUID) -> Claim | None:
        """Claim ``key`` of ``org_id`` for ``referral_id`` in this unit: None if this unit
        claimed it, else the earlier use (after waiting for a unit that holds it)."""
        ...

    async def person_ref(self, person: Person) -> str:
        """The person's pseudonym: the same for an NHS number seen before, else new."""
        ...

    async def record(self, decision: Create, person_ref: str, person: Person) -> list[StoredEvent]:
        """Store ``person``'s details (encrypted) for the referral and append the
        decision's events to its new stream (``VersionConflict`` if it exists)."""
        ...


class UnitOfWork(Protocol):
    def begin(self) -> AbstractAsyncContextManager[IntakeWork]:
        """One unit: committed on a clean exit, rolled back on an exception."""
        ...


@dataclass
class MemoryIntake:
    """Intake's world in memory: its stream, the directory's areas, keys, people."""

    recorder: MemoryRecorder = field(default_factory=MemoryRecorder)
    areas: set[str] = field(default_factory=set)
    claims: dict[tuple[str, str], Claim] = field(default_factory=dict)
    people: dict[str, str] = field(default_factory=dict)
    """person_ref by NHS number (PostgreSQL keys it by a keyed digest instead)."""
    details: dict[UUID, tuple[str, Person]] = field(default_factory=dict)
    """(person_ref, details) by referral, as ``intake.referral_people`` holds them."""


class MemoryIntakeWork:
    """``IntakeWork`` over a ``MemoryIntake``."""

    refs = itertools.count(1)

    def __init__(self, world: MemoryIntake) -> None:
        self.world = world

    async def area_known(self, area: str) -> bool:
        return area in self.world.areas

    async def claim(self, org_id: str, key: IdempotencyKey, referral_id: UUID) -> Claim | None:
        held = self.world.claims.get((org_id, key.key_digest))
        if held is not None:
            return held
        self.world.claims[(org_id, key.key_digest)] = Claim(referral_id, key.body_digest)
        return None

    async def person_ref(self, person: Person) -> str:
        nhs = person.nhs_number
        if nhs and identifies_a_person(nhs) and nhs in self.world.people:
            return self.world.people[nhs]
        ref = f"p_mem{next(self.refs):06d}"
        if nhs and identifies_a_person(nhs):
            self.world.people[nhs] = ref
        return ref

    async def record(self, decision: Create, person_ref: str, person: Person) -> list[StoredEvent]:
        stored = await self.world.recorder.append(decision.referral_id, 0, decision.events)
        self.world.details[decision.referral_id] = (person_ref, person)
        return stored


class MemoryUnitOfWork:
    """``UnitOfWork`` for service tests (no I/O); a unit that raises leaves the world as
    it found it, as a rolled-back transaction does."""

    def __init__(self, world: MemoryIntake | None = None) -> None:
        self.world = world or MemoryIntake()

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[IntakeWork]:
        claims, people = copy.copy(self.world.claims), copy.copy(self.world.people)
        try:
            yield MemoryIntakeWork(self.world)
        except BaseException:
            self.world.claims, self.world.people = claims, people
            raise

    def begin(self) -> AbstractAsyncContextManager[IntakeWork]:
        return self._unit()
