"""Entitlement follows the role (issue 12, findings 1 and 2), as a property of journeys.

Hypothesis generates referral journeys (created, routed, declined, re-routed, escalated,
accepted, contacts, sessions, activities, attendance, outcomes, closed). Each journey's
events go through the distributor's policy (``deliveries``: what each organisation's
topic receives), then through the view projection's fold (what each view holds), then
through ``views.entitlement.access`` (what ``GET /referrals/{id}`` returns). The result
must equal what the journey itself says each organisation's role is *now*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from directory.model import OrgKind
from schemas.dataschema import dataschema_uri
from schemas.envelope import CloudEvent
from schemas.registry import latest_version
from services.distributor.policy import Entitlements, distribute, model_of
from views.entitlement import ALL_PERSON_FIELDS, Access, ReferralFacts, access, facts_of_state
from views.projection import ReferralChange

RID = UUID("6f1c2b0e-8a4d-4c1e-9a57-1f2e3d4c5b6a")
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
SERVICES = ("lw1", "lw2", "lw3")
PROVIDERS = {"walk": "vg1", "choir": "vg2", "allotment": "lw3"}  # a service may provide too
KINDS = {
    "gp": OrgKind.GP_PRACTICE,
    "lw1": OrgKind.LINK_WORKER_SERVICE,
    "lw2": OrgKind.LINK_WORKER_SERVICE,
    "lw3": OrgKind.LINK_WORKER_SERVICE,
    "vg1": OrgKind.VOLUNTARY_GROUP,
    "vg2": OrgKind.VOLUNTARY_GROUP,
    "icb": OrgKind.COMMISSIONER,
}
COMMISSIONERS = ["icb"]


@dataclass
class Journey:
    """The truth of one referral, kept apart from the views it is checked against."""

    referrer: str
    events: list[CloudEvent] = field(default_factory=list)
    service: str | None = None
    status: str = "referred"
    declined: set[str] = field(default_factory=set)
    activities: dict[str, str] = field(default_factory=dict)  # activity id -> provider

    def add(self, event_type: str, **data: Any) -> None:
        at = T0 + timedelta(hours=len(self.events))
        self.events.append(
            CloudEvent(
                id=uuid4(),
                source="/services/test",
                type=event_type,
                subject=str(RID),
                time=at,
                dataschema=dataschema_uri(event_type, latest_version(event_type)),
                data={"referral_id": str(RID), **data},
                streamversion=len(self.events) + 1,
                correlationid=RID,
                causationid=None,
                actor="test",
            )
        )

    def expected(self, org: str) -> Access | None:
        """The role the journey gives ``org`` now (DESIGN §4, issue 12 Must have 1)."""
        if KINDS[org] is OrgKind.COMMISSIONER:
            return None
        closed = self.status == "closed"
        holds = self.service == org and self.status in ("routed", "accepted", "in-progress")
        if holds:
            return Access("link-worker", ALL_PERSON_FIELDS)
        if self.service == org and closed:
            return Access("link-worker", ())
        if org == self.referrer:
            return Access("referrer", ALL_PERSON_FIELDS)
        if org in self.activities.values():
            return Access("provider", () if closed else ("name",))
        if org in self.declined or (self.status == "escalated" and org in self.tried):
            return Access("former-service", ())
        return None

    @property
    def tried(self) -> set[str]:
        return {str(e.data["service_org"]) for e in self.events if e.type == "referral-routed"}


def journeys() -> st.SearchStrategy[Journey]:
    @st.composite
    def build(draw: st.DrawFn) -> Journey:
        j = Journey(referrer=draw(st.sampled_from(["gp", "gp", "vg2", "lw3"])))
        j.add(
            "referral-created",
            person_ref="p_abcdef0123456789",
            referrer_org=j.referrer,
            referrer_kind=KINDS[j.referrer].value,
            needs=["stress"],
            urgency="routine",
            consent={
                "share_with_link_worker": True,
                "share_outcomes_with_referrer": draw(st.booleans()),
            },
            area="north",
            age_band="35-49",
            referred_at=T0.isoformat(),
        )
        at = T0.isoformat()
        route_or_escalate(draw, j)
        for _ in range(draw(st.integers(0, 12))):
            if j.status in ("closed", "escalated"):
                break
            if j.status == "routed":
                if draw(st.booleans()):
                    j.add("referral-accepted", service_org=j.service, accepted_at=at)
                    j.status = "accepted"
                else:
                    j.add(
                        "referral-declined",
                        service_org=j.service,
                        reason="no-capacity",
                        declined_at=at,
                    )
                    assert j.service is not None
                    j.declined.add(j.service)
                    j.service, j.status = None, "declined"
                    route_or_escalate(draw, j)
                continue
            step = draw(st.sampled_from(["contact", "session", "activity", "attend", "close"]))
            if step == "contact":
                j.add("first-contact-made", service_org=j.service, contacted_at=at, mode="phone")
                j.status = "in-progress"
            elif step == "session":
                j.add(
                    "session-held",
                    session_id=str(uuid4()),
                    kind="group",
                    duration_minutes=30,
                    mode="in-person",
                    held_at=at,
                )
                j.status = "in-progress"
            elif step == "activity" and len(j.activities) < len(PROVIDERS):
                activity = draw(st.sampled_from(sorted(set(PROVIDERS) - set(j.activities))))
                j.activities[activity] = PROVIDERS[activity]
                j.add(
                    "activity-referred",
                    activity_id=activity,
                    provider_org=PROVIDERS[activity],
                    activity_kind="walking-group",
                    referred_at=at,
                )
            elif step == "attend" and j.activities:
                activity = draw(st.sampled_from(sorted(j.activities)))
                j.add(
                    "activity-attended",
                    activity_id=activity,
                    provider_org=j.activities[activity],
                    attended_at=at,
                    attended=True,
                )
            elif step == "close":
                j.add("referral-closed", reason="completed", closed_at=at)
                j.status = "closed"
        return j

    return build()


def route_or_escalate(draw: st.DrawFn, j: Journey) -> None:
    left = [s for s in SERVICES if s not in j.declined]
    if left and draw(st.integers(0, 4)) > 0:
        j.service = draw(st.sampled_from(left))
        j.add(
            "referral-routed",
            service_org=j.service,
            attempt=len(j.declined) + 1,
            reason="area+needs",
        )
        j.status = "routed"
    else:
        j.add("referral-escalated", reason="no service left", tried=sorted(j.declined))
        j.service, j.status = None, "escalated"


def topics_of(j: Journey) -> dict[str, list[CloudEvent]]:
    """Each organisation's topic, as the distributor fills it (its own pure decision)."""
    ent: Entitlements | None = None
    topics: dict[str, list[CloudEvent]] = {}
    for event in j.events:
        ent, copies = distribute(ent, event, model_of(event), COMMISSIONERS, b"secret")
        for d in copies:
            topics.setdefault(d.org_id, []).append(d.event)
    return topics


