"""``Idempotency-Key`` done right (issue 12, findings 5 and 6, Must have 5)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from referralnet.system import RunningSystem
from tests.conftest import Alliance, referral_body

pytestmark = pytest.mark.infra


def _referrals_in_intake(system: RunningSystem) -> int:
    with psycopg.connect(system.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM intake.referral_people").fetchone()
    return int(row[0]) if row else 0


def test_a_retry_with_the_same_key_and_body_replays_the_first_answer(
    system: RunningSystem, alliance: Alliance
) -> None:
    client = alliance.client("referrer")
    body = referral_body(area=f"area-{alliance.suffix}")
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = client.post("/referrals", json=body, headers=headers)
    assert first.status_code == 201, first.text
    before = _referrals_in_intake(system)
    again = client.post("/referrals", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert _referrals_in_intake(system) == before
    # the key is per organisation: another referrer using the same key is a new referral
    other = alliance.client("other_referrer").post("/referrals", json=body, headers=headers)
    assert other.status_code == 201 and other.json() != first.json()


def test_the_same_key_with_a_different_body_is_422_and_stores_nothing(
    system: RunningSystem, alliance: Alliance
) -> None:
    client = alliance.client("referrer")
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = client.post(
        "/referrals", json=referral_body(area=f"area-{alliance.suffix}"), headers=headers
    )
    assert first.status_code == 201
    before = _referrals_in_intake(system)
    someone_else: dict[str, Any] = referral_body(area=f"area-{alliance.suffix}")
    someone_else["person"] = {"name": "Another Person", "date_of_birth": "1970-02-02"}
    second = client.post("/referrals", json=someone_else, headers=headers)
    assert second.status_code == 422, second.text
    assert second.json()["fields"][0]["field"] == "Idempotency-Key"
    assert _referrals_in_intake(system) == before


def test_ten_concurrent_requests_with_one_key_create_one_referral(
    system: RunningSystem, alliance: Alliance
) -> None:
    body = referral_body(area=f"area-{alliance.suffix}")
    key = f"k-{uuid.uuid4()}"
    before = _referrals_in_intake(system)

    def post(_: int) -> tuple[int, str]:
        with alliance.client("referrer") as c:
            r = c.post("/referrals", json=body, headers={"Idempotency-Key": key})
            return r.status_code, r.json().get("referral_id", "")

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(post, range(10)))
    statuses = sorted(s for s, _ in answers)
    assert statuses.count(201) == 1, answers
    assert set(statuses) <= {200, 201, 409}, answers
    assert len({rid for s, rid in answers if s in (200, 201)}) == 1, answers
    assert _referrals_in_intake(system) == before + 1


def test_keys_are_stored_only_as_digests(system: RunningSystem, alliance: Alliance) -> None:
    key = f"secret-key-{uuid.uuid4()}"
    created = alliance.client("referrer").post(
        "/referrals",
        json=referral_body(area=f"area-{alliance.suffix}"),
        headers={"Idempotency-Key": key},
    )
    assert created.status_code == 201
    with psycopg.connect(system.database_url) as conn:
        rows = conn.execute("SELECT key FROM intake.idempotency").fetchall()
    assert rows and all(key not in r[0] for r in rows)


def test_a_key_with_control_characters_is_422(alliance: Alliance) -> None:
    response = alliance.client("referrer").post(
        "/referrals",
        json=referral_body(area=f"area-{alliance.suffix}"),
        headers={"Idempotency-Key": "tab\there"},
    )
    assert response.status_code == 422, response.text


def test_no_idempotency_key_or_token_reaches_any_log(
    system: RunningSystem, alliance: Alliance
) -> None:
    """Every log of the running system (PostgreSQL's and each worker's) after concurrent
    uses of one key, its reuse with another body and a bad token."""
    key = f"log-probe-{uuid.uuid4()}"
    body = referral_body(area=f"area-{alliance.suffix}")

    def post(n: int) -> int:
        with alliance.client("referrer") as c:
            sent = body if n < 6 else {**body, "urgency": "urgent"}
            return c.post("/referrals", json=sent, headers={"Idempotency-Key": key}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(8)))
    assert 201 in statuses and 422 in statuses, statuses
    import httpx

    bogus = f"rn_bogus{uuid.uuid4().hex}"
    httpx.get(f"{alliance.base_url}/view", headers={"Authorization": f"Bearer {bogus}"})
    secrets = [key, bogus, *alliance.tokens.values()]
    logs = list((system.settings.home / "logs").rglob("*.log"))
    assert logs, "no logs to search"
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, (path.name, secret[:12])
