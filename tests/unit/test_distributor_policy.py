"""Who receives which event (DESIGN §4), as the distributor's pure policy decides it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from schemas.dataschema import dataschema_uri
from schemas.envelope import CloudEvent, to_kafka
from schemas.registry import decode, latest_version
from services.distributor.policy import (
    Delivery,
    Entitlements,
    deliveries,
    pseudonym,
    pseudonymise,
)

SECRET = b"test-secret"
COMMISSIONERS = ["icb-a", "icb-b"]
RID = UUID("6f1c2b0e-8a4d-4c1e-9a57-1f2e3d4c5b6a")
PERSON = "p_abcdef0123456789"
AT = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def event(event_type: str, **data: Any) -> CloudEvent:
    return CloudEvent(
        id=uuid4(),
        source="/services/test",
        type=event_type,
        subject=str(RID),
        time=AT,
        dataschema=dataschema_uri(event_type, latest_version(event_type)),
        data={"referral_id": str(RID), **data},
        streamversion=1,
        correlationid=RID,
        causationid=None,
        actor="test",
    )


def created_event() -> CloudEvent:
    return event(
        "referral-created",
        person_ref=PERSON,
        referrer_org="gp",
        referrer_kind="gp-practice",
        needs=["stress"],
        urgency="routine",
        consent={"share_with_link_worker": True, "share_outcomes_with_referrer": False},
        area="north",
        age_band="35-49",
        referred_at=AT.isoformat(),
    )


CREATED = created_event()

EVENTS: dict[str, CloudEvent] = {
    "referral-created": CREATED,
    "referral-routed": event("referral-routed", service_org="lw", attempt=1, reason="area"),
    "referral-accepted": event("referral-accepted", service_org="lw", accepted_at=AT.isoformat()),
    "first-contact-made": event(
        "first-contact-made", service_org="lw", contacted_at=AT.isoformat(), mode="phone"
    ),
    "first-contact-overdue": event(
        "first-contact-overdue", service_org="lw", due_by=AT.isoformat(), sla_days=7
    ),
    "session-held": event(
        "session-held",
        session_id=str(uuid4()),
        kind="longer-appointment",
        duration_minutes=50,
        mode="in-person",
        held_at=AT.isoformat(),
    ),
    "activity-referred": event(
        "activity-referred",
        activity_id="walk",
        provider_org="vg",
        activity_kind="walking-group",
        referred_at=AT.isoformat(),
    ),
    "activity-attended": event(
        "activity-attended",
        activity_id="walk",
        provider_org="vg",
        attended_at=AT.isoformat(),
        attended=True,
    ),
    "outcome-recorded": event(
        "outcome-recorded",
        measure="ucla3",
        timepoint="baseline",
        items=[3, 3, 2],
        score=8.0,
        recorded_at=AT.isoformat(),
    ),
    "referral-closed": event("referral-closed", reason="completed", closed_at=AT.isoformat()),
}


def entitlements(*, share: bool = False, service: str | None = "lw", providers=()) -> Entitlements:
    return Entitlements(
        referrer_org="gp",
        share_outcomes_with_referrer=share,
        created={"frozen": "referral-created"},
        service_org=service,
        providers=tuple(providers),
    )


def by_org(result: list[Delivery]) -> dict[str, list[str]]:
    orgs: dict[str, list[str]] = {}
    for d in result:
        orgs.setdefault(d.org_id, []).append(d.event.type)
    return orgs


def partners(result: list[Delivery]) -> dict[str, list[str]]:
    """Deliveries to everyone but the commissioners (checked separately)."""
    return {o: t for o, t in by_org(result).items() if o not in COMMISSIONERS}


def deliver(event_type: str, ent: Entitlements | None, created_copy: CloudEvent | None = None):
    return deliveries(EVENTS[event_type], ent, COMMISSIONERS, SECRET, created_copy)


# -- every event type, consent off ------------------------------------------------------------

# (event type, entitlements after applying it, partner deliveries expected)
JOURNEY: list[tuple[str, Entitlements, dict[str, list[str]]]] = [
    ("referral-created", entitlements(service=None), {"gp": ["referral-created"]}),
    (
        "referral-routed",
        entitlements(),
        {"gp": ["referral-routed"], "lw": ["referral-created", "referral-routed"]},
    ),
    (
        "referral-accepted",
        entitlements(),
        {"gp": ["referral-accepted"], "lw": ["referral-accepted"]},
    ),
    (
        "first-contact-made",
        entitlements(),
        {"gp": ["first-contact-made"], "lw": ["first-contact-made"]},
    ),
    (
        "first-contact-overdue",
        entitlements(),
        {"gp": ["first-contact-overdue"], "lw": ["first-contact-overdue"]},
    ),
    ("session-held", entitlements(), {"gp": ["session-held"], "lw": ["session-held"]}),
    (
        "activity-referred",
        entitlements(providers=["vg"]),
        {
            "gp": ["activity-referred"],
            "lw": ["activity-referred"],
            "vg": ["referral-created", "activity-referred"],
        },
    ),
    (
        "activity-attended",
        entitlements(providers=["vg"]),
        {"gp": ["activity-attended"], "lw": ["activity-attended"], "vg": ["activity-attended"]},
    ),
    ("outcome-recorded", entitlements(providers=["vg"]), {"lw": ["outcome-recorded"]}),
    (
        "referral-closed",
        entitlements(providers=["vg"]),
        {"gp": ["referral-closed"], "lw": ["referral-closed"], "vg": ["referral-closed"]},
    ),
]


@pytest.mark.parametrize(("event_type", "ent", "expected"), JOURNEY, ids=[j[0] for j in JOURNEY])
def test_each_event_type_goes_to_exactly_the_entitled_partners(event_type, ent, expected) -> None:
    copy = CREATED if event_type in ("referral-routed", "activity-referred") else None
    result = deliver(event_type, ent, copy)
    assert partners(result) == expected
    # every commissioner gets one (pseudonymised) copy of every event
    for c in COMMISSIONERS:
        assert by_org(result)[c] == [event_type]


def test_outcomes_reach_the_referrer_only_with_consent() -> None:
    without = deliver("outcome-recorded", entitlements(share=False))
    with_consent = deliver("outcome-recorded", entitlements(share=True))
    assert "gp" not in by_org(without)
    assert by_org(with_consent)["gp"] == ["outcome-recorded"]
    # consent changes nothing else
    assert partners(with_consent) == {"lw": ["outcome-recorded"], "gp": ["outcome-recorded"]}


def test_consent_does_not_change_milestones() -> None:
    for event_type in EVENTS:
        if event_type == "outcome-recorded":
            continue
        off = by_org(deliver(event_type, entitlements(share=False, providers=["vg"])))
        on = by_org(deliver(event_type, entitlements(share=True, providers=["vg"])))
        assert off == on, event_type


def test_the_referral_itself_is_sent_only_once_an_org_becomes_entitled() -> None:
    # routed: the service gets the referral-created copy; accepted: no second copy
    routed = partners(deliver("referral-routed", entitlements(), CREATED))
    assert routed["lw"][0] == "referral-created"
    accepted = partners(deliver("referral-accepted", entitlements()))
    assert "referral-created" not in accepted["lw"]


def test_a_service_that_declined_sees_its_decline_and_nothing_after() -> None:
    declined = event(
        "referral-declined", service_org="lw", reason="no-capacity", declined_at=AT.isoformat()
    )
    after_decline = entitlements(service=None)
    result = partners(deliveries(declined, after_decline, COMMISSIONERS, SECRET))
    assert result == {"gp": ["referral-declined"], "lw": ["referral-declined"]}

    rerouted = event("referral-routed", service_org="lw2", attempt=2, reason="area")
    now_lw2 = entitlements(service="lw2")
    result = partners(deliveries(rerouted, now_lw2, COMMISSIONERS, SECRET, CREATED))
    assert result == {
        "gp": ["referral-routed"],
        "lw2": ["referral-created", "referral-routed"],
    }
    for later in ("referral-accepted", "session-held", "outcome-recorded", "referral-closed"):
        assert "lw" not in by_org(deliver(later, now_lw2)), later
        assert "lw2" in by_org(deliver(later, now_lw2)), later


def test_escalation_goes_to_referrer_and_commissioners_only() -> None:
    escalated = event("referral-escalated", reason="none left", tried=["lw", "lw2"])
    result = deliveries(escalated, entitlements(service=None), COMMISSIONERS, SECRET)
    assert partners(result) == {"gp": ["referral-escalated"]}


def test_a_provider_receives_only_its_own_activity() -> None:
    ent = entitlements(providers=["vg", "vg2"])
    other = event(
        "activity-referred",
        activity_id="choir",
        provider_org="vg2",
        activity_kind="choir",
        referred_at=AT.isoformat(),
    )
    result = by_org(deliveries(other, ent, COMMISSIONERS, SECRET, CREATED))
    assert result["vg2"] == ["referral-created", "activity-referred"]
    assert "vg" not in result
    attended_vg = by_org(deliver("activity-attended", ent))
    assert attended_vg["vg"] == ["activity-attended"]
    assert "vg2" not in attended_vg
    for casework in (
        "referral-accepted",
        "session-held",
        "first-contact-made",
        "outcome-recorded",
    ):
        got = by_org(deliver(casework, entitlements(share=True, providers=["vg", "vg2"])))
        assert "vg" not in got and "vg2" not in got, casework
    # the end of the referral reaches every provider: their access to the person ends
    closed = by_org(deliver("referral-closed", entitlements(providers=["vg", "vg2"])))
    assert closed["vg"] == closed["vg2"] == ["referral-closed"]


def test_an_org_with_two_roles_gets_one_copy() -> None:
    # a link-worker service referring to itself: referrer and routed service at once
    ent = Entitlements("lw", False, {}, service_org="lw")
    result = deliver("referral-routed", ent, CREATED)
    assert by_org(result)["lw"] == ["referral-routed"]  # it made the referral: no copy
    result = deliver("session-held", ent)
    assert by_org(result)["lw"] == ["session-held"]


def test_an_unknown_referral_reaches_only_the_commissioners() -> None:
    result = deliver("session-held", None)
    assert sorted(by_org(result)) == sorted(COMMISSIONERS)


# -- commissioners: pseudonymised -------------------------------------------------------------


def _commissioner_copy(ev: CloudEvent, org: str) -> CloudEvent:
    (copy,) = [
        d.event for d in deliveries(ev, entitlements(), COMMISSIONERS, SECRET) if d.org_id == org
    ]
    return copy


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_commissioner_copies_carry_no_real_referral_id_or_person_ref(event_type: str) -> None:
    ev = EVENTS[event_type]
    for org in COMMISSIONERS:
        copy = _commissioner_copy(ev, org)
        assert copy.subject != str(RID)
        assert copy.data["referral_id"] == copy.subject
        key, value, headers = to_kafka(copy)
        raw = key + value + b"".join(v for _, v in headers)
        assert str(RID).encode() not in raw, "real referral id in the commissioner's copy"
        assert RID.hex.encode() not in raw
        assert PERSON.encode() not in raw
        # everything else is kept, and the copy still satisfies its published schema
        assert {k: v for k, v in copy.data.items() if k not in ("referral_id", "person_ref")} == {
            k: v for k, v in ev.data.items() if k not in ("referral_id", "person_ref")
        }
        decode(copy.type, copy.schema_version, json.loads(value))
        assert (copy.type, copy.time, copy.actor) == (ev.type, ev.time, ev.actor)


def test_person_ref_is_replaced_for_commissioners() -> None:
    copy = _commissioner_copy(CREATED, "icb-a")
    assert copy.data["person_ref"] != PERSON
    assert copy.data["person_ref"].startswith("p_")


def test_pseudonyms_are_stable_per_commissioner_and_differ_across_commissioners() -> None:
    a1 = pseudonymise(CREATED, SECRET, "icb-a")
    a2 = pseudonymise(replace(CREATED, id=uuid4()), SECRET, "icb-a")
    b = pseudonymise(CREATED, SECRET, "icb-b")
    # stable: every event of the referral maps to the same case and person for icb-a
    assert a1.subject == a2.subject
    assert a1.data["person_ref"] == a2.data["person_ref"]
    session = pseudonymise(EVENTS["session-held"], SECRET, "icb-a")
    assert session.subject == a1.subject == session.data["referral_id"]
    # unlinkable across commissioners
    assert a1.subject != b.subject
    assert a1.data["person_ref"] != b.data["person_ref"]
    # and depends on the secret
    assert pseudonymise(CREATED, b"other", "icb-a").subject != a1.subject
    assert pseudonym(SECRET, "icb-a", "x") == pseudonym(SECRET, "icb-a", "x")
    assert pseudonym(SECRET, "icb-a", "x") != pseudonym(SECRET, "icb-b", "x")


def test_the_same_person_in_two_referrals_stays_one_person_for_a_commissioner() -> None:
    other_rid = uuid4()
    second = replace(
        CREATED,
        subject=str(other_rid),
        correlationid=other_rid,
        data={**CREATED.data, "referral_id": str(other_rid)},
    )
    first_copy = pseudonymise(CREATED, SECRET, "icb-a")
    second_copy = pseudonymise(second, SECRET, "icb-a")
    assert first_copy.subject != second_copy.subject
    assert first_copy.data["person_ref"] == second_copy.data["person_ref"]


def test_partners_get_the_event_unchanged() -> None:
    ev = EVENTS["session-held"]
    for d in deliver("session-held", entitlements()):
        if d.org_id not in COMMISSIONERS:
            assert d.event is ev


def test_partners_get_a_person_ref_of_their_own_per_referral() -> None:
    """No identifier oracle (issue 12, finding 4): a partner's person_ref is neither the
    real pseudonym nor shared with another partner or another referral of that person."""
    routed = deliver("referral-routed", entitlements(), CREATED)
    created = deliver("referral-created", entitlements(service=None))
    copies = {d.org_id: d.event for d in routed + created if d.event.type == "referral-created"}
    refs = {org: copy.data["person_ref"] for org, copy in copies.items() if org in ("gp", "lw")}
    assert PERSON not in refs.values()
    assert refs["gp"] != refs["lw"]
    other_rid = uuid4()
    second = replace(
        CREATED, subject=str(other_rid), data={**CREATED.data, "referral_id": str(other_rid)}
    )
    again = deliveries(second, entitlements(service=None), COMMISSIONERS, SECRET)
    (gp_again,) = [d.event for d in again if d.org_id == "gp"]
    assert gp_again.data["person_ref"] != refs["gp"]
    decode(gp_again.type, gp_again.schema_version, gp_again.data)
