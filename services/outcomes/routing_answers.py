"""What routing's answers, heard through the journey log, do to outcomes' case.

Pure folds (no I/O): ``opened`` starts a case from ``referral-created``, ``hear`` applies
routing's ``referral-routed`` / ``-accepted`` / ``-declined`` / ``-escalated``. The
consumer (``projection.CaseProjection``) folds the events it hears with ``hear``;
``referralnet projections verify`` folds the stores with it and compares.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from functools import singledispatch
from uuid import UUID

from schemas.events.base import EventModel
from schemas.events.referral import (
    ReferralAccepted,
    ReferralDeclined,
    ReferralEscalated,
    ReferralRouted,
)
from services.outcomes.domain import Case


def opened(referral_id: UUID, referrer_org: str, referred_at: datetime) -> Case:
    """A case as ``referral-created`` starts it (status "new", nobody holds it yet)."""
    return Case(referral_id, referrer_org, referred_at, None, "new", None, None)


@singledispatch
def hear(model: EventModel, case: Case, at: datetime) -> Case:
    """What routing's answer (an event of the journey log at ``at``) changes in the case.

    The one statement of these rules: the consumer (``projection.CaseProjection``) and
    ``referralnet projections`` (over the stores) both fold with it.
    """
    return case


@hear.register
def _(model: ReferralRouted, case: Case, at: datetime) -> Case:
    return replace(
        case, service_org=model.service_org, status="routed", routed_at=at, accepted_at=None
    )


@hear.register
def _(model: ReferralAccepted, case: Case, at: datetime) -> Case:
    if case.service_org != model.service_org:
        return case
    return replace(case, status="accepted", accepted_at=at)


@hear.register
def _(model: ReferralDeclined, case: Case, at: datetime) -> Case:
    if case.service_org != model.service_org or case.status != "routed":
        return case
    return replace(case, status="declined")


@hear.register
def _(model: ReferralEscalated, case: Case, at: datetime) -> Case:
    return replace(case, status="escalated", service_org=None)
