"""The unit of work outcomes' handlers run in, and its in-memory implementation.

``UnitOfWork.begin()`` opens one unit: with ``write=True`` a transaction in which the
case is read (locked), the decision's events appended with ``expected_version`` and the
case table updated, all or nothing; with ``write=False`` a look without a transaction
(the handler must not hold a database connection while it waits for routing). The
PostgreSQL implementation is ``adapters.PostgresUnitOfWork``; ``MemoryUnitOfWork`` is
for service tests with no I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol
from uuid import UUID

from directory.model import Activity
from eventstore.recorder import MemoryRecorder
from eventstore.records import StoredEvent
from schemas.registry import decode
from services.outcomes.domain import Case, Decision, Rules, evolve


class Casework(Protocol):
    """What one unit of work offers the handlers."""

    async def case(self, referral_id: UUID, *, lock: bool = False) -> Case | None:
        """The case with outcomes' own events folded in (locked if ``lock``), or None."""
        ...

    async def record(self, case: Case, decision: Decision) -> list[StoredEvent]:
        """Append the decision's events after ``case.version`` (``VersionConflict`` if the
        stream moved on) and bring the case table up to ``decision.after``."""
        ...

    async def activity(self, activity_id: str) -> Activity | None:
        """The directory's onward activity, or None."""
        ...

    async def known_to_intake(self, referral_id: UUID) -> bool:
        """Intake recorded the referral (so "not yet" rather than "not found")."""
        ...

    async def routing_holder(self, referral_id: UUID) -> tuple[str, str] | None:
        """(service_org, status) as routing has it now, or None if not routed."""
        ...

    async def waiting(self, now: datetime, rules: Rules, limit: int) -> list[UUID]:
        """Cases that may be past their first-contact SLA at ``now`` (locked, skipping
        those another transaction holds); ``domain.decide`` has the last word."""
        ...


class UnitOfWork(Protocol):
    def begin(self, *, write: bool = True) -> AbstractAsyncContextManager[Casework]:
        """One unit: a transaction if ``write`` (committed on a clean exit)."""
        ...


@dataclass
class MemoryWorld:
    """Everything outcomes' handlers can see, in memory: what routing told outcomes
    (``holdings``), outcomes' own stream, the directory's activities, and what intake and
    routing have recorded (for "not yet" versus "not found")."""

    recorder: MemoryRecorder = field(default_factory=MemoryRecorder)
    holdings: dict[UUID, Case] = field(default_factory=dict)
    activities: dict[str, Activity] = field(default_factory=dict)
    intake: set[UUID] = field(default_factory=set)
    routing: dict[UUID, tuple[str, str]] = field(default_factory=dict)


class MemoryCasework:
    """``Casework`` over a ``MemoryWorld``: the case is always the fold of the stream."""

    def __init__(self, world: MemoryWorld) -> None:
        self.world = world

    async def case(self, referral_id: UUID, *, lock: bool = False) -> Case | None:
        held = self.world.holdings.get(referral_id)
        if held is None:
            return None
        events = await self.world.recorder.read(referral_id)
        models = [decode(e.type, e.schema_version, e.data) for e in events]
        return evolve(replace(held, version=0), models)

    async def record(self, case: Case, decision: Decision) -> list[StoredEvent]:
        return await self.world.recorder.append(case.referral_id, case.version, decision.events)

    async def activity(self, activity_id: str) -> Activity | None:
        return self.world.activities.get(activity_id)

    async def known_to_intake(self, referral_id: UUID) -> bool:
        return referral_id in self.world.intake

    async def routing_holder(self, referral_id: UUID) -> tuple[str, str] | None:
        return self.world.routing.get(referral_id)

    async def waiting(self, now: datetime, rules: Rules, limit: int) -> list[UUID]:
        return list(self.world.holdings)[:limit]


class MemoryUnitOfWork:
    """``UnitOfWork`` for service tests; ``units`` counts the units begun (a handler
    that waits must not hold one)."""

    def __init__(self, world: MemoryWorld | None = None) -> None:
        self.world = world or MemoryWorld()
        self.units = 0

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[Casework]:
        self.units += 1
        yield MemoryCasework(self.world)

    def begin(self, *, write: bool = True) -> AbstractAsyncContextManager[Casework]:
        return self._unit()
