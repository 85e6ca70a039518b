"""The referral lifecycle fold (domain.lifecycle): pure, no I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from domain import lifecycle
from domain.lifecycle import (
    EVENT_CLASSES,
    NEW,
    STATUS_RULES,
    LifecycleEvent,
    Parties,
    Referral,
    Status,
    apply,
    apply_parties,
    as_event,
    fold,
    next_status,
)
from schemas.events import (
    ActivityAttended,
    ActivityReferred,
    AgeBand,
    ClosureReason,
    Consent,
    ConsentWithdrawn,
    ContactMode,
    DeclineReason,
    ErasureReason,
    FirstContactMade,
    FirstContactOverdue,
    Need,
    OutcomeRecorded,
    PersonErased,
    ReferralAccepted,
    ReferralClosed,
    ReferralCreated,
    ReferralDeclined,
    ReferralEscalated,
    ReferralRouted,
    SessionHeld,
    SessionHeldV1,
    SessionKind,
    Timepoint,
    Urgency,
    WithdrawnConsent,
)
from schemas.measures import Measure
from schemas.registry import decode, encode

RID = UUID("00000000-0000-4000-8000-000000000001")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def t(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def created(*, share: bool = True, at: datetime = T0) -> ReferralCreated:
    return ReferralCreated(
        referral_id=RID,
        person_ref="p_abcdef",
        referrer_org="gp-north",
        referrer_kind="gp-practice",
        needs=[Need.SOCIAL_CONNECTION],
        urgency=Urgency.ROUTINE,
        consent=Consent(share_with_link_worker=True, share_outcomes_with_referrer=share),
        area="north",
        age_band=AgeBand.AGE_35_49,
        referred_at=at,
    )


def routed(service: str = "lw-a", attempt: int = 1) -> ReferralRouted:
    return ReferralRouted(referral_id=RID, service_org=service, attempt=attempt, reason="area")


def accepted(service: str = "lw-a", at: datetime = T0) -> ReferralAccepted:
    return ReferralAccepted(referral_id=RID, service_org=service, accepted_at=at)


def declined(service: str = "lw-a", at: datetime = T0) -> ReferralDeclined:
    return ReferralDeclined(
        referral_id=RID, service_org=service, reason=DeclineReason.NO_CAPACITY, declined_at=at
    )


def escalated() -> ReferralEscalated:
    return ReferralEscalated(referral_id=RID, reason="no service left", tried=["lw-a"])


def contact(at: datetime = T0) -> FirstContactMade:
    return FirstContactMade(
        referral_id=RID, service_org="lw-b", contacted_at=at, mode=ContactMode.PHONE
    )


def overdue() -> FirstContactOverdue:
    return FirstContactOverdue(referral_id=RID, service_org="lw-b", due_by=t(100), sla_days=5)


def session(kind: SessionKind, minutes: int, at: datetime = T0) -> SessionHeld:
    return SessionHeld(
        referral_id=RID,
        session_id=uuid4(),
        kind=kind,
        duration_minutes=minutes,
        mode=ContactMode.IN_PERSON,
        held_at=at,
    )


def activity(provider: str, activity_id: str = "walk-1", at: datetime = T0) -> ActivityReferred:
    return ActivityReferred(
        referral_id=RID,
        activity_id=activity_id,
        provider_org=provider,
        activity_kind="walking-group",
        referred_at=at,
    )


def attended(came: bool, at: datetime = T0) -> ActivityAttended:
    return ActivityAttended(
        referral_id=RID, activity_id="walk-1", provider_org="walks", attended_at=at, attended=came
    )


def outcome(at: datetime = T0) -> OutcomeRecorded:
    return OutcomeRecorded.record(
        referral_id=RID,
        measure=Measure.UCLA3,
        timepoint=Timepoint.BASELINE,
        items=[2, 2, 2],
        score=None,
        recorded_at=at,
    )


def closed(at: datetime = T0) -> ReferralClosed:
    return ReferralClosed(referral_id=RID, reason=ClosureReason.COMPLETED, closed_at=at)


def withdrawn(at: datetime = T0) -> ConsentWithdrawn:
    return ConsentWithdrawn(
        referral_id=RID,
        consent=WithdrawnConsent.SHARE_OUTCOMES_WITH_REFERRER,
        recorded_by="gp-a",
        withdrawn_at=at,
    )


def erased(at: datetime = T0) -> PersonErased:
    return PersonErased(
        referral_id=RID, reason=ErasureReason.OBJECTION, requested_by="lw-b", erased_at=at
    )


def one_of_each() -> list[LifecycleEvent]:
    """One event of every lifecycle class, in journey order."""
    return [
        created(),
        routed(),
        accepted(),
        declined(),
        escalated(),
        contact(),
        overdue(),
        session(SessionKind.GROUP, 30),
        activity("walks"),
        attended(True),
        outcome(),
        closed(),
        withdrawn(),
        erased(),
    ]


def test_consent_withdrawal_stops_outcome_sharing_and_keeps_the_rest() -> None:
    shared = fold([created(), routed(), accepted(), outcome(t(5))])
    assert shared.parties.share_outcomes_with_referrer is True
    after = apply(shared, withdrawn(t(6)))
    assert after.parties.share_outcomes_with_referrer is False
    assert after.consent_withdrawn_at == t(6)
    assert (after.status, after.outcomes, after.parties.service_org) == (
        shared.status,
        shared.outcomes,
        shared.parties.service_org,
    )


def test_erasure_keeps_the_journey_and_its_figures() -> None:
    before = fold([created(), routed(), accepted(), session(SessionKind.GROUP, 30), closed(t(9))])
    after = apply(before, erased(t(10)))
    assert after.erased_at == t(10)
    assert dataclasses.replace(after, erased_at=None, last_event_at=before.last_event_at) == before


def test_one_of_each_covers_every_lifecycle_class() -> None:
    assert [type(e) for e in one_of_each()] == list(EVENT_CLASSES)


def test_a_whole_journey_with_a_decline_and_a_second_service() -> None:
    steps: list[tuple[LifecycleEvent, Status]] = [
        (created(at=t(0)), Status.REFERRED),
        (routed("lw-a", 1), Status.ROUTED),
        (declined("lw-a", t(1)), Status.DECLINED),
        (routed("lw-b", 2), Status.ROUTED),
        (accepted("lw-b", t(2)), Status.ACCEPTED),
        (contact(t(3)), Status.IN_PROGRESS),
        (session(SessionKind.LONGER_APPOINTMENT, 50, t(4)), Status.IN_PROGRESS),
        (session(SessionKind.GROUP, 90, t(5)), Status.IN_PROGRESS),
        (session(SessionKind.LONGER_APPOINTMENT, 40, t(6)), Status.IN_PROGRESS),
        (activity("walks", "walk-1", t(7)), Status.IN_PROGRESS),
        (activity("walks", "walk-2", t(7)), Status.IN_PROGRESS),
        (activity("choir", "sing-1", t(7)), Status.IN_PROGRESS),
        (attended(True, t(8)), Status.IN_PROGRESS),
        (attended(False, t(9)), Status.IN_PROGRESS),
        (outcome(t(10)), Status.IN_PROGRESS),
        (closed(t(11)), Status.CLOSED),
    ]
    state = NEW
    for event, status in steps:
        state = apply(state, event)
        assert state.status is status, type(event).__name__
    assert state.parties == Parties(
        referrer_org="gp-north",
        share_outcomes_with_referrer=True,
        service_org="lw-b",  # the holder stays named after closing (its role is over)
        routed_to=("lw-a", "lw-b"),
        declined_by=("lw-a",),
        providers=("walks", "choir"),
    )
    assert (state.declines, state.escalations, state.holder_changes) == (1, 0, 3)
    assert (state.sessions, state.minutes) == (3, 180)
    assert dict(state.sessions_by_kind) == {
        SessionKind.LONGER_APPOINTMENT: 2,
        SessionKind.GROUP: 1,
    }
    assert dict(state.minutes_by_kind) == {
        SessionKind.LONGER_APPOINTMENT: 90,
        SessionKind.GROUP: 90,
    }
    assert (state.activities, state.attendances, state.missed, state.outcomes) == (3, 1, 1, 1)
    assert (state.accepted_at, state.first_contact_at, state.closed_at) == (t(2), t(3), t(11))
    assert state.close_reason is ClosureReason.COMPLETED
    assert state.routed_at is None  # routed has no time of its own and none was given
    assert state.last_event_at == t(11)
    assert state.created and state.closed
    assert state.request == steps[0][0]


def test_escalation_and_decline_clear_the_holder() -> None:
    state = fold([created(), routed("lw-a")])
    assert state.parties.service_org == "lw-a"
    assert fold([escalated()], state).parties.service_org is None
    assert fold([declined("lw-a")], state).parties.service_org is None
    assert fold([escalated()], state).status is Status.ESCALATED


def test_a_session_moves_only_an_accepted_referral_on() -> None:
    for before, after in [
        (Status.ACCEPTED, Status.IN_PROGRESS),
        (Status.ROUTED, Status.ROUTED),
        (Status.CLOSED, Status.CLOSED),
        (None, None),
    ]:
        state = apply(Referral(status=before), session(SessionKind.OTHER, 10))
        assert state.status is after, before


def test_a_partial_history_has_no_status_until_it_sets_one() -> None:
    """A consumer seeing a referral from its middle: counters count what it saw."""
    state = fold([session(SessionKind.GROUP, 20), outcome()])
    assert state.status is None and not state.created
    assert (state.sessions, state.minutes, state.outcomes) == (1, 20, 1)
    assert fold([routed("lw-c")], state).status is Status.ROUTED


def test_created_again_does_not_wind_the_referral_back() -> None:
    state = fold([created(), routed(), accepted()])
    assert apply(state, created()).status is Status.ACCEPTED


def test_envelope_time_overrides_the_events_own() -> None:
    state = apply(apply(NEW, created(at=t(0))), routed(), at=t(5))
    assert state.routed_at == t(5) and state.last_event_at == t(5)
    # last_event_at is the latest seen, not the last folded
    assert apply(state, accepted(at=t(1))).last_event_at == t(5)


def test_state_is_immutable_and_apply_returns_a_new_one() -> None:
    before = fold([created(), routed()])
    after = apply(before, session(SessionKind.GROUP, 30))
    assert before.sessions == 0 and after.sessions == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.sessions = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        after.sessions_by_kind[SessionKind.GROUP] = 9  # type: ignore[index]


def test_next_status_agrees_with_apply_for_every_class_and_start() -> None:
    for event in one_of_each():
        for start in [None, *Status]:
            expected = next_status(start, type(event))
            assert apply(Referral(status=start), event).status is expected


def test_status_rules_name_only_lifecycle_classes() -> None:
    assert set(STATUS_RULES) <= set(EVENT_CLASSES)


def test_apply_parties_is_apply_restricted_to_parties() -> None:
    parties = NEW.parties
    state = NEW
    for event in one_of_each():
        parties, state = apply_parties(parties, event), apply(state, event)
        assert parties == state.parties


def test_as_event_takes_latest_models_and_refuses_an_old_version() -> None:
    event = session(SessionKind.GROUP, 30)
    assert as_event(event) is event
    old = SessionHeldV1(
        referral_id=RID,
        session_id=uuid4(),
        kind=SessionKind.GROUP,
        minutes=30,
        mode=ContactMode.PHONE,
        held_at=T0,
    )
    with pytest.raises(TypeError, match="decode"):
        as_event(old)
    # through the registry a v1 session is folded like any other
    upcast = as_event(decode("session-held", 1, encode(old)[2]))
    assert apply(NEW, upcast).minutes == 30


def test_occurred_at_is_each_events_own_time() -> None:
    assert lifecycle.occurred_at(routed()) is None
    assert lifecycle.occurred_at(closed(t(3))) == t(3)
    assert lifecycle.occurred_at(overdue()) == t(100)


def test_every_state_has_exactly_its_declared_fields() -> None:
    """The fold builds states without ``dataclasses.replace`` (for speed): a misspelt
    field would add an attribute instead of failing, so check none appears."""
    names = {f.name for f in dataclasses.fields(Referral)}
    party_names = {f.name for f in dataclasses.fields(Parties)}
    state = NEW
    for event in one_of_each():
        state = apply(state, event)
        assert set(vars(state)) == names, type(event).__name__
        assert set(vars(state.parties)) == party_names, type(event).__name__
