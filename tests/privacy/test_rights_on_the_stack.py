"""Consent withdrawal, erasure and the access log end to end, on the real stack.

One referral goes through the public API (referrer, link-worker service, provider);
then the person withdraws consent to share outcomes, then asks to be erased. What must
hold afterwards (issue 16): the referrer's outcome summary is gone, live and on replay;
the person's details are unreadable everywhere and in clear nowhere (every topic, table,
log and data file); journey --verify and verify --all pass; every view equals a clean
replay; the report's figures are unchanged; republish still works; every read of the
details is in the access log.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from referralnet.system import RunningSystem
from services.intake.nhs_number import check_digit_is_valid
from services.intake.pii import PersonVault
from services.privacy import person_keys
from services.privacy.api import auditor_token
from tests.conftest import Alliance, alliance_yaml, referral_body, register_alliance, wait_until
from tests.ops.conftest import caught_up, checksums, query, run_cli
from tests.privacy.scan import in_files, in_tables, in_topics

pytestmark = pytest.mark.infra


def real_looking_nhs_number() -> str:
    """A number in an issued range with a valid check digit, unique to this run."""
    while True:
        number = f"4{random.randrange(10**8):08d}"
        for check in range(10):
            if check_digit_is_valid(number + str(check)):
                return number + str(check)


@dataclass(frozen=True)
class Person:
    name: str
    phone: str
    email: str
    notes: str
    nhs_number: str

    def body(self) -> dict[str, str]:
        return {
            "name": self.name,
            "date_of_birth": "1958-11-21",
            "nhs_number": self.nhs_number,
            "phone": self.phone,
            "email": self.email,
            "notes": self.notes,
        }

    @property
    def needles(self) -> list[str]:
        return [self.name, self.phone, self.email, self.notes, self.nhs_number]


@dataclass(frozen=True)
class Case:
    rid: str
    person: Person
    alliance: Alliance


def _view(client: httpx.Client, rid: str) -> dict[str, Any] | None:
    response = client.get(f"/referrals/{rid}", params={"person": "false"})
    return response.json()["view"] if response.status_code == 200 else None


def _post(client: httpx.Client, path: str, body: dict[str, Any], status: int = 201) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def _outcome(lw: httpx.Client, rid: str, timepoint: str, day: int) -> None:
    body = {
        "measure": "ucla3",
        "timepoint": timepoint,
        "items": [3, 2, 2],
        "recorded_at": f"2026-01-{day:02d}T10:30:00Z",
    }
    _post(lw, f"/referrals/{rid}/outcomes", body)


@pytest.fixture(scope="module")
def case(system: RunningSystem) -> Case:
    """A referral (outcomes shared with the referrer) accepted, with a session, an onward
    activity and a baseline outcome, every view caught up."""
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix), suffix)
    person = Person(
        name=f"Perpetua Sorrel-{suffix}",
        phone=f"07700 8{suffix[:5]}",
        email=f"perpetua.{suffix}@example.org",
        notes=f"erase-me-{suffix}",
        nhs_number=real_looking_nhs_number(),
    )
    referrer, lw, vg = (alliance.client(r) for r in ("referrer", "link_worker", "provider"))
    created = _post(
        referrer,
        "/referrals",
        referral_body(
            person=person.body(),
            needs=["social-connection", "stress"],
            area=f"area-{suffix}",
            consent={"share_with_link_worker": True, "share_outcomes_with_referrer": True},
        ),
    )
    rid = created["referral_id"]
    wait_until(lambda: (v := _view(lw, rid)) and v["status"] == "routed", timeout=60)
    _post(lw, f"/referrals/{rid}/accept", {"accepted_at": "2026-01-06T09:00:00Z"}, 200)
    session = {
        "kind": "group",
        "minutes": 60,
        "mode": "in-person",
        "held_at": "2026-01-07T10:00:00Z",
    }
    _post(lw, f"/referrals/{rid}/sessions", session)
    walk = {"activity_id": f"walk-{suffix}", "referred_at": "2026-01-07T11:00:00Z"}
    _post(lw, f"/referrals/{rid}/activities", walk)
    _outcome(lw, rid, "baseline", 8)
    wait_until(lambda: (v := _view(referrer, rid)) and v["outcomes"] == 1, timeout=60)
    wait_until(lambda: _view(vg, rid) is not None, timeout=60)
    return Case(rid, person, alliance)


def _referrer_outcome_rows(system: RunningSystem, case: Case) -> int:
    schema = "view_" + case.alliance.ids["referrer"].replace("-", "_")
    rows = query(
        system, f"SELECT count(*) FROM {schema}.outcomes WHERE referral_id = %s", (case.rid,)
    )
    return int(rows[0][0])


def test_consent_withdrawal_removes_the_referrers_outcomes_live_and_on_replay(
    system: RunningSystem, case: Case
) -> None:
    a, rid = case.alliance, case.rid
    referrer, lw, vg, icb = (
        a.client(r) for r in ("referrer", "link_worker", "provider", "commissioner")
    )
    body = {"consent": "share-outcomes-with-referrer", "withdrawn_at": "2026-01-09T09:00:00Z"}
    path = f"/referrals/{rid}/consent-withdrawal"
    assert vg.post(path, json=body).status_code == 403  # a provider cannot act for the person
    assert icb.post(path, json=body).status_code == 403
    early = {**body, "withdrawn_at": "2025-12-01T09:00:00Z"}
    assert referrer.post(path, json=early).status_code == 422  # before the referral
    assert _post(referrer, path, body) == {"status": "withdrawn", "already": False}
    assert _post(lw, path, body, 200) == {"status": "withdrawn", "already": True}

    # at once: the referrer's view drops its outcome summary; the service keeps its own
    wait_until(lambda: (v := _view(referrer, rid)) and v["outcomes"] == 0, timeout=60)
    assert _referrer_outcome_rows(system, case) == 0
    assert _view(lw, rid)["outcomes"] == 1  # type: ignore[index]
    # no further sharing: a follow-up outcome reaches the service, never the referrer
    _outcome(lw, rid, "follow-up", 20)
    wait_until(lambda: (v := _view(lw, rid)) and v["outcomes"] == 2, timeout=60)
    caught_up(system)
    assert _view(referrer, rid)["outcomes"] == 0  # type: ignore[index]
    assert _referrer_outcome_rows(system, case) == 0
    # and on replay
    replayed = run_cli(system, "replay", a.ids["referrer"], "--json")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout)[0]["matches"] is True
    assert _referrer_outcome_rows(system, case) == 0


def _person(client: httpx.Client, rid: str) -> dict[str, Any]:
    response = client.get(f"/referrals/{rid}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _report(system: RunningSystem, commissioner: str) -> Any:
    result = run_cli(system, "report", "--commissioner", commissioner, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_erasure_shreds_the_person_and_keeps_journey_views_and_figures(
    system: RunningSystem, case: Case
) -> None:
    a, rid, who = case.alliance, case.rid, case.person
    referrer, lw, vg, icb = (
        a.client(r) for r in ("referrer", "link_worker", "provider", "commissioner")
    )
    assert _person(lw, rid)["person"]["name"] == who.name
    assert _person(vg, rid)["person"] == {"name": who.name} | {
        k: None for k in ("date_of_birth", "nhs_number", "phone", "email", "address", "notes")
    }
    caught_up(system)
    report_before = _report(system, a.ids["commissioner"])
    rows_before = {r: _view(a.client(r), rid) for r in ("referrer", "link_worker", "provider")}

    ref = _view(lw, rid)["person_ref"]  # type: ignore[index]
    erasure = f"/people/{ref}/erasure"
    assert lw.post(erasure, json={}).status_code == 422  # a reason is required
    assert lw.post(erasure, json={"reason": "because"}).status_code == 422
    assert lw.post("/people/p_nobodyhere/erasure", json={"reason": "objection"}).status_code == 404
    provider_ref = _view(vg, rid)["person_ref"]  # type: ignore[index]
    forbidden = vg.post(f"/people/{provider_ref}/erasure", json={"reason": "objection"})
    assert forbidden.status_code == 403, forbidden.text
    assert icb.post(erasure, json={"reason": "objection"}).status_code == 403
    done = _post(lw, erasure, {"reason": "objection"}, 200)
    assert done["status"] == "erased" and done["already"] is False
    again = _post(lw, erasure, {"reason": "objection"}, 200)
    assert again["already"] is True and again["erased_at"] == done["erased_at"]

    # every entitled partner learns it; the referrer and the service are shown "erased"
    for role in ("referrer", "link_worker", "provider"):
        client = a.client(role)
        wait_until(
            lambda c=client: any(
                t["type"] == "person-erased"
                for t in c.get(f"/referrals/{rid}", params={"person": "false"}).json()["view"][
                    "details"
                ]["timeline"]
            ),
            timeout=60,
        )
    for client in (referrer, lw):
        shown = _person(client, rid)
        assert shown["person"] is None and shown["person_erased"] is True
    # the key is gone: even the stack's own keys open nothing
    key = query(
        system,
        "SELECT wrapped, erased_at, reason FROM keys.person_keys k "
        "JOIN intake.referral_people r USING (person_ref) WHERE r.referral_id = %s",
        (rid,),
    )
    assert key[0][0] is None and key[0][1] is not None and key[0][2] == "objection"
    with pytest.raises(person_keys.Erased):
        asyncio.run(_decrypt(system, rid))

    # journey, views and figures stay; chains and checkpoints verify; replay equals live
    caught_up(system)
    for role, before in rows_before.items():
        after = _view(a.client(role), rid)
        assert before is not None and after is not None
        keep = ("status", "sessions", "session_minutes", "activities", "attendances", "outcomes")
        assert {k: after[k] for k in keep} == {k: before[k] for k in keep}, role
    assert _report(system, a.ids["commissioner"]) == report_before
    journey = run_cli(system, "journey", rid, "--verify", "--json")
    assert journey.exit_code == 0, journey.output
    assert "person-erased" in {s["type"] for s in json.loads(journey.stdout)["steps"]}
    checked = run_cli(system, "verify", "--checkpoint", "--all", "--json")
    assert checked.exit_code == 0, checked.output
    replay = run_cli(system, "replay", "--all", "--json")
    assert replay.exit_code == 0, replay.output
    assert all(v["matches"] for v in json.loads(replay.stdout)), replay.stdout

    # republish still works (an intact log: nothing is sent twice, no view moves)
    orgs = list(a.ids.values())
    live = checksums(system, orgs)
    republished = run_cli(system, "republish")
    assert republished.exit_code == 0, republished.output
    caught_up(system)
    assert checksums(system, orgs) == live

    # a new referral with the same NHS number is a new person, not the erased one
    again_ref = _post(
        referrer,
        "/referrals",
        referral_body(
            person={
                "name": "Someone Else",
                "date_of_birth": "1958-11-21",
                "nhs_number": who.nhs_number,
            },
            area=f"area-{a.suffix}",
        ),
    )["referral_id"]
    refs = query(
        system,
        "SELECT referral_id::text, person_ref FROM intake.referral_people "
        "WHERE referral_id IN (%s, %s)",
        (rid, again_ref),
    )
    assert len({r[1] for r in refs}) == 2

    # nothing of the person in clear anywhere: topics, tables, logs, data files
    assert in_topics(system, who.needles) == []
    tables, hits = in_tables(system, who.needles)
    assert tables > 20 and hits == []
    files, hits = in_files(system.settings.home, who.needles)
    assert files > 100 and hits == []


async def _decrypt(system: RunningSystem, rid: str) -> dict[str, Any]:
    vault = PersonVault.from_home(system.settings.home)
    async with await psycopg.AsyncConnection.connect(system.database_url, autocommit=True) as c:
        cur = await c.execute(
            "SELECT person_ref, ciphertext FROM intake.referral_people WHERE referral_id = %s",
            (rid,),
        )
        row = await cur.fetchone()
        assert row is not None
        return await vault.decrypt(c, row[0], bytes(row[1]))


def test_every_read_of_the_details_is_in_the_access_log(system: RunningSystem, case: Case) -> None:
    a, rid = case.alliance, case.rid
    lw = a.client("link_worker")
    token = auditor_token(system.settings.home)
    auditor = httpx.Client(base_url=a.base_url, headers={"Authorization": f"Bearer {token}"})
    assert lw.get("/audit/access").status_code == 401  # a partner's token is not enough
    found = auditor.get("/audit/access", params={"referral_id": rid})
    assert found.status_code == 200, found.text
    reads = found.json()["accesses"]
    # the first erasure test read twice (service: every field; provider: the name)
    by_reader = {(r["reader"], tuple(r["fields"])) for r in reads}
    assert (a.ids["provider"], ("name",)) in by_reader
    assert any(reader == a.ids["link_worker"] and "nhs_number" in f for reader, f in by_reader)
    assert all(r["purpose"].startswith("GET /referrals/{id} as ") for r in reads)
    # a read that showed nothing (erased) records nothing
    assert len(reads) == 2
    only_provider = auditor.get(
        "/audit/access", params={"referral_id": rid, "reader": a.ids["provider"]}
    ).json()["accesses"]
    assert len(only_provider) == 1
    assert auditor.get("/audit/access", params={"limit": 0}).status_code == 422
    cli = run_cli(system, "access-log", "--referral", rid, "--json")
    assert cli.exit_code == 0, cli.output
    assert [r["reader"] for r in json.loads(cli.stdout)] == [r["reader"] for r in reads]
    assert run_cli(system, "access-log", "--since", "yesterday").exit_code == 2


def test_the_operator_can_erase_by_referral(system: RunningSystem, case: Case) -> None:
    a = case.alliance
    created = _post(
        a.client("other_referrer"),
        "/referrals",
        referral_body(
            area=f"area-{a.suffix}", person={"name": "Op Erase", "date_of_birth": "1970-01-01"}
        ),
    )
    rid = created["referral_id"]
    assert run_cli(system, "erase", rid, "--reason", "nonsense").exit_code == 2
    assert run_cli(system, "erase", str(uuid.uuid4()), "--reason", "objection").exit_code == 2
    done = run_cli(system, "erase", rid, "--reason", "legal-obligation", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["already"] is False
    events = query(
        system,
        "SELECT type, actor FROM intake.events WHERE stream_id = %s ORDER BY version",
        (rid,),
    )
    assert events[-1] == ("person-erased", "alliance-operator")

    def erased_in_view() -> bool:
        # 409 not-yet-known until the referral reaches the referrer's view (the bus is
        # asynchronous); then the view must say "erased".
        response = a.client("other_referrer").get(f"/referrals/{rid}")
        if response.status_code == 409:
            return False
        assert response.status_code == 200, response.text
        return bool(response.json()["person_erased"])

    wait_until(erased_in_view, timeout=60)
