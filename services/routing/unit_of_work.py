"""The unit of work routing's handlers run in, and its in-memory implementation.

One unit is one transaction: the case read (locked), the candidates locked in name
order (so concurrent decisions never deadlock nor overbook), the decision's events
appended with ``expected_version``, the case row and the caseloads updated. The
PostgreSQL implementation is ``adapters.PostgresUnitOfWork``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol
from uuid import UUID

from eventstore.recorder import MemoryRecorder
from eventstore.records import StoredEvent
from schemas.events.referral import ReferralCreated
from services.routing.domain import Candidate, Decision, RoutingCase, opened


class RoutingWork(Protocol):
    """What one unit of work offers routing's handlers."""

    async def open(self, created: ReferralCreated, at: datetime) -> bool:
        """Record the case ``created`` starts; False if it was there (a redelivery)."""
        ...

    async def case(
        self, referral_id: UUID, *, lock: bool = True, versioned: bool = True
    ) -> RoutingCase | None:
        """The case, locked for this unit (``lock=False``: this unit already holds it,
        having just opened it), with its stream's version; None if unknown.
        ``versioned=False``: the version may be stale (for decisions that append nothing)."""
        ...

    async def candidates(self, area: str) -> list[Candidate]:
        """The services covering ``area`` with their caseloads, locked in name order."""
        ...

    async def sync_capacity(self) -> None:
        """Bring the ledger up to date with the directory (a service may have joined)."""
        ...

    async def known_to_intake(self, referral_id: UUID) -> bool:
        """Intake recorded the referral (so "not yet" rather than "not found")."""
        ...

    async def record(
        self, before: RoutingCase, decision: Decision, at: datetime
    ) -> list[StoredEvent]:
        """Append the decision's events after ``before.version`` (``VersionConflict`` if
        the stream moved on), write ``decision.after`` and its caseload changes."""
        ...


class UnitOfWork(Protocol):
    retryable: bool
    """Whether a unit that failed can be begun again (False: it runs in a transaction
    its caller holds, which a failure leaves aborted: the caller retries)."""

    def begin(self) -> AbstractAsyncContextManager[RoutingWork]:
        """One unit: committed on a clean exit, rolled back on an exception."""
        ...


@dataclass
class MemoryRouting:
    """Routing's world in memory: cases, the capacity ledger, its stream, intake's ids."""

    recorder: MemoryRecorder = field(default_factory=MemoryRecorder)
    cases: dict[UUID, RoutingCase] = field(default_factory=dict)
    capacity: dict[str, Candidate] = field(default_factory=dict)
    directory: dict[str, Candidate] = field(default_factory=dict)
    intake: set[UUID] = field(default_factory=set)


class MemoryRoutingWork:
    """``RoutingWork`` over a ``MemoryRouting``; the case's version is the stream's."""

    def __init__(self, world: MemoryRouting) -> None:
        self.world = world

    async def open(self, created: ReferralCreated, at: datetime) -> bool:
        if created.referral_id in self.world.cases:
            return False
        self.world.cases[created.referral_id] = opened(created)
        return True

    async def case(
        self, referral_id: UUID, *, lock: bool = True, versioned: bool = True
    ) -> RoutingCase | None:
        case = self.world.cases.get(referral_id)
        if case is None:
            return None
        return replace(case, version=len(await self.world.recorder.read(referral_id)))

    async def candidates(self, area: str) -> list[Candidate]:
        return sorted(
            (c for c in self.world.capacity.values() if area in c.areas),
            key=lambda c: c.service_org,
        )

    async def sync_capacity(self) -> None:
        for org, listed in self.world.directory.items():
            held = self.world.capacity.get(org)
            caseload = held.caseload if held else 0
            limit = max(listed.caseload_limit, caseload)
            self.world.capacity[org] = replace(listed, caseload=caseload, caseload_limit=limit)

    async def known_to_intake(self, referral_id: UUID) -> bool:
        return referral_id in self.world.intake

    async def record(
        self, before: RoutingCase, decision: Decision, at: datetime
    ) -> list[StoredEvent]:
        stored = await self.world.recorder.append(
            before.referral_id, before.version, decision.events
        )
        self.world.cases[before.referral_id] = decision.after
        for org, delta in decision.places.items():
            held = self.world.capacity[org]
            caseload = held.caseload + delta
            if caseload < 0 or (held.caseload_limit >= 0 and caseload > held.caseload_limit):
                raise AssertionError(f"{org}: caseload {caseload} outside the ledger's bounds")
            self.world.capacity[org] = replace(held, caseload=caseload)
        return stored


class MemoryUnitOfWork:
    """``UnitOfWork`` for service tests (no I/O)."""

    retryable = True

    def __init__(self, world: MemoryRouting | None = None) -> None:
        self.world = world or MemoryRouting()

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[RoutingWork]:
        yield MemoryRoutingWork(self.world)

    def begin(self) -> AbstractAsyncContextManager[RoutingWork]:
        return self._unit()
