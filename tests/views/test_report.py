"""The alliance report, figure by figure, against values computed by hand.

A small fixed scenario (three referrals, two people) is applied through the real
consumer path (envelope → schema → ``apply_batch`` → ``ViewProjection``) into a view
schema on each PostgreSQL target; every figure of ``build_report`` is then compared
with the hand-computed value written next to it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from bus.tracking import Record, apply_batch
from referralnet.ops.checksum import view_checksum
from schemas.envelope import CloudEvent, to_kafka
from schemas.registry import dataschema_uri, latest_version
from views.projection import ViewProjection
from views.report import build_report
from views.schema import create_view

pytestmark = pytest.mark.infra

A, B, C = (uuid.UUID(int=i) for i in (0xA, 0xB, 0xC))
SOURCES = {
    "intake": "/services/intake",
    "routing": "/services/routing",
    "outcomes": "/services/outcomes",
}


def t(day: str) -> datetime:
    return datetime.fromisoformat(f"2025-{day}T09:00:00+00:00")


class Scenario:
    """Builds CloudEvents with per-(referral, service) stream versions."""

    def __init__(self) -> None:
        self.events: list[CloudEvent] = []
        self.versions: dict[tuple[uuid.UUID, str], int] = defaultdict(int)

    def add(
        self, rid: uuid.UUID, service: str, actor: str, when: str, etype: str, **data: Any
    ) -> None:
        self.versions[(rid, service)] += 1
        self.events.append(
            CloudEvent(
                id=uuid.uuid4(),
                source=SOURCES[service],
                type=etype,
                subject=str(rid),
                time=t(when),
                dataschema=dataschema_uri(etype, latest_version(etype)),
                data={"referral_id": str(rid), **data},
                streamversion=self.versions[(rid, service)],
                correlationid=rid,
                causationid=None,
                actor=actor,
            )
        )


def created(s: Scenario, rid: uuid.UUID, when: str, kind: str, org: str, person: str) -> None:
    s.add(
        rid, "intake", org, when, "referral-created",
        person_ref=person, referrer_org=org, referrer_kind=kind, needs=["social-connection"],
        urgency="routine", area="north", age_band="50-64",
        consent={"share_with_link_worker": True, "share_outcomes_with_referrer": True},
        referred_at=t(when).isoformat(),
    )  # fmt: skip


def session(s: Scenario, rid: uuid.UUID, when: str, kind: str, minutes: int) -> None:
    s.add(
        rid, "outcomes", "lw", when, "session-held", session_id=str(uuid.uuid4()), kind=kind,
        duration_minutes=minutes, mode="in-person", held_at=t(when).isoformat(),
    )  # fmt: skip


def outcome(s: Scenario, rid: uuid.UUID, when: str, measure: str, timepoint: str, **v: Any) -> None:
    s.add(
        rid, "outcomes", "lw", when, "outcome-recorded", measure=measure, timepoint=timepoint,
        recorded_at=t(when).isoformat(), items=v.get("items"), score=v["score"],
    )  # fmt: skip


def scenario() -> Scenario:
    s = Scenario()
    # Referral A: GP, person p_alpha; contact after 3 days; closed.
    created(s, A, "01-10", "gp-practice", "gp", "p_alpha")
    s.add(
        A, "routing", "routing", "01-10", "referral-routed", service_org="lw", attempt=1, reason="x"
    )
    s.add(
        A,
        "routing",
        "lw",
        "01-11",
        "referral-accepted",
        service_org="lw",
        accepted_at=t("01-11").isoformat(),
    )
    s.add(
        A,
        "outcomes",
        "lw",
        "01-13",
        "first-contact-made",
        service_org="lw",
        contacted_at=t("01-13").isoformat(),
        mode="phone",
    )
    outcome(s, A, "01-13", "swemwbs", "baseline", items=[3] * 7, score=19.25)  # raw 21
    outcome(s, A, "01-13", "ucla3", "baseline", items=[3, 3, 2], score=8)
    session(s, A, "01-20", "longer-appointment", 60)
    session(s, A, "01-27", "short-conversation", 15)
    session(s, A, "02-03", "group", 90)  # not one-to-one time
    s.add(
        A,
        "outcomes",
        "lw",
        "02-03",
        "activity-referred",
        activity_id="walk",
        provider_org="vg",
        activity_kind="walking-group",
        referred_at=t("02-03").isoformat(),
    )
    s.add(
        A,
        "outcomes",
        "vg",
        "02-10",
        "activity-attended",
        activity_id="walk",
        provider_org="vg",
        attended_at=t("02-10").isoformat(),
        attended=True,
    )
    s.add(
        A,
        "outcomes",
        "vg",
        "02-17",
        "activity-attended",
        activity_id="walk",
        provider_org="vg",
        attended_at=t("02-17").isoformat(),
        attended=False,
    )
    outcome(
        s, A, "02-25", "swemwbs", "follow-up", items=[4, 4, 4, 4, 3, 3, 3], score=22.35
    )  # raw 25
    outcome(s, A, "02-25", "ucla3", "follow-up", items=[2, 2, 2], score=6)
    s.add(
        A,
        "outcomes",
        "lw",
        "03-01",
        "referral-closed",
        reason="completed",
        closed_at=t("03-01").isoformat(),
    )
    # Referral B: fire service, person p_beta; declined once; contact after 11 days (SLA breach).
    created(s, B, "02-01", "fire-service", "fire", "p_beta")
    s.add(
        B,
        "routing",
        "routing",
        "02-01",
        "referral-routed",
        service_org="lw1",
        attempt=1,
        reason="x",
    )
    s.add(
        B,
        "routing",
        "lw1",
        "02-02",
        "referral-declined",
        service_org="lw1",
        reason="no-capacity",
        declined_at=t("02-02").isoformat(),
    )
    s.add(
        B, "routing", "routing", "02-02", "referral-routed", service_org="lw", attempt=2, reason="x"
    )
    s.add(
        B,
        "routing",
        "lw",
        "02-03",
        "referral-accepted",
        service_org="lw",
        accepted_at=t("02-03").isoformat(),
    )
    s.add(
        B,
        "outcomes",
        "lw",
        "02-12",
        "first-contact-overdue",
        service_org="lw",
        due_by=t("02-09").isoformat(),
        sla_days=7,
    )
    s.add(
        B,
        "outcomes",
        "lw",
        "02-12",
        "first-contact-made",
        service_org="lw",
        contacted_at=t("02-12").isoformat(),
        mode="in-person",
    )
    outcome(
        s, B, "02-12", "swemwbs", "baseline", items=[3, 3, 3, 3, 2, 2, 2], score=17.43
    )  # raw 18
    outcome(s, B, "02-12", "activity-minutes", "baseline", score=30)
    session(s, B, "02-15", "short-conversation", 20)
    session(s, B, "02-20", "accompanied-visit", 120)
    outcome(s, B, "03-05", "swemwbs", "follow-up", items=[3, 3, 3, 3, 2, 2, 2], score=17.43)
    outcome(s, B, "03-05", "activity-minutes", "follow-up", score=150)
    # Referral C: the same person as A, referred again by the GP; nobody can take it.
    created(s, C, "06-01", "gp-practice", "gp", "p_alpha")
    s.add(C, "routing", "routing", "06-01", "referral-escalated", reason="none left", tried=[])
    return s  # fmt: skip


async def _apply(
    conn: Any, schema: str, events: list[CloudEvent] | None = None, batch_size: int = 0
) -> None:
    """The scenario through the consumer path, in batches of ``batch_size`` (0: at once)."""
    await create_view(conn, schema)
    projection = ViewProjection("icb", schema)
    records = []
    numbered: dict[str, int] = {}  # ce_orgsequence, as the distributor gives it per subject
    for offset, event in enumerate(events or scenario().events):
        numbered[event.subject] = numbered.get(event.subject, 0) + 1
        key, value, headers = to_kafka(replace(event, orgsequence=numbered[event.subject]))
        records.append(Record("org.icb", 0, offset, key, value, headers))
    size = batch_size or len(records)
    for start in range(0, len(records), size):
        batch = records[start : start + size]
        result = await apply_batch(conn, projection, "org.icb", 0, batch)
        assert (result.applied, result.dead, result.duplicates) == (len(batch), 0, 0)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
async def test_batches_of_any_size_build_the_same_view(conn: Any, batch_size: int) -> None:
    """The projection folds a batch per referral; the fold of many events must equal
    their one-by-one application (status rules, counters, times): same checksum."""
    whole, split = (f"view_fold_{uuid.uuid4().hex[:8]}" for _ in range(2))
    s = scenario()
    # D: a session straight after acceptance (no first contact yet) moves it on to
    # in-progress, which a batch without the acceptance can only decide in SQL.
    d = uuid.UUID(int=0xD)
    created(s, d, "07-01", "gp-practice", "gp", "p_delta")
    s.add(d, "routing", "routing", "07-01", "referral-routed", service_org="lw", attempt=1,
          reason="x")  # fmt: skip
    s.add(d, "routing", "lw", "07-02", "referral-accepted", service_org="lw",
          accepted_at=t("07-02").isoformat())  # fmt: skip
    session(s, d, "07-03", "longer-appointment", 45)
    events = s.events
    await _apply(conn, whole, events)
    await _apply(conn, split, events, batch_size)
    assert await view_checksum(conn, split) == await view_checksum(conn, whole)
    cur = await conn.execute(f"SELECT count(*) FROM {split}.timeline")
    row = await cur.fetchone()
    assert row is not None and row[0] == len(events)
    cur = await conn.execute(f"SELECT status FROM {split}.referrals WHERE referral_id = %s", (d,))
    assert await cur.fetchone() == ("in-progress",)


async def test_every_figure_matches_hand_computed_values(conn: Any) -> None:
    schema = f"view_report_{uuid.uuid4().hex[:8]}"
    await _apply(conn, schema)
    r = await build_report(conn, schema)

    assert r.referrals == 3
    assert r.people_referred == 2  # p_alpha twice, p_beta
    assert r.referrals_by_source_kind == {"fire-service": 1, "gp-practice": 2}
    assert r.referrals_by_status == {"closed": 1, "escalated": 1, "in-progress": 1}
    assert (r.declines, r.escalations) == (1, 1)
    assert r.sessions == 5
    assert r.sessions_by_kind == {
        "accompanied-visit": 1, "group": 1, "longer-appointment": 1, "short-conversation": 2,
    }  # fmt: skip
    assert r.one_to_one_hours == 3.6  # (60 + 15 + 20 + 120) / 60 = 3.58; group excluded
    assert r.people_supported == 2
    assert r.activities_by_kind == {"walking-group": 1}
    assert r.attendances == 1  # one attended, one missed
    assert r.median_days_to_first_contact == 7.0  # median of 3 and 11 days
    assert r.first_contact_sla_breaches == 1

    changes = {c.measure: c for c in r.outcome_changes}
    assert set(changes) == {"activity-minutes", "swemwbs", "ucla3"}
    swemwbs = changes["swemwbs"]
    assert (swemwbs.people, swemwbs.improved, swemwbs.percent_improved) == (2, 1, 50.0)
    assert swemwbs.mean_baseline == 18.34  # (19.25 + 17.43) / 2
    assert swemwbs.mean_latest == 19.89  # (22.35 + 17.43) / 2
    assert swemwbs.mean_change == 1.55  # (3.10 + 0) / 2
    ucla = changes["ucla3"]
    assert (ucla.people, ucla.improved, ucla.mean_change, ucla.mean_improvement) == (
        1,
        1,
        -2.0,
        2.0,
    )
    minutes = changes["activity-minutes"]
    assert (minutes.mean_baseline, minutes.mean_latest, minutes.mean_change) == (30.0, 150.0, 120.0)
    assert minutes.percent_improved == 100.0


async def test_date_range_counts_only_what_happened_in_it(conn: Any) -> None:
    schema = f"view_report_{uuid.uuid4().hex[:8]}"
    await _apply(conn, schema)
    r = await build_report(
        conn, schema, datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)
    )
    assert r.referrals == 2  # B and C were referred in the range, A before it
    assert r.referrals_by_source_kind == {"fire-service": 1, "gp-practice": 1}
    assert r.sessions_by_kind == {"accompanied-visit": 1, "group": 1, "short-conversation": 1}
    assert r.one_to_one_hours == 2.3  # (20 + 120) / 60
    assert r.people_supported == 2  # p_alpha's group session was in range
    assert r.activities_by_kind == {"walking-group": 1}
    assert (r.declines, r.escalations, r.first_contact_sla_breaches) == (1, 1, 1)
    assert r.median_days_to_first_contact == 11.0  # only B's first contact is in range
    assert {c.measure: c.people for c in r.outcome_changes} == {
        "activity-minutes": 1, "swemwbs": 2, "ucla3": 1,
    }  # fmt: skip
