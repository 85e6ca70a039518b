"""Contact between link worker and person: first contact, its SLA, and sessions held.

``session-held`` shows how a schema evolves: v2 renamed ``minutes`` and added
``group_size``; v1 events stay in the stores forever and are upcast when read.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import AwareDatetime, Field

from schemas.events.base import ContactMode, EventModel, OrgId


class SessionKind(StrEnum):
    """The kinds alliances count separately (e.g. West Suffolk LifeLink's report)."""

    LONGER_APPOINTMENT = "longer-appointment"
    SHORT_CONVERSATION = "short-conversation"
    GROUP = "group"
    ACCOMPANIED_VISIT = "accompanied-visit"
    OTHER = "other"


Minutes = Annotated[int, Field(ge=1, le=600)]
"""How long a session lasted, in minutes (at most a working day)."""


class FirstContactMade(EventModel):
    """The link worker reached the person for the first time (closes the SLA clock)."""

    event_type: ClassVar[str] = "first-contact-made"
    version: ClassVar[int] = 1

    referral_id: UUID
    service_org: OrgId
    contacted_at: AwareDatetime
    mode: ContactMode


class FirstContactOverdue(EventModel):
    """No first contact within the SLA: the referrer and the alliance should know."""

    event_type: ClassVar[str] = "first-contact-overdue"
    version: ClassVar[int] = 1

    referral_id: UUID
    service_org: OrgId
    due_by: AwareDatetime
    sla_days: int = Field(ge=1, le=365)


class SessionHeldV1(EventModel):
    """A session with the person, as first published; read today as version 2 (upcast)."""

    event_type: ClassVar[str] = "session-held"
    version: ClassVar[int] = 1

    referral_id: UUID
    session_id: UUID
    kind: SessionKind
    minutes: Minutes
    mode: ContactMode
    held_at: AwareDatetime


class SessionHeld(EventModel):
    """A session with the person; its minutes add up to the alliance's one-to-one hours."""

    event_type: ClassVar[str] = "session-held"
    version: ClassVar[int] = 2

    referral_id: UUID
    session_id: UUID
    kind: SessionKind
    duration_minutes: Minutes
    mode: ContactMode
    held_at: AwareDatetime
    group_size: int | None = Field(
        default=None, ge=1, le=200, description="People in the session, when known."
    )


def upcast_session_held_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v1 → v2: ``minutes`` is now ``duration_minutes``; v1 never recorded a group size."""
    upcast = {name: value for name, value in data.items() if name != "minutes"}
    upcast["duration_minutes"] = data["minutes"]
    upcast["group_size"] = None
    return upcast