def view_facts(events: list[CloudEvent]) -> ReferralFacts | None:
    """What one organisation's view row holds after its topic's events (the projection's
    fold, starting from the row ``referral-created`` inserts)."""
    if not any(e.type == "referral-created" and e.subject == str(RID) for e in events):
        return None  # pseudonymised copies (commissioners) are keyed by another id
    change = ReferralChange()
    for e in events:
        change.fold(e, model_of(e))
    return facts_of_state(change.state)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(journeys())
def test_what_get_referral_returns_follows_the_role(j: Journey) -> None:
    topics = topics_of(j)
    for org, kind in KINDS.items():
        got = access(org, kind, view_facts(topics.get(org, [])))
        assert got == j.expected(org), (org, [e.type for e in j.events])


@settings(max_examples=150, deadline=None)
@given(journeys())
def test_nobody_outside_the_journey_gets_person_details(j: Journey) -> None:
    """The weaker property stated plainly: person-level access only for the referrer, the
    service holding the open referral and providers of an open referral's activities."""
    topics = topics_of(j)
    entitled = {j.referrer}
    if j.status not in ("closed", "escalated", "declined") and j.service:
        entitled.add(j.service)
    if j.status != "closed":
        entitled |= set(j.activities.values())
    for org, kind in KINDS.items():
        got = access(org, kind, view_facts(topics.get(org, [])))
        if got is not None and got.person_level:
            assert org in entitled, (org, [e.type for e in j.events])


def test_a_commissioner_never_gets_a_row_whatever_its_view_holds() -> None:
    facts = ReferralFacts(referrer_org="icb", service_org="icb", status="accepted")
    assert access("icb", OrgKind.COMMISSIONER, facts) is None


def test_a_service_that_declined_keeps_its_history_but_not_the_person() -> None:
    # the view row as it was before the projection cleared the service on decline
    stale = ReferralFacts(referrer_org="gp", service_org="lw1", status="declined")
    assert access("lw1", OrgKind.LINK_WORKER_SERVICE, stale) == Access("former-service", ())


@settings(max_examples=150, deadline=None)
@given(journeys())
def test_topics_carry_nothing_beyond_each_role(j: Journey) -> None:
    """The topic side of the same journeys: organisations with no part in the referral
    receive nothing; commissioners only pseudonymised copies; no partner the real
    person_ref (it would link referrals of one person)."""
    topics = topics_of(j)
    involved = {j.referrer, *j.tried, *j.activities.values(), *COMMISSIONERS}
    assert set(topics) <= involved
    for org, events in topics.items():
        for e in events:
            if org in COMMISSIONERS:
                assert e.subject != str(RID)
            assert e.data.get("person_ref", "") != "p_abcdef0123456789", (org, e.type)
    # a service that declined receives nothing after its own decline
    for service in j.declined:
        types = [e.type for e in topics[service]]
        assert "referral-declined" in types
        after = types[types.index("referral-declined") + 1 :]
        assert after == [] or service in (
            j.referrer,
            j.service,
            *j.activities.values(),
        ), (service, types)
