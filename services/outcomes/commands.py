"""What a partner (or outcomes' own SLA timer) asks outcomes to do: small immutable values.

Built by the entry points (``api``, ``sla``) from validated requests; carried to
``handlers.handle``; decided on by ``domain.decide``. Times are world times given by the
caller (timezone-aware); ``org`` is the acting organisation's id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

from directory.model import Activity


@dataclass(frozen=True)
class RecordFirstContact:
    """First contact with the person by the service holding the referral."""

    referral_id: UUID
    org: str
    contacted_at: datetime
    mode: str


@dataclass(frozen=True)
class RecordSession:
    """A session held (``minutes`` of ``kind``, by ``mode``)."""

    referral_id: UUID
    org: str
    kind: str
    minutes: int
    mode: str
    held_at: datetime
    session_id: UUID = field(default_factory=uuid4)


@dataclass(frozen=True)
class ReferToActivity:
    """Connect the person to an onward activity; ``activity`` is the directory's entry
    for ``activity_id`` (None: not in the directory)."""

    referral_id: UUID
    org: str
    activity_id: str
    activity: Activity | None
    referred_at: datetime


@dataclass(frozen=True)
class RecordAttendance:
    """The activity's provider (``org``) says whether the person came."""

    referral_id: UUID
    org: str
    activity_id: str
    attended_at: datetime
    attended: bool


@dataclass(frozen=True)
class MeasureTaken:
    """One measure's answers (``items``) or headline ``score`` (see ``schemas.measures``)."""

    measure: str
    items: tuple[int, ...] | None
    score: float | None


@dataclass(frozen=True)
class RecordOutcome:
    """One outcome measure at a timepoint (baseline, follow-up, discharge)."""

    referral_id: UUID
    org: str
    taken: MeasureTaken
    timepoint: str
    recorded_at: datetime


@dataclass(frozen=True)
class RecordAssessment:
    """Several measures at one sitting: all recorded, or none."""

    referral_id: UUID
    org: str
    measures: tuple[MeasureTaken, ...]
    timepoint: str
    recorded_at: datetime


@dataclass(frozen=True)
class CloseReferral:
    """Close the referral with a reason (``schemas`` ``ClosureReason``)."""

    referral_id: UUID
    org: str
    reason: str
    closed_at: datetime


@dataclass(frozen=True)
class FlagOverdue:
    """The SLA timer: flag the referral if first contact is overdue at ``now``."""

    referral_id: UUID
    now: datetime


CaseworkCommand = (
    RecordFirstContact
    | RecordSession
    | ReferToActivity
    | RecordOutcome
    | RecordAssessment
    | CloseReferral
)
"""The commands only the service holding the (accepted, open) referral may give."""

Command = CaseworkCommand | RecordAttendance | FlagOverdue
