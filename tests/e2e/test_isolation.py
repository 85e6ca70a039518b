"""Each organisation sees exactly what its role entitles it to: through the API and on
the topics. Commissioners see aggregates only; personal data never reaches any topic."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from referralnet.system import RunningSystem
from services.distributor.policy import pseudonym
from services.distributor.store import pseudonym_secret
from tests.conftest import Alliance, alliance_yaml, referral_body, register_alliance, wait_until

pytestmark = pytest.mark.infra


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: dict[str, bytes]

    @property
    def raw(self) -> bytes:
        return self.key + self.value + b"".join(k.encode() + v for k, v in self.headers.items())

    @property
    def type(self) -> str:
        return self.headers["ce_type"].decode()

    @property
    def subject(self) -> str:
        return self.headers["ce_subject"].decode()


def read_topics(bootstrap: str, topics: list[str], *, timeout: float = 20.0) -> list[Record]:
    """Every record of ``topics`` from the beginning up to their current end."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    try:
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = {tp: end for tp, end in consumer.end_offsets(partitions).items() if end > 0}
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, "topics not read to their end in time"
            for tp_records in consumer.poll(timeout_ms=500).values():
                records.extend(
                    # A header value may be null (poison other tests put on the bus).
                    Record(
                        r.topic,
                        r.key or b"",
                        r.value or b"",
                        {k: v or b"" for k, v in r.headers or []},
                    )
                    for r in tp_records
                )
        return records
    finally:
        consumer.close()


def all_topics(bootstrap: str) -> list[str]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return sorted(t for t in consumer.topics() if not t.startswith("__"))
    finally:
        consumer.close()


def detail(client: httpx.Client, rid: str) -> dict[str, Any] | None:
    response = client.get(f"/referrals/{rid}", params={"person": "false"})
    if response.status_code in (404, 409):  # 409 not-yet-known: on its way to this view
        return None
    assert response.status_code == 200, response.text
    return dict(response.json())


def view_row(client: httpx.Client, rid: str) -> dict[str, Any] | None:
    found = detail(client, rid)
    return found["view"] if found else None


def post(client: httpx.Client, path: str, body: dict[str, Any], status: int = 201) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


@dataclass(frozen=True)
class Journey:
    rid: str
    person_ref: str
    name: str
    nhs_number: str
    phone: str


def person(suffix: str, n: int) -> dict[str, str]:
    """Details unique to this test, so that finding them anywhere is a leak."""
    return {
        "name": f"Zebedee Quill-{suffix}-{n}",
        "date_of_birth": "1961-07-30",
        "nhs_number": "401 023 2137",
        "phone": f"07700 9{suffix[:5]}",
        "notes": f"lives alone; note-{suffix}-{n}",
    }


def full_journey(alliance: Alliance, n: int, share_outcomes: bool) -> Journey:
    """Created by referrer, routed to link_worker, accepted, contact, session, activity at
    the provider's walk, attendance by the provider, outcome recorded, closed."""
    suffix = alliance.suffix
    referrer, lw, vg = (alliance.client(r) for r in ("referrer", "link_worker", "provider"))
    who = person(suffix, n)
    created = post(
        referrer,
        "/referrals",
        referral_body(
            person=who,
            # lw covers both needs, lw2 one: lw2 is eligible but must not be chosen
            needs=["social-connection", "stress"],
            area=f"area-{suffix}",
            consent={
                "share_with_link_worker": True,
                "share_outcomes_with_referrer": share_outcomes,
            },
        ),
    )
    rid = created["referral_id"]
    wait_until(lambda: (v := view_row(referrer, rid)) and v["status"] == "routed")
    assert view_row(referrer, rid)["service_org"] == alliance.ids["link_worker"]  # type: ignore[index]
    post(lw, f"/referrals/{rid}/accept", {"accepted_at": "2026-01-06T09:00:00Z"}, 200)
    post(lw, f"/referrals/{rid}/contacts", {"contacted_at": "2026-01-07T09:00:00Z"})
    post(
        lw,
        f"/referrals/{rid}/sessions",
        {
            "kind": "longer-appointment",
            "minutes": 50,
            "mode": "in-person",
            "held_at": "2026-01-08T10:00:00Z",
        },
    )
    post(
        lw,
        f"/referrals/{rid}/activities",
        {"activity_id": f"walk-{suffix}", "referred_at": "2026-01-08T11:00:00Z"},
    )
    post(
        vg,
        f"/referrals/{rid}/activities/walk-{suffix}/attendance",
        {"attended_at": "2026-01-10T10:00:00Z"},
    )
    post(
        lw,
        f"/referrals/{rid}/outcomes",
        {
            "measure": "ucla3",
            "timepoint": "baseline",
            "items": [3, 3, 2],
            "recorded_at": "2026-01-08T10:30:00Z",
        },
    )
    post(
        lw, f"/referrals/{rid}/close", {"reason": "completed", "closed_at": "2026-02-01T10:00:00Z"}
    )
    assert "person_ref" not in created  # no identifier oracle (issue 12, finding 4)
    person_ref = view_row(referrer, rid)["person_ref"]  # type: ignore[index]
    return Journey(rid, person_ref, who["name"], "4010232137", who["phone"])


