"""Tokens can be revoked, rotated and can expire, with effect within seconds (finding 3);
operations routes are for operators only."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from referralnet.settings import settings
from referralnet.system import RunningSystem
from tests.conftest import Alliance, wait_until
from tests.ops.conftest import run_cli
from web.ops_guard import ops_token

pytestmark = pytest.mark.infra

EFFECT_WITHIN = settings().token_cache_seconds + 3.0
"""Seconds within which a change must reach the API (cache lifetime plus slack)."""


def _status(base_url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{base_url}/view", headers=headers, timeout=10).status_code


def test_a_token_removed_from_the_database_stops_working_within_seconds(
    system: RunningSystem, alliance: Alliance
) -> None:
    """The finding as reported: the hash deleted by hand, the cached token kept working."""
    org = alliance.ids["other_referrer"]
    token = alliance.tokens[org]
    assert _status(alliance.base_url, token) == 200  # now cached in the API
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        conn.execute("UPDATE directory.organisations SET token_hash = NULL WHERE id = %s", (org,))
    started = time.monotonic()
    wait_until(lambda: _status(alliance.base_url, token) == 401, timeout=EFFECT_WITHIN)
    assert time.monotonic() - started <= EFFECT_WITHIN


def test_revoke_then_rotate_with_a_grace_period(system: RunningSystem, alliance: Alliance) -> None:
    org = alliance.ids["referrer"]
    old = alliance.tokens[org]
    assert _status(alliance.base_url, old) == 200

    rotated = run_cli(system, "token", "rotate", org, "--grace", "60")
    assert rotated.exit_code == 0, rotated
    new = rotated.stdout.strip()
    assert new.startswith("rn_") and new != old and len(rotated.stdout.splitlines()) == 1
    assert _status(alliance.base_url, new) == 200
    assert _status(alliance.base_url, old) == 200  # within its grace period

    again = run_cli(system, "token", "rotate", org)  # no grace: the previous one ends now
    assert again.exit_code == 0, again
    newest = again.stdout.strip()
    wait_until(lambda: _status(alliance.base_url, new) == 401, timeout=EFFECT_WITHIN)
    assert _status(alliance.base_url, old) == 200  # its own grace period still runs
    assert _status(alliance.base_url, newest) == 200

    revoked = run_cli(system, "token", "revoke", org)
    assert revoked.exit_code == 0, revoked
    for token in (old, newest):
        wait_until(lambda t=token: _status(alliance.base_url, t) == 401, timeout=EFFECT_WITHIN)


def test_a_token_can_expire(system: RunningSystem, alliance: Alliance) -> None:
    org = alliance.ids["provider"]
    rotated = run_cli(system, "token", "rotate", org, "--expires-in", "2")
    assert rotated.exit_code == 0, rotated
    token = rotated.stdout.strip()
    assert _status(alliance.base_url, token) == 200
    wait_until(lambda: _status(alliance.base_url, token) == 401, timeout=2 + EFFECT_WITHIN)


def test_token_commands_refuse_an_unknown_organisation_in_one_line(
    system: RunningSystem,
) -> None:
    for args in (("rotate", "no-such-org"), ("revoke", "no-such-org")):
        result = run_cli(system, "token", *args)
        assert result.exit_code == 2, result
        assert len((result.stdout + result.stderr).strip().splitlines()) == 1


def test_metrics_and_worker_health_need_the_ops_token(
    system: RunningSystem, alliance: Alliance
) -> None:
    partner = {"Authorization": f"Bearer {alliance.tokens[alliance.ids['referrer']]}"}
    ops = {"Authorization": f"Bearer {ops_token(system.settings.home)}"}
    for path in ("/metrics", "/healthz/api"):
        for headers in ({}, partner):
            response = httpx.get(f"{system.base_url}{path}", headers=headers, timeout=30)
            assert response.status_code == 401, (path, response.text)
            assert alliance.ids["referrer"] not in response.text
        assert httpx.get(f"{system.base_url}{path}", headers=ops, timeout=30).status_code in (
            200,
            503,
        )
    assert httpx.get(f"{system.base_url}/healthz", timeout=30).json() == {"status": "ok"}
