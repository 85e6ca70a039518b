"""Bad input is refused with reasons a partner can act on, and leaves no trace.

Every refusal is JSON ``{"error", "reason", "fields", "state"}`` with a 4xx status;
nothing is stored in any event store, nothing reaches an outbox (so nothing is
published), and no response ever carries a stack trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from referralnet.system import RunningSystem
from schemas.measures import swemwbs_metric
from tests.conftest import Alliance, alliance_yaml, referral_body, register_alliance, wait_until

pytestmark = pytest.mark.infra

SESSION = {
    "kind": "longer-appointment",
    "minutes": 45,
    "mode": "in-person",
    "held_at": "2026-01-08T10:00:00Z",
}


@pytest.fixture(scope="module")
def alliance(system: RunningSystem) -> Alliance:
    """One alliance for the whole module: refusals change nothing, so they can share it."""
    suffix = uuid.uuid4().hex[:8]
    return register_alliance(system, alliance_yaml(suffix), suffix)


def refused(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert a refusal with ``status`` and the shared error format; return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert "traceback" not in response.text.lower()
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("reason"), str) and body["reason"], body
    return body


def fields(body: dict[str, Any]) -> dict[str, str]:
    return {f["field"]: f["reason"] for f in body.get("fields", [])}


class Counts:
    """Rows in a service's event store, its outbox and the outbox's id sequence.

    The relay deletes outbox rows once published, so besides the rows the test also
    compares the outbox's identity sequence: it moves on any insert, even one rolled back.
    """

    def __init__(self, database_url: str, schema: str, *extra: str) -> None:
        self.database_url, self.schema, self.extra = database_url, schema, extra

    def snapshot(self) -> dict[str, int]:
        tables = ("events", *self.extra)
        with psycopg.connect(self.database_url) as conn:
            counts = {
                t: conn.execute(f"SELECT count(*) FROM {self.schema}.{t}").fetchone()[0]  # type: ignore[index]
                for t in tables
            }
            seq = conn.execute(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id'))",
                (f"{self.schema}.outbox",),
            ).fetchone()
            counts["outbox_seq"] = (seq[0] if seq else None) or 0
        return counts


@pytest.fixture
def intake_unchanged(system: RunningSystem) -> Iterator[None]:
    counts = Counts(system.database_url, "intake", "referral_people", "idempotency")
    before = counts.snapshot()
    yield
    assert counts.snapshot() == before, "a refused referral left something in intake"


# -- POST /referrals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "body", "field"),
    [
        ("missing needs", "no-needs", "needs"),
        ("empty needs", {"needs": []}, "needs"),
        ("unknown need", {"needs": ["astrology"]}, "needs.0"),
        ("under 16", {"person": {"name": "Kid", "date_of_birth": "2012-05-01"}}, None),
        ("consent false", {"consent": {"share_with_link_worker": False}}, None),
        ("future", {"referred_at": "2099-01-01T00:00:00Z"}, "referred_at"),
        ("naive time", {"referred_at": "2026-01-05T10:00:00"}, "referred_at"),
        (
            "bad NHS number",
            {"person": {"name": "A", "date_of_birth": "1980-01-01", "nhs_number": "9434765918"}},
            "person.nhs_number",
        ),
        ("unknown field", {"diagnosis": "secret"}, "diagnosis"),
        ("bad urgency", {"urgency": "stat"}, "urgency"),
    ],
)
def test_invalid_referral_is_refused_and_nothing_is_stored(
    alliance: Alliance, intake_unchanged: None, case: str, body: Any, field: str | None
) -> None:
    if body == "no-needs":
        payload = referral_body(area=f"area-{alliance.suffix}")
        del payload["needs"]
    else:
        payload = referral_body(area=f"area-{alliance.suffix}", **body)
    expected = {
        "under 16": "person.date_of_birth",
        "consent false": "consent.share_with_link_worker",
    }.get(case, field)
    problem = refused(alliance.client("referrer").post("/referrals", json=payload), 422)
    assert expected in fields(problem), (case, problem)
    assert fields(problem)[expected]


def test_under_16_reason_names_the_age_limit(alliance: Alliance, intake_unchanged: None) -> None:
    payload = referral_body(person={"name": "Kid", "date_of_birth": "2012-05-01"})
    problem = refused(alliance.client("referrer").post("/referrals", json=payload), 422)
    assert "16" in fields(problem)["person.date_of_birth"]


def test_duplicate_needs_and_overlong_area_are_422_not_500(
    alliance: Alliance, intake_unchanged: None
) -> None:
    referrer = alliance.client("referrer")
    twice = referrer.post("/referrals", json=referral_body(needs=["stress", "stress"]))
    assert "needs" in fields(refused(twice, 422))
    long_area = referrer.post("/referrals", json=referral_body(area="x" * 80))
    assert "area" in fields(refused(long_area, 422))


def test_malformed_json_is_422_naming_json(alliance: Alliance, intake_unchanged: None) -> None:
    response = alliance.client("referrer").post(
        "/referrals",
        content=b'{"needs": ["stress"], "person": ',
        headers={"Content-Type": "application/json"},
    )
    problem = refused(response, 422)
    assert "JSON" in problem["reason"]
    assert any("malformed JSON" in reason for reason in fields(problem).values())


@pytest.mark.parametrize("content", [b"[]", b"null", b'"text"', b""])
def test_a_body_that_is_not_an_object_is_422(
    alliance: Alliance, intake_unchanged: None, content: bytes
) -> None:
    response = alliance.client("referrer").post(
        "/referrals", content=content, headers={"Content-Type": "application/json"}
    )
    refused(response, 422)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token-of-anyone"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "not even a scheme"},
    ],
    ids=["no-token", "unknown-token", "empty-token", "basic-auth", "garbage"],
)
def test_no_or_unknown_token_is_401(
    system: RunningSystem, intake_unchanged: None, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=system.base_url, timeout=30) as anonymous:
        response = anonymous.post("/referrals", json=referral_body(), headers=headers)
        refused(response, 401)
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
        for path in ("/view", "/directory", "/report"):
            refused(anonymous.get(path, headers=headers), 401)


def test_a_commissioner_cannot_refer(alliance: Alliance, intake_unchanged: None) -> None:
    response = alliance.client("commissioner").post("/referrals", json=referral_body())
    refused(response, 403)


# -- outcomes and casework ---------------------------------------------------------------------


def _create(alliance: Alliance, **overrides: Any) -> str:
    body = referral_body(area=f"area-{alliance.suffix}", **overrides)
    created = alliance.client("referrer").post("/referrals", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["referral_id"])


def _outcomes_case(system: RunningSystem, rid: str) -> tuple[str, str | None] | None:
    with psycopg.connect(system.database_url) as conn:
        row = conn.execute(
            "SELECT status, service_org FROM outcomes.cases WHERE referral_id = %s", (rid,)
        ).fetchone()
    return (row[0], row[1]) if row else None


def _routed_to_lw(system: RunningSystem, alliance: Alliance, rid: str) -> None:
    lw = alliance.ids["link_worker"]
    wait_until(lambda: _outcomes_case(system, rid) == ("routed", lw))


def _accepted(system: RunningSystem, alliance: Alliance) -> str:
    rid = _create(alliance, needs=["stress"])
    _routed_to_lw(system, alliance, rid)
    accept = alliance.client("link_worker").post(
        f"/referrals/{rid}/accept", json={"accepted_at": "2026-01-06T09:00:00Z"}
    )
    assert accept.status_code == 200, accept.text
    return rid


@pytest.fixture(scope="module")
def accepted(system: RunningSystem, alliance: Alliance) -> str:
    """A referral routed to and accepted by ``link_worker`` (tests that use it change nothing)."""
    return _accepted(system, alliance)


@pytest.mark.parametrize(
    ("outcome", "field", "allowed"),
    [
        ({"measure": "swemwbs", "items": [3, 3, 3, 3, 3, 3, 6]}, "items[6]", "1-5"),
        ({"measure": "swemwbs", "items": [3, 3, 3, 3, 3, 6, 3]}, "items[5]", "1-5"),
        ({"measure": "swemwbs", "items": [0, 3, 3, 3, 3, 3, 3]}, "items[0]", "1-5"),
        ({"measure": "swemwbs", "items": [3, 3, 3]}, "items", "7"),
        ({"measure": "swemwbs", "score": 50}, "score", "7.00-35.00"),
        ({"measure": "ucla3", "items": [1, 2, 4]}, "items[2] (isolated)", "1-3"),
        ({"measure": "ucla3", "items": [1, 2, 3, 4]}, "items", "3"),
        ({"measure": "activity-minutes", "score": 20000}, "score", "0-10080"),
        ({"measure": "activity-minutes", "score": -5}, "score", "0-10080"),
        ({"measure": "ons4", "items": [5, 5, 11, 5]}, "items[2] (happy)", "0-10"),
        ({"measure": "ons4", "items": [5, 5, 5, -1]}, "items[3] (anxious)", "0-10"),
        ({"measure": "ons4", "items": [5, 5, 5, 5], "score": 20}, "score", "never summed"),
        ({"measure": "wemwbs", "score": 71}, "score", "14-70"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else str(v["measure"]),
)
def test_outcome_out_of_range_names_field_and_range_and_stores_nothing(
    system: RunningSystem,
    alliance: Alliance,
    accepted: str,
    outcome: dict[str, Any],
    field: str,
    allowed: str,
) -> None:
    counts = Counts(system.database_url, "outcomes")
    before = counts.snapshot()
    body = {"timepoint": "baseline", "recorded_at": "2026-01-09T10:00:00Z", **outcome}
    response = alliance.client("link_worker").post(f"/referrals/{accepted}/outcomes", json=body)
    problem = refused(response, 422)
    assert field in fields(problem), problem
    assert allowed in fields(problem)[field], problem
    assert counts.snapshot() == before


def test_concurrent_casework_on_one_referral_appends_every_event_once(
    system: RunningSystem, alliance: Alliance
) -> None:
    """Each command locks the case, then reads the stream's head: none may chain onto a
    head another has already moved on from (that would be a 409 or a 500 here)."""
    rid = _accepted(system, alliance)
    clients = [alliance.client("link_worker") for _ in range(8)]

    def post(client: httpx.Client) -> httpx.Response:
        return client.post(f"/referrals/{rid}/sessions", json=SESSION)

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        responses = list(pool.map(post, clients))
    assert [r.status_code for r in responses] == [201] * len(clients), [r.text for r in responses]
    versions = sorted(r.json()["stream_version"] for r in responses)
    assert versions == list(range(versions[0], versions[0] + len(clients)))


ASSESSED_AT = "2026-01-20T10:00:00Z"


def test_an_assessment_records_one_outcome_per_measure_in_one_append(
    system: RunningSystem, alliance: Alliance
) -> None:
    rid = _accepted(system, alliance)
    measures = [
        {"measure": "swemwbs", "items": [3, 3, 3, 3, 3, 3, 3]},
        {"measure": "ucla3", "items": [2, 2, 1]},
        {"measure": "activity-minutes", "score": 150},
    ]
    body = {"timepoint": "baseline", "recorded_at": ASSESSED_AT, "measures": measures}
    response = alliance.client("link_worker").post(f"/referrals/{rid}/assessments", json=body)
    assert response.status_code == 201, response.text
    recorded = response.json()["recorded"]
    assert [r["type"] for r in recorded] == ["outcome-recorded"] * 3
    first = recorded[0]["stream_version"]
    assert [r["stream_version"] for r in recorded] == [first, first + 1, first + 2]
    assert [r["score"] for r in recorded] == [swemwbs_metric(21), 5.0, 150.0]


@pytest.mark.parametrize(
    ("measures", "field", "reason"),
    [
        (
            [{"measure": "swemwbs", "items": [3] * 7}, {"measure": "ons4", "items": [5, 5, 11, 5]}],
            "measures[1].items[2] (happy)",
            "0-10",
        ),
        (
            [{"measure": "ucla3", "items": [1, 1, 1]}, {"measure": "ucla3", "items": [2, 2, 2]}],
            "measures",
            "at most once",
        ),
        ([], "measures", "at least 1"),
    ],
    ids=["one-out-of-range", "measure-twice", "empty"],
)
def test_an_assessment_with_any_bad_measure_stores_none(
    system: RunningSystem,
    alliance: Alliance,
    accepted: str,
    measures: list[dict[str, Any]],
    field: str,
    reason: str,
) -> None:
    counts = Counts(system.database_url, "outcomes")
    before = counts.snapshot()
    body = {"timepoint": "baseline", "recorded_at": ASSESSED_AT, "measures": measures}
    response = alliance.client("link_worker").post(f"/referrals/{accepted}/assessments", json=body)
    problem = refused(response, 422)
    assert reason in fields(problem)[field], problem
    assert counts.snapshot() == before


def test_outcome_with_unknown_measure_or_timepoint_is_422(
    alliance: Alliance, accepted: str
) -> None:
    lw = alliance.client("link_worker")
    for bad in ({"measure": "iq"}, {"timepoint": "someday"}):
        body = {
            "measure": "ucla3",
            "timepoint": "baseline",
            "items": [1, 1, 1],
            "recorded_at": "2026-01-09T10:00:00Z",
            **bad,
        }
        problem = refused(lw.post(f"/referrals/{accepted}/outcomes", json=body), 422)
        assert next(iter(bad)) in fields(problem)


def test_world_times_in_the_future_or_before_the_referral_are_422(
    system: RunningSystem, alliance: Alliance, accepted: str
) -> None:
    counts = Counts(system.database_url, "outcomes")
    before = counts.snapshot()
    lw = alliance.client("link_worker")
    for held_at in ("2099-01-01T00:00:00Z", "2025-12-31T00:00:00Z"):
        response = lw.post(f"/referrals/{accepted}/sessions", json={**SESSION, "held_at": held_at})
        assert "held_at" in fields(refused(response, 422))
    bad_minutes = lw.post(f"/referrals/{accepted}/sessions", json={**SESSION, "minutes": 0})
    assert "minutes" in fields(refused(bad_minutes, 422))
    unknown = lw.post(
        f"/referrals/{accepted}/activities",
        json={"activity_id": "no-such-activity", "referred_at": "2026-01-09T10:00:00Z"},
    )
    assert "activity_id" in fields(refused(unknown, 422))
    assert counts.snapshot() == before


def test_session_before_acceptance_is_409_with_state(
    system: RunningSystem, alliance: Alliance
) -> None:
    rid = _create(alliance, needs=["stress"])
    _routed_to_lw(system, alliance, rid)
    counts = Counts(system.database_url, "outcomes")
    before = counts.snapshot()
    problem = refused(
        alliance.client("link_worker").post(f"/referrals/{rid}/sessions", json=SESSION), 409
    )
    assert problem["state"]["status"] == "routed"
    assert problem["state"]["service_org"] == alliance.ids["link_worker"]
    assert counts.snapshot() == before


def test_anything_after_close_is_409_with_state(system: RunningSystem, alliance: Alliance) -> None:
    accepted = _accepted(system, alliance)
    lw = alliance.client("link_worker")
    closed = lw.post(
        f"/referrals/{accepted}/close",
        json={"reason": "completed", "closed_at": "2026-01-20T10:00:00Z"},
    )
    assert closed.status_code == 201, closed.text
    counts = Counts(system.database_url, "outcomes")
    before = counts.snapshot()
    attempts = {
        "sessions": SESSION,
        "contacts": {"contacted_at": "2026-01-21T10:00:00Z"},
        "outcomes": {
            "measure": "ucla3",
            "timepoint": "discharge",
            "items": [1, 1, 1],
            "recorded_at": "2026-01-21T10:00:00Z",
        },
        "activities": {
            "activity_id": f"walk-{alliance.suffix}",
            "referred_at": "2026-01-21T10:00:00Z",
        },
        "close": {"reason": "completed", "closed_at": "2026-01-22T10:00:00Z"},
    }
    for route, body in attempts.items():
        problem = refused(lw.post(f"/referrals/{accepted}/{route}", json=body), 409)
        assert problem["state"]["status"] == "closed", route
        assert problem["state"]["closed_at"], route
    assert counts.snapshot() == before
    again = lw.post(f"/referrals/{accepted}/accept", json={"accepted_at": "2026-01-21T09:00:00Z"})
    assert refused(again, 409)["state"]["status"] in ("accepted", "closed")


def test_acting_on_a_referral_not_routed_to_you_is_403(
    system: RunningSystem, alliance: Alliance
) -> None:
    rid = _create(alliance, needs=["stress"])
    _routed_to_lw(system, alliance, rid)
    other_lw = alliance.client("second_link_worker")
    for action in ("accept", "decline"):
        body = {"accepted_at": "2026-01-06T09:00:00Z"}
        if action == "decline":
            body = {"reason": "no-capacity", "declined_at": "2026-01-06T09:00:00Z"}
        refused(other_lw.post(f"/referrals/{rid}/{action}", json=body), 403)
    lw = alliance.client("link_worker")
    assert (
        lw.post(
            f"/referrals/{rid}/accept", json={"accepted_at": "2026-01-06T09:00:00Z"}
        ).status_code
        == 200
    )
    counts = Counts(system.database_url, "outcomes")
    before = counts.snapshot()
    refused(other_lw.post(f"/referrals/{rid}/sessions", json=SESSION), 403)
    # a provider can record attendance only for people referred to its own activity
    refused(
        alliance.client("provider").post(
            f"/referrals/{rid}/activities/walk-{alliance.suffix}/attendance",
            json={"attended_at": "2026-01-10T10:00:00Z"},
        ),
        404,
    )
    assert counts.snapshot() == before


def test_accept_by_a_non_link_worker_org_is_403(system: RunningSystem, alliance: Alliance) -> None:
    rid = _create(alliance, needs=["stress"])
    _routed_to_lw(system, alliance, rid)
    for role in ("referrer", "provider", "commissioner", "other_referrer"):
        client = alliance.client(role)
        refused(
            client.post(f"/referrals/{rid}/accept", json={"accepted_at": "2026-01-06T09:00:00Z"}),
            403,
        )


def test_report_is_for_commissioners_only(alliance: Alliance) -> None:
    for role in ("referrer", "link_worker", "provider"):
        refused(alliance.client(role).get("/report"), 403)
    assert alliance.client("commissioner").get("/report").status_code == 200
    refused(alliance.client("commissioner").get("/report", params={"from": "yesterday"}), 422)


def test_unknown_routes_ids_and_methods_answer_in_the_error_format(alliance: Alliance) -> None:
    client = alliance.client("referrer")
    refused(client.get("/referrals/not-a-uuid"), 422)
    refused(client.get("/referrals/00000000-0000-4000-8000-000000000000"), 404)
    refused(client.get("/no-such-route"), 404)
    refused(client.delete("/referrals"), 405)
    refused(client.get("/view", params={"limit": 0}), 422)


# -- issue 12: limits before work, strict types, no 5xx ------------------------------------------


def test_an_oversized_body_is_413_before_it_is_read_or_authenticated(
    system: RunningSystem, intake_unchanged: None
) -> None:
    """100 MB announced, unauthenticated: refused at once from the Content-Length alone."""
    import socket
    import time
    from urllib.parse import urlsplit

    url = urlsplit(system.base_url)
    started = time.monotonic()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /referrals HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n" + b"{" * 1024
        )
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert time.monotonic() - started < 2.0


def test_a_streamed_body_past_the_limit_is_413(alliance: Alliance, intake_unchanged: None) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"notes": "'
        for _ in range(200):
            yield b"x" * 1024
        yield b'"}'

    response = alliance.client("referrer").post(
        "/referrals", content=chunks(), headers={"Content-Type": "application/json"}
    )
    refused(response, 413)


def test_oversized_headers_are_431(alliance: Alliance) -> None:
    response = alliance.client("referrer").get("/view", headers={"X-Padding": "p" * 20_000})
    assert response.status_code == 431, response.text


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"referred_at": "2026-01-05T10:00:00+16:00"}, "referred_at"),
        ({"referred_at": "2026-01-05T10:00:00-23:59"}, "referred_at"),
        ({"referred_at": "0097-01-05T10:00:00Z"}, "referred_at"),
        ({"person": {"name": "A", "date_of_birth": "0001-01-01"}}, "person.date_of_birth"),
        ({"person": {"name": "A", "date_of_birth": "1899-12-31"}}, "person.date_of_birth"),
        ({"person": {"name": "A\u0000B", "date_of_birth": "1980-01-01"}}, "person.name"),
        ({"area": "nor\u0000th"}, "area"),
        ({"person": {"name": "A", "date_of_birth": 0}}, "person.date_of_birth"),
        ({"referred_at": 1767607200}, "referred_at"),
        ({"consent": {"share_with_link_worker": "true"}}, "consent.share_with_link_worker"),
        ({"consent": {"share_with_link_worker": 1}}, "consent.share_with_link_worker"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_implausible_times_nul_and_loose_types_are_422_on_referrals(
    alliance: Alliance, intake_unchanged: None, overrides: dict[str, Any], field: str | None
) -> None:
    body = referral_body(area=f"area-{alliance.suffix}")
    body.update(overrides)
    problem = refused(alliance.client("referrer").post("/referrals", json=body), 422)
    if field:
        assert field in fields(problem), problem


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("sessions", {**SESSION, "minutes": True}, "minutes"),
        ("sessions", {**SESSION, "minutes": "45"}, "minutes"),
        ("sessions", {**SESSION, "minutes": 45.5}, "minutes"),
        ("sessions", {**SESSION, "held_at": "2026-01-08T10:00:00+23:59"}, "held_at"),
        ("sessions", {**SESSION, "held_at": "0097-01-08T10:00:00Z"}, "held_at"),
        ("sessions", {**SESSION, "held_at": 1767866400}, "held_at"),
        ("contacts", {"contacted_at": "2026-01-07T09:00:00-16:30"}, "contacted_at"),
        (
            "activities",
            {"activity_id": "walk\u0000", "referred_at": "2026-01-08T11:00:00Z"},
            "activity_id",
        ),
        (
            "outcomes",
            {
                "measure": "ucla3",
                "timepoint": "baseline",
                "items": ["3", 3, 2],
                "recorded_at": "2026-01-08T10:30:00Z",
            },
            "items.0",
        ),
        (
            "outcomes",
            {
                "measure": "wemwbs",
                "timepoint": "baseline",
                "score": "45",
                "recorded_at": "2026-01-08T10:30:00Z",
            },
            "score",
        ),
    ],
    ids=lambda v: str(v)[:40],
)
def test_implausible_times_nul_and_loose_types_are_422_on_casework(
    system: RunningSystem,
    alliance: Alliance,
    accepted: str,
    route: str,
    body: Any,
    field: str | None,
) -> None:
    counts = Counts(system.database_url, "outcomes")
    before = counts.snapshot()
    response = alliance.client("link_worker").post(f"/referrals/{accepted}/{route}", json=body)
    problem = refused(response, 422)
    if field:
        assert field in fields(problem), problem
    assert counts.snapshot() == before


def test_nul_in_paths_and_queries_and_huge_numbers_are_4xx_never_5xx(
    alliance: Alliance, accepted: str
) -> None:
    vg = alliance.client("provider")
    refused(
        vg.post(
            f"/referrals/{accepted}/activities/walk%00x/attendance",
            json={"attended_at": "2026-01-10T10:00:00Z"},
        ),
        422,
    )
    client = alliance.client("referrer")
    refused(client.get("/view", params={"status": "closed\u0000"}), 422)
    refused(client.get("/view", params={"status": "whatever"}), 422)
    refused(client.get("/view", params={"offset": "9223372036854775808"}), 422)
    refused(client.get("/view", params={"offset": str(10**30)}), 422)
    refused(client.get("/referrals/%00"), 422)


def test_405_says_which_methods_are_allowed(alliance: Alliance) -> None:
    response = alliance.client("referrer").delete("/referrals")
    refused(response, 405)
    assert response.headers["allow"] == "POST"
    response = alliance.client("referrer").put("/view")
    assert refused(response, 405) and response.headers["allow"] == "GET"


def test_every_status_the_api_can_answer_is_documented(alliance: Alliance) -> None:
    spec = httpx.get(f"{alliance.base_url}/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert {"400", "405", "413", "422", "429", "431", "503"} <= documented, (path, method)
            if path != "/healthz" and not path.startswith(("/healthz/", "/metrics")):
                assert {"401", "403", "404"} <= documented, (path, method)
    assert "200" in spec["paths"]["/referrals"]["post"]["responses"]  # an idempotent replay


def test_attendance_on_a_closed_referral_is_409(system: RunningSystem, alliance: Alliance) -> None:
    rid = _accepted(system, alliance)
    lw, vg = alliance.client("link_worker"), alliance.client("provider")
    activity = {"activity_id": f"walk-{alliance.suffix}", "referred_at": "2026-01-08T11:00:00Z"}
    assert lw.post(f"/referrals/{rid}/activities", json=activity).status_code == 201
    closing = {"reason": "completed", "closed_at": "2026-01-20T10:00:00Z"}
    assert lw.post(f"/referrals/{rid}/close", json=closing).status_code == 201
    counts = Counts(system.database_url, "outcomes")
    before = counts.snapshot()
    problem = refused(
        vg.post(
            f"/referrals/{rid}/activities/walk-{alliance.suffix}/attendance",
            json={"attended_at": "2026-01-21T10:00:00Z"},
        ),
        409,
    )
    assert problem["state"]["status"] == "closed"
    assert counts.snapshot() == before


def test_casework_on_an_unknown_referral_answers_at_once_and_stalls_nobody(
    alliance: Alliance,
) -> None:
    """Finding 7: 70 casework calls on unknown ids by one partner, in parallel; another
    partner's reads meanwhile stay fast and are never shed."""
    import time

    lw = alliance.client("link_worker")
    started = time.monotonic()
    refused(lw.post(f"/referrals/{uuid.uuid4()}/sessions", json=SESSION), 404)
    assert time.monotonic() - started < 1.5

    def unknown(_: int) -> int:
        with alliance.client("link_worker") as c:
            return c.post(f"/referrals/{uuid.uuid4()}/sessions", json=SESSION).status_code

    def other_partner(_: int) -> tuple[int, float]:
        with alliance.client("referrer") as c:
            t = time.monotonic()
            status = c.get("/view").status_code
            return status, time.monotonic() - t

    with ThreadPoolExecutor(max_workers=40) as pool:
        burst = pool.map(unknown, range(70))
        reads = list(pool.map(other_partner, range(20)))
        statuses = list(burst)
    assert set(statuses) <= {404, 429}, statuses
    assert all(status == 200 for status, _ in reads), reads  # never shed with 503
    # (a generous bound: this machine's two cores are shared; the old code took >3 s)
    assert max(seconds for _, seconds in reads) < 5.0, reads