@pytest.fixture(scope="module")
def alliance(system: RunningSystem) -> Alliance:
    """One alliance for the module: its tests only read the journeys made below."""
    suffix = uuid.uuid4().hex[:8]
    return register_alliance(system, alliance_yaml(suffix), suffix)


@pytest.fixture(scope="module")
def journeys(alliance: Alliance) -> tuple[Journey, Journey]:
    """Two finished journeys: outcomes not shared with the referrer, then shared."""
    private = full_journey(alliance, 1, share_outcomes=False)
    shared = full_journey(alliance, 2, share_outcomes=True)
    lw, referrer, vg = (alliance.client(r) for r in ("link_worker", "referrer", "provider"))
    for j in (private, shared):
        wait_until(
            lambda j=j: (
                (v := view_row(lw, j.rid)) and v["status"] == "closed" and v["outcomes"] == 1
            )
        )
        wait_until(lambda j=j: (v := view_row(referrer, j.rid)) and v["status"] == "closed")
        wait_until(lambda j=j: (v := view_row(vg, j.rid)) and v["attendances"] == 1)
    wait_until(lambda: view_row(referrer, shared.rid)["outcomes"] == 1)  # type: ignore[index]
    return private, shared


def test_isolation_through_the_api(
    system: RunningSystem, alliance: Alliance, journeys: tuple[Journey, Journey]
) -> None:
    private, shared = journeys
    rids = {private.rid, shared.rid}

    # the link-worker service it was routed to sees everything
    lw = alliance.client("link_worker")
    whole = detail(lw, private.rid)
    assert whole is not None and whole["role"] == "link-worker"
    assert whole["view"]["sessions"] == 1 and whole["view"]["outcomes"] == 1
    assert len(whole["view"]["details"]["outcomes"]) == 1
    # ... but, the referral closed, no longer the person (access ends with the role)
    after_closing = lw.get(f"/referrals/{private.rid}").json()
    assert after_closing["role"] == "link-worker" and after_closing["person"] is None

    # another referrer and the other link-worker service: nothing at all
    for role in ("other_referrer", "second_link_worker"):
        client = alliance.client(role)
        own = client.get("/view").json()
        assert own["referrals"] == [], role
        assert own["totals"]["referrals"] == 0, role
        assert not any(rid in json.dumps(own) for rid in rids), role
        for rid in rids:
            for person_flag in ("false", "true"):
                response = client.get(f"/referrals/{rid}", params={"person": person_flag})
                assert response.status_code == 404, (role, response.text)
                assert private.name not in response.text

    # the provider: the referral (as provider) and its attendance; no sessions or outcomes
    vg = alliance.client("provider")
    as_provider = detail(vg, private.rid)
    assert as_provider is not None and as_provider["role"] == "provider"
    row = as_provider["view"]
    assert (row["attendances"], row["activities"], row["sessions"], row["outcomes"]) == (1, 1, 0, 0)
    assert row["details"]["sessions"] == [] and row["details"]["outcomes"] == []
    (activity,) = row["details"]["activities"]
    assert activity["activity_id"] == f"walk-{alliance.suffix}" and activity["attended"] == 1
    seen = {t["type"] for t in row["details"]["timeline"]}
    assert seen == {"referral-created", "activity-referred", "activity-attended", "referral-closed"}
    assert vg.get(f"/referrals/{private.rid}").json()["person"] is None  # closed: role over

    # the referrer: milestones always; outcomes only with the person's consent
    referrer = alliance.client("referrer")
    no_consent = view_row(referrer, private.rid)
    assert no_consent is not None
    assert no_consent["status"] == "closed" and no_consent["sessions"] == 1
    assert no_consent["outcomes"] == 0 and no_consent["details"]["outcomes"] == []
    assert "outcome-recorded" not in {t["type"] for t in no_consent["details"]["timeline"]}
    consented = view_row(referrer, shared.rid)
    assert consented is not None
    assert consented["outcomes"] == 1 and len(consented["details"]["outcomes"]) == 1

    # the commissioner: aggregates only, no referral id or person_ref anywhere
    icb = alliance.client("commissioner")
    own = icb.get("/view")
    assert own.status_code == 200
    assert set(own.json()) == {"org", "role", "aggregates"}
    report = icb.get("/report")
    assert report.status_code == 200
    for text in (own.text, report.text):
        for j in journeys:
            assert j.rid not in text and j.rid.replace("-", "") not in text
            assert j.person_ref not in text
            assert j.name not in text
    assert icb.get(f"/referrals/{private.rid}").status_code == 403
    # the commissioner's view rows are keyed by pseudonyms, never by real ids
    aggregates = own.json()["aggregates"]
    assert aggregates["referrals"] >= 2 and aggregates["attendances"] >= 2


