"""Outcomes' journey rules as pure decisions: ``decide(case, command)`` and the folds.

Domain speed: no I/O, no fakes, milliseconds. Every refusal a partner can meet in
casework (403, 404, 409 with the state, 422 naming the field) and every event a command
records is pinned here; the HTTP mapping is tested once in ``tests/e2e``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from directory.model import Activity
from eventstore.records import NewEvent
from schemas.events.base import Need
from schemas.registry import decode
from services.outcomes import commands as c
from services.outcomes.domain import Case, Rules, decide, evolve
from services.outcomes.routing_answers import hear, opened
from services.refusal import Conflict, Forbidden, Invalid, NotFound, NotYet, Refusal

pytestmark = pytest.mark.domain

RULES = Rules(7, ZoneInfo("Europe/London"))
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
REFERRED = datetime(2026, 5, 1, 9, tzinfo=UTC)
ROUTED = REFERRED + timedelta(hours=1)
RID = UUID(int=7)


def accepted(**changes: object) -> Case:
    case = Case(RID, "gp", REFERRED, "lw", "accepted", ROUTED, ROUTED, routed_seen_at=ROUTED)
    return replace(case, **changes)  # type: ignore[arg-type]


def events(case: Case | None, command: c.Command) -> list[NewEvent]:
    decision = decide(case, command, RULES, NOW)
    assert not isinstance(decision, Refusal), decision.reason
    return decision.events


def refusal(case: Case | None, command: c.Command) -> Refusal:
    decision = decide(case, command, RULES, NOW)
    assert isinstance(decision, Refusal), [e.type for e in decision.events]
    return decision


def after(case: Case, command: c.Command) -> Case:
    """The case after the command: as the decision says, and as its events, stored and
    read back, fold to (what the in-memory unit of work and a rebuild rely on)."""
    decision = decide(case, command, RULES, NOW)
    assert not isinstance(decision, Refusal), decision.reason
    read_back = [decode(e.type, e.schema_version, e.data) for e in decision.events]
    assert evolve(case, read_back) == decision.after
    return decision.after


def contact(at: datetime, org: str = "lw") -> c.RecordFirstContact:
    return c.RecordFirstContact(RID, org, at, "phone")


ACTIVITY = Activity(
    id="walk", name="Walking group", provider="vg", kind="walking", needs=[Need.PHYSICAL_ACTIVITY],
    area="north",
)  # fmt: skip


def every_casework_command(at: datetime) -> list[c.CaseworkCommand]:
    taken = c.MeasureTaken("swemwbs", (3, 3, 3, 3, 3, 3, 3), None)
    return [
        contact(at),
        c.RecordSession(RID, "lw", "short-conversation", 20, "phone", at),
        c.ReferToActivity(RID, "lw", "walk", ACTIVITY, at),
        c.RecordOutcome(RID, "lw", taken, "baseline", at),
        c.RecordAssessment(RID, "lw", (taken,), "baseline", at),
        c.CloseReferral(RID, "lw", "completed", at),
    ]


# -- first contact and its SLA ------------------------------------------------------------


def test_first_contact_within_the_sla_records_only_the_contact() -> None:
    got = events(accepted(), contact(ROUTED + timedelta(days=2)))
    assert [e.type for e in got] == ["first-contact-made"]
    assert got[0].actor == "lw" and got[0].correlation_id == RID


def test_first_contact_after_the_sla_flags_the_breach_first_once() -> None:
    late = ROUTED + timedelta(days=8)
    got = events(accepted(), contact(late))
    assert [e.type for e in got] == ["first-contact-overdue", "first-contact-made"]
    assert got[0].data["sla_days"] == 7
    assert [e.type for e in events(accepted(overdue_flagged=True), contact(late))] == [
        "first-contact-made"
    ]


def test_a_second_first_contact_is_409_with_the_state() -> None:
    case = after(accepted(), contact(ROUTED + timedelta(days=1)))
    assert case.first_contact_at == ROUTED + timedelta(days=1) and case.version == 1
    refused = refusal(case, contact(ROUTED + timedelta(days=2)))
    assert isinstance(refused, Conflict) and refused.status == 409
    assert refused.reason == "first contact is already recorded"
    assert refused.state is not None and refused.state["first_contact_at"] is not None


# -- who may act, and when ------------------------------------------------------------------


@pytest.mark.parametrize("command", every_casework_command(ROUTED + timedelta(days=1)))
def test_casework_by_anyone_but_the_accepted_holder_is_refused(command: c.Command) -> None:
    assert isinstance(refusal(accepted(service_org="other"), command), Forbidden)
    not_yet = refusal(accepted(status="routed", accepted_at=None), command)
    assert isinstance(not_yet, Conflict)
    assert not_yet.reason == "the referral has not been accepted yet"
    assert not_yet.state is not None and not_yet.state["status"] == "routed"
    assert isinstance(refusal(None, command), NotFound)


@pytest.mark.parametrize("command", every_casework_command(ROUTED + timedelta(days=3)))
def test_every_command_after_closing_is_409_closed(command: c.Command) -> None:
    closed = after(accepted(), c.CloseReferral(RID, "lw", "completed", ROUTED + timedelta(days=2)))
    assert closed.status == "closed" and closed.closed_at is not None
    refused = refusal(closed, command)
    assert isinstance(refused, Conflict) and refused.reason == "the referral is closed"


@pytest.mark.parametrize(
    ("at", "reason"),
    [
        (NOW + timedelta(minutes=6), "must not be in the future"),
        (REFERRED - timedelta(seconds=1), "must not be before the referral was made"),
    ],
)
def test_world_times_are_checked_on_every_command(at: datetime, reason: str) -> None:
    fields = ["contacted_at", "held_at", "referred_at", "recorded_at", "recorded_at", "closed_at"]
    for command, field in zip(every_casework_command(at), fields, strict=True):
        refused = refusal(accepted(), command)
        assert isinstance(refused, Invalid) and (refused.reason, refused.field) == (reason, field)
    assert not isinstance(
        decide(accepted(), contact(NOW + timedelta(minutes=4)), RULES, NOW), Refusal
    )


# -- sessions, activities, attendance, outcomes --------------------------------------------


def test_a_session_records_its_kind_and_minutes() -> None:
    command = c.RecordSession(RID, "lw", "group", 90, "in-person", ROUTED + timedelta(days=1))
    (event,) = events(accepted(), command)
    assert event.type == "session-held" and event.schema_version == 2
    assert event.data["duration_minutes"] == 90 and event.data["session_id"] == str(
        command.session_id
    )


def test_an_onward_activity_must_exist_be_active_and_be_new() -> None:
    at = ROUTED + timedelta(days=1)
    missing = refusal(accepted(), c.ReferToActivity(RID, "lw", "nope", None, at))
    assert isinstance(missing, Invalid) and missing.field == "activity_id"
    closed = ACTIVITY.model_copy(update={"status": "defunct"})
    assert isinstance(
        refusal(accepted(), c.ReferToActivity(RID, "lw", "walk", closed, at)), Conflict
    )
    linked = after(accepted(), c.ReferToActivity(RID, "lw", "walk", ACTIVITY, at))
    assert linked.activities["walk"].provider_org == "vg"
    again = refusal(linked, c.ReferToActivity(RID, "lw", "walk", ACTIVITY, at))
    assert isinstance(again, Conflict) and "already connected" in again.reason


def test_attendance_is_the_providers_and_only_after_the_referral_to_it() -> None:
    at = ROUTED + timedelta(days=1)
    linked = after(accepted(), c.ReferToActivity(RID, "lw", "walk", ACTIVITY, at))
    came = c.RecordAttendance(RID, "vg", "walk", at + timedelta(days=1), True)
    assert [e.type for e in events(linked, came)] == ["activity-attended"]
    assert isinstance(refusal(accepted(), came), NotFound)  # not connected
    assert isinstance(refusal(None, came), NotFound)
    assert isinstance(refusal(linked, replace(came, org="lw")), Forbidden)
    early = refusal(linked, replace(came, attended_at=at - timedelta(minutes=1)))
    assert isinstance(early, Invalid) and early.field == "attended_at"
    closed = replace(linked, status="closed")
    assert isinstance(refusal(closed, came), Conflict)


def test_outcomes_are_checked_against_the_measures_real_range() -> None:
    at = ROUTED + timedelta(days=1)
    good = c.MeasureTaken("swemwbs", (3, 3, 3, 3, 3, 3, 3), None)
    bad = c.MeasureTaken("swemwbs", (3, 3, 3, 3, 3, 3, 9), None)
    (event,) = events(accepted(), c.RecordOutcome(RID, "lw", good, "baseline", at))
    assert event.type == "outcome-recorded" and event.data["score"] is not None
    refused = refusal(accepted(), c.RecordOutcome(RID, "lw", bad, "baseline", at))
    assert isinstance(refused, Invalid) and refused.field is not None and "items" in refused.field


def test_an_assessment_is_all_or_nothing_and_names_the_bad_measure() -> None:
    at = ROUTED + timedelta(days=1)
    good = c.MeasureTaken("swemwbs", (3, 3, 3, 3, 3, 3, 3), None)
    minutes = c.MeasureTaken("activity-minutes", None, 150)
    bad = c.MeasureTaken("activity-minutes", None, -1)
    both = events(accepted(), c.RecordAssessment(RID, "lw", (good, minutes), "baseline", at))
    assert [e.data["measure"] for e in both] == ["swemwbs", "activity-minutes"]
    twice = refusal(accepted(), c.RecordAssessment(RID, "lw", (good, good), "baseline", at))
    assert isinstance(twice, Invalid) and twice.field == "measures"
    partly = refusal(accepted(), c.RecordAssessment(RID, "lw", (good, bad), "baseline", at))
    assert isinstance(partly, Invalid) and (partly.field or "").startswith("measures[1].")


# -- the SLA timer -------------------------------------------------------------------------


def test_the_timer_flags_a_waiting_case_once_and_never_a_contacted_or_recent_one() -> None:
    waiting = accepted(routed_at=NOW - timedelta(days=10), routed_seen_at=NOW - timedelta(days=10))
    (flag,) = events(waiting, c.FlagOverdue(RID, NOW))
    assert flag.type == "first-contact-overdue" and flag.actor == "outcomes"
    assert flag.occurred_at == NOW - timedelta(days=3)  # due: 7 days after routing
    flagged = evolve(waiting, [decode(flag.type, flag.schema_version, flag.data)])
    assert events(flagged, c.FlagOverdue(RID, NOW)) == []
    assert events(replace(waiting, first_contact_at=NOW), c.FlagOverdue(RID, NOW)) == []
    assert events(replace(waiting, status="closed"), c.FlagOverdue(RID, NOW)) == []
    recent = replace(waiting, routed_at=NOW - timedelta(days=2))
    assert events(recent, c.FlagOverdue(RID, NOW)) == []
    # a year of history loaded today: routed long ago, but outcomes only just heard
    loaded = replace(waiting, routed_at=NOW - timedelta(days=365), routed_seen_at=NOW)
    assert events(loaded, c.FlagOverdue(RID, NOW)) == []
    assert isinstance(refusal(None, c.FlagOverdue(RID, NOW)), NotYet)


# -- what routing's answers do to the case (declines and re-routing) ----------------------


def test_routing_answers_move_the_case_declines_and_re_routes_included() -> None:
    from schemas.events.referral import (
        DeclineReason,
        ReferralAccepted,
        ReferralDeclined,
        ReferralEscalated,
        ReferralRouted,
    )

    at = ROUTED
    case = opened(RID, "gp", REFERRED)
    assert (case.status, case.service_org) == ("new", None)
    case = hear(
        ReferralRouted(referral_id=RID, service_org="lw-a", attempt=1, reason="r"), case, at
    )
    assert (case.status, case.service_org, case.routed_at) == ("routed", "lw-a", at)
    declined = ReferralDeclined(
        referral_id=RID, service_org="lw-a", reason=DeclineReason.NO_CAPACITY, declined_at=at
    )
    case = hear(declined, case, at)
    assert case.status == "declined"
    later = at + timedelta(hours=1)
    case = hear(
        ReferralRouted(referral_id=RID, service_org="lw-b", attempt=2, reason="r"), case, later
    )
    assert (case.status, case.service_org, case.routed_at) == ("routed", "lw-b", later)
    # a late answer from the service that declined changes nothing
    stale = ReferralAccepted(referral_id=RID, service_org="lw-a", accepted_at=later)
    assert hear(stale, case, later) == case
    assert hear(declined, case, later) == case
    case = hear(
        ReferralAccepted(referral_id=RID, service_org="lw-b", accepted_at=later), case, later
    )
    assert (case.status, case.accepted_at) == ("accepted", later)
    escalated = ReferralEscalated(referral_id=RID, reason="none left", tried=["lw-a", "lw-b"])
    assert (hear(escalated, case, later).status, hear(escalated, case, later).service_org) == (
        "escalated",
        None,
    )


def test_the_fold_counts_versions_and_ignores_what_it_does_not_decide_on() -> None:
    at = ROUTED + timedelta(days=1)
    case = accepted()
    for command in every_casework_command(at)[:4]:
        case = after(case, command)
    assert case.version == 4 and case.first_contact_at == at and "walk" in case.activities
    assert case.status == "accepted" and case.closed_at is None