@pytest.mark.parametrize(
    "area", ["Flat 3, 12 Acacia Avenue RT1 9QX", "nowhere-in-the-directory", "North"]
)
def test_an_area_outside_the_directory_is_422_naming_area(
    alliance: Alliance, intake_unchanged: None, area: str
) -> None:
    """Issue 11 item 9: ``area`` reaches every topic, so only the directory's areas may."""
    body = referral_body(area=area)
    problem = refused(alliance.client("referrer").post("/referrals", json=body), 422)
    assert "area" in fields(problem), problem


def test_a_referrer_reads_its_referral_right_after_making_it(alliance: Alliance) -> None:
    """Read your own writes: at once 200, or 409 not-yet-known + Retry-After while the
    referral is on its way to the referrer's view (never 404); then 200 as referrer."""
    referrer = alliance.client("referrer")
    rid = referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}")).json()[
        "referral_id"
    ]
    first = referrer.get(f"/referrals/{rid}")
    assert first.status_code in (200, 409), first.text
    if first.status_code == 409:
        assert first.json()["error"] == "not-yet-known" and "Retry-After" in first.headers
    shown = wait_until(
        lambda: (r := referrer.get(f"/referrals/{rid}")).status_code == 200 and r, timeout=60
    )
    assert shown.json()["role"] == "referrer"
    # nobody else learns of it that way
    refused(alliance.client("other_referrer").get(f"/referrals/{rid}"), 404)
    # casework before outcomes heard of it is "not yet", never "no such referral"
    early = alliance.client("link_worker").post(f"/referrals/{rid}/sessions", json=SESSION)
    assert early.status_code in (403, 409), early.text