def test_isolation_on_the_topics(
    system: RunningSystem, alliance: Alliance, journeys: tuple[Journey, Journey]
) -> None:
    private, shared = journeys
    topics = system.topics
    org_topic = {role: topics.org(org) for role, org in alliance.ids.items()}
    icb = alliance.ids["commissioner"]
    # what each org's view holds may lag its topic by a moment; the journeys fixture
    # waited for the views, so the topics hold at least as much.
    records = read_topics(system.bootstrap_servers, [topics.referral_events, *org_topic.values()])
    by_topic: dict[str, list[Record]] = {}
    for r in records:
        by_topic.setdefault(r.topic, []).append(r)

    def types(role: str, rid: str) -> list[str]:
        return [r.type for r in by_topic.get(org_topic[role], []) if r.subject == rid]

    # keys are the subject on every topic
    for r in records:
        assert r.key.decode() == r.subject

    # the journey is on the log, every step
    log_types = {r.type for r in by_topic[topics.referral_events] if r.subject == private.rid}
    assert {
        "referral-created",
        "referral-closed",
        "outcome-recorded",
        "activity-attended",
    } <= log_types

    # nothing for the other referrer or the other link-worker service
    for role in ("other_referrer", "second_link_worker"):
        for j in journeys:
            assert not any(j.rid.encode() in r.raw for r in by_topic.get(org_topic[role], [])), role

    # referrer: outcomes only with consent
    assert "outcome-recorded" not in types("referrer", private.rid)
    assert "referral-closed" in types("referrer", private.rid)
    assert "outcome-recorded" in types("referrer", shared.rid)

    # provider: the referral, its activity and attendance; nothing of the casework
    assert sorted(set(types("provider", private.rid))) == [
        "activity-attended",
        "activity-referred",
        "referral-closed",
        "referral-created",
    ]

    # commissioner: every step arrives, pseudonymised; no real id or person_ref anywhere
    secret = pseudonym_secret(system.settings.home)
    cases = {j.rid: str(UUID(pseudonym(secret, icb, j.rid)[:32])) for j in journeys}
    journey = {"referral-created", "session-held", "outcome-recorded", "referral-closed"}

    def commissioner_topic() -> list[Record] | None:
        # the views caught up (the fixture waited), and the commissioner's copies were
        # produced in the same batches; still, read until they are there rather than assume
        got = read_topics(system.bootstrap_servers, [org_topic["commissioner"]])
        complete = all(journey <= {r.type for r in got if r.subject == c} for c in cases.values())
        return got if complete else None

    icb_records: list[Record] = wait_until(commissioner_topic)
    for j in journeys:
        for r in icb_records:
            assert j.rid.encode() not in r.raw, (r.type, r.headers)
            assert j.rid.replace("-", "").encode() not in r.raw, (r.type, r.headers)
            assert j.person_ref.encode() not in r.raw, (r.type, r.headers)
            assert json.loads(r.value).get("referral_id") == r.subject
        created = next(
            r for r in icb_records if r.subject == cases[j.rid] and r.type == "referral-created"
        )
        assert json.loads(created.value)["person_ref"].startswith("p_")


def test_personal_data_never_reaches_any_topic(
    system: RunningSystem, alliance: Alliance, journeys: tuple[Journey, Journey]
) -> None:
    records = read_topics(
        system.bootstrap_servers, all_topics(system.bootstrap_servers), timeout=60
    )
    assert any(r.topic == system.topics.referral_events for r in records)
    for j in journeys:
        needles = [
            j.name,
            j.name.split("-")[0],  # "Zebedee Quill"
            j.nhs_number,
            "401 023 2137",
            j.phone,
            j.phone.replace(" ", ""),
            f"note-{alliance.suffix}",
            "1961-07-30",  # the date of birth travels only as an age band
        ]
        for r in records:
            for needle in needles:
                assert needle.encode() not in r.raw, (needle, r.topic, r.type)


def test_personal_data_is_in_clear_in_no_table_log_or_data_file(
    system: RunningSystem, alliance: Alliance, journeys: tuple[Journey, Journey]
) -> None:
    """The same markers, in every table of every schema (bytea as hex too), and in every
    file under the stack's home: PostgreSQL's data files and WAL, the logs, the keys."""
    from tests.privacy.scan import in_files, in_tables

    needles = [f"note-{alliance.suffix}", "401 023 2137", "4010232137"]
    for j in journeys:
        needles += [j.name, j.phone, j.phone.replace(" ", "")]
    tables, hits = in_tables(system, needles)
    assert tables > 20 and hits == []
    files, hits = in_files(system.settings.home, needles)
    assert files > 100 and hits == []
