"""The consumers of domain.lifecycle agree with it: views' batch changes, the in-memory
distributor, journey summaries. Pure: no broker, no database."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.distribution import MemoryDistributor
from domain.lifecycle import NEW, LifecycleEvent, Referral, Status, apply
from referralnet.journey import summarise
from schemas.envelope import CloudEvent
from schemas.events import ReferralCreated, SessionKind
from schemas.registry import dataschema_uri, encode
from tests.unit.test_lifecycle import (
    RID,
    accepted,
    activity,
    attended,
    closed,
    contact,
    created,
    declined,
    escalated,
    one_of_each,
    outcome,
    overdue,
    routed,
    session,
    t,
)
from views.projection import CHANGE_COLUMNS, FIRST_STATUS, ReferralChange

COMMISSIONER = "icb"


def envelope(model: LifecycleEvent, at: datetime) -> CloudEvent:
    event_type, version, data = encode(model)
    return CloudEvent(
        id=uuid4(),
        source="/services/test",
        type=event_type,
        subject=str(RID),
        time=at,
        dataschema=dataschema_uri(event_type, version),
        data=data,
        streamversion=1,
        correlationid=RID,
        causationid=None,
        actor="test",
    )


# -- views: a batch's change, applied as the referrals UPDATE does, equals the fold -------


def inserted_row(model: ReferralCreated) -> dict[str, Any]:
    """The row the projection's INSERT writes for referral-created."""
    row: dict[str, Any] = dict.fromkeys(row_of(NEW))
    row.update(
        status=FIRST_STATUS,
        overdue=False,
        declines=0,
        sessions=0,
        minutes=0,
        activities=0,
        attendances=0,
        outcomes=0,
        last_event_at=model.referred_at,
    )
    return row


def updated_row(row: dict[str, Any], change: ReferralChange) -> dict[str, Any]:
    """What ``_UPDATE_REFERRALS`` does to ``row`` with ``change`` (the SQL, in Python)."""
    c = dict(zip([n for n, _ in CHANGE_COLUMNS[1:]], change.columns(), strict=True))
    moves = c["moves"].obj if c["moves"] is not None else {}
    new = dict(row)
    new["status"] = moves.get(row["status"], row["status"])
    if c["set_service"]:
        new["service_org"] = c["service_org"]
    for name in ("routed_at", "accepted_at", "first_contact_at", "closed_at", "close_reason"):
        new[name] = row[name] if c[name] is None else c[name]
    new["overdue"] = row["overdue"] or c["overdue"]
    for name in ("declines", "sessions", "minutes", "activities", "attendances", "outcomes"):
        new[name] = row[name] + c[name]
    new["last_event_at"] = max(x for x in (row["last_event_at"], c["last_event_at"]) if x)
    return new


def row_of(state: Referral) -> dict[str, Any]:
    """What the row should hold: the lifecycle folded over the whole history."""
    return {
        "status": state.status and state.status.value,
        "service_org": state.parties.service_org,
        "routed_at": state.routed_at,
        "accepted_at": state.accepted_at,
        "first_contact_at": state.first_contact_at,
        "closed_at": state.closed_at,
        "close_reason": state.close_reason and state.close_reason.value,
        "overdue": state.overdue,
        "declines": state.declines,
        "sessions": state.sessions,
        "minutes": state.minutes,
        "activities": state.activities,
        "attendances": state.attendances,
        "outcomes": state.outcomes,
        "last_event_at": state.last_event_at,
    }


ANY_EVENT = st.sampled_from(
    [
        routed("lw-a"),
        routed("lw-b", 2),
        accepted("lw-b"),
        declined("lw-a"),
        escalated(),
        contact(),
        overdue(),
        session(SessionKind.GROUP, 30),
        session(SessionKind.OTHER, 5),
        activity("walks"),
        attended(True),
        attended(False),
        outcome(),
        closed(),
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ANY_EVENT, max_size=25), st.lists(st.integers(0, 25), max_size=6))
def test_batches_written_as_the_view_does_equal_the_whole_fold(
    journey: list[LifecycleEvent], cuts: list[int]
) -> None:
    """Whatever the events and however the batches fall, the row the view's set-based
    update leaves is the lifecycle's fold of the whole history (its status included,
    which depends on the stored one)."""
    first = created(at=t(0))
    timed = [(first, t(0)), *((e, t(i + 1)) for i, e in enumerate(journey))]
    bounds = sorted({0, len(timed), *(min(c, len(timed)) for c in cuts)})
    row = inserted_row(first)
    for start, end in itertools.pairwise(bounds):
        change = ReferralChange()
        for model, at in timed[start:end]:
            change.fold(envelope(model, at), model)
        row = updated_row(row, change)
    state = NEW
    for model, at in timed:
        state = apply(state, model, at=at)
    assert row == row_of(state)


def test_a_lone_session_moves_only_an_accepted_row() -> None:
    change = ReferralChange()
    change.fold(envelope(session(SessionKind.GROUP, 30), t(1)), session(SessionKind.GROUP, 30))
    moves = change.status_moves()
    assert moves is not None and moves.obj == {"accepted": "in-progress"}


def test_a_batch_without_status_events_leaves_the_status() -> None:
    change = ReferralChange()
    change.fold(envelope(outcome(), t(1)), outcome())
    assert change.status_moves() is None


def test_routed_sets_the_status_whatever_was_stored() -> None:
    change = ReferralChange()
    change.fold(envelope(routed(), t(1)), routed())
    moves = change.status_moves()
    assert moves is not None
    assert moves.obj == {s.value: "routed" for s in Status if s is not Status.ROUTED}


# -- the in-memory distributor is the distributor's own decision ----------------------------


def test_memory_distributor_follows_the_lifecycle_parties() -> None:
    memory = MemoryDistributor([COMMISSIONER], b"secret")
    steps: list[LifecycleEvent] = [
        created(),
        routed("lw-a"),
        declined("lw-a"),
        routed("lw-b", 2),
        accepted("lw-b"),
        activity("walks"),
        session(SessionKind.GROUP, 30),
        closed(),
    ]
    got: dict[str, list[str]] = {}
    for i, model in enumerate(steps):
        for org, copy in memory.copies(envelope(model, t(i))):
            got.setdefault(org, []).append(copy.type)
    assert got["lw-a"] == ["referral-created", "referral-routed", "referral-declined"]
    assert got["lw-b"] == [
        "referral-created",
        "referral-routed",
        "referral-accepted",
        "activity-referred",
        "session-held",
        "referral-closed",
    ]
    assert got["walks"] == ["referral-created", "activity-referred", "referral-closed"]
    assert len(got[COMMISSIONER]) == len(steps)
    ent = memory.entitlements[str(RID)]
    assert (ent.service_org, ent.providers) == ("lw-b", ("walks",))


def test_memory_distributor_drops_a_referral_never_created() -> None:
    memory = MemoryDistributor([COMMISSIONER], b"secret")
    assert memory.copies(envelope(session(SessionKind.GROUP, 30), t(1))) == []
    assert memory.entitlements == {} and memory.created == {}


# -- journey summaries --------------------------------------------------------------------


def test_every_event_has_a_summary_without_the_person_ref() -> None:
    for model in one_of_each():
        line = summarise(model)
        assert line and "p_abcdef" not in line, type(model).__name__
    assert summarise(session(SessionKind.GROUP, 35)) == "group, 35 min, in-person"
    assert summarise(closed(t(1) + timedelta(0))) == "completed"