def test_casework_not_accepted_by_the_caller_answers_at_once(
    system: RunningSystem, alliance: Alliance
) -> None:
    """60 parallel casework calls from one partner on a referral routed to it but not
    accepted: nothing is on its way to outcomes, so each answers 409 at once (no wait
    holding a slot), and another partner meanwhile is served, never shed with 503.
    (The per-organisation share itself: tests/e2e/test_quota_stack.py.)"""
    import time

    rid = _create(alliance, needs=["stress"])
    _routed_to_lw(system, alliance, rid)

    def early(_: int) -> tuple[int, float]:
        with alliance.client("link_worker") as c:
            t = time.monotonic()
            status = c.post(f"/referrals/{rid}/sessions", json=SESSION).status_code
            return status, time.monotonic() - t

    def other_partner(_: int) -> tuple[int, float]:
        with alliance.client("referrer") as c:
            t = time.monotonic()
            status = c.get("/view").status_code
            return status, time.monotonic() - t

    with ThreadPoolExecutor(max_workers=70) as pool:
        burst = pool.map(early, range(60))
        reads = list(pool.map(other_partner, range(10)))
        answers = list(burst)
    assert {s for s, _ in answers} <= {409, 429}, answers
    assert [s for s, _ in reads] == [200] * 10, reads  # never shed with 503
    # alone, one such call answers at once (the old code waited 3 s for routing)
    started = time.monotonic()
    assert early(0)[0] == 409
    assert time.monotonic() - started < 1.5
