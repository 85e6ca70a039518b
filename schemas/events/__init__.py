"""Event data models, one per type and version; the bus carries their JSON (DESIGN §2-3).

Import from here; the submodules only group the journey's stages.
"""

from schemas.events.activity import ActivityAttended, ActivityReferred
from schemas.events.base import ContactMode, EventModel, Need
from schemas.events.contact import (
    FirstContactMade,
    FirstContactOverdue,
    SessionHeld,
    SessionHeldV1,
    SessionKind,
    upcast_session_held_v1,
)
from schemas.events.outcome import OutcomeRecorded, Timepoint
from schemas.events.privacy import (
    ConsentWithdrawn,
    ErasureReason,
    PersonErased,
    WithdrawnConsent,
)
from schemas.events.referral import (
    AgeBand,
    ClosureReason,
    Consent,
    DeclineReason,
    ReferralAccepted,
    ReferralClosed,
    ReferralCreated,
    ReferralDeclined,
    ReferralEscalated,
    ReferralRouted,
    Urgency,
)

ALL_MODELS: tuple[type[EventModel], ...] = (
    ReferralCreated,
    ReferralRouted,
    ReferralAccepted,
    ReferralDeclined,
    ReferralEscalated,
    FirstContactMade,
    FirstContactOverdue,
    SessionHeldV1,
    SessionHeld,
    ActivityReferred,
    ActivityAttended,
    OutcomeRecorded,
    ReferralClosed,
    ConsentWithdrawn,
    PersonErased,
)
"""Every version of every event type, in journey order."""

__all__ = [
    "ALL_MODELS",
    "ActivityAttended",
    "ActivityReferred",
    "AgeBand",
    "ClosureReason",
    "Consent",
    "ConsentWithdrawn",
    "ContactMode",
    "DeclineReason",
    "ErasureReason",
    "EventModel",
    "FirstContactMade",
    "FirstContactOverdue",
    "Need",
    "OutcomeRecorded",
    "PersonErased",
    "ReferralAccepted",
    "ReferralClosed",
    "ReferralCreated",
    "ReferralDeclined",
    "ReferralEscalated",
    "ReferralRouted",
    "SessionHeld",
    "SessionHeldV1",
    "SessionKind",
    "Timepoint",
    "Urgency",
    "WithdrawnConsent",
    "upcast_session_held_v1",
]
