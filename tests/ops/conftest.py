"""Helpers for the operations tests: journeys through the API, checksums, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from referralnet.cli import main
from referralnet.lag import wait_caught_up
from referralnet.ops.checksum import view_checksum
from referralnet.system import RunningSystem
from tests.conftest import Alliance, alliance_yaml, referral_body, register_alliance, wait_until
from views.schema import schema_name


@pytest.fixture(scope="session")
def alliance(system: RunningSystem) -> Alliance:
    """One alliance for every operations test (they filter by their own ids).

    Each newly registered alliance costs topics, schemas and consumers; on the embedded
    broker the distributor has been seen to stall ~40 s publishing to a second one's
    fresh topics, so these tests register as few as they can.
    """
    suffix = uuid.uuid4().hex[:8]
    return register_alliance(system, alliance_yaml(suffix), suffix)


def cli_env(system: RunningSystem, **overrides: str) -> dict[str, str]:
    """The environment a user of ``referralnet`` next to ``system`` would have."""
    env = {
        "DATABASE_URL": system.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": system.bootstrap_servers,
        "REFERRALNET_TOPIC_PREFIX": system.topics.prefix,
        "REFERRALNET_HOME": str(system.settings.home),
    }
    env.update(overrides)
    return env


@dataclass(frozen=True)
class CliResult:
    """What a user of the console script sees: exit code, stdout, stderr."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(system: RunningSystem, *args: str, **env: str) -> CliResult:
    """Run ``referralnet ARGS`` in-process through the console-script entry point.

    ``main`` (not typer's own runner) is what maps bad input to one line and exit 2.
    """
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv = dict(os.environ), sys.argv
    os.environ.update(cli_env(system, **env))
    sys.argv = ["referralnet", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return CliResult(code, out.getvalue(), err.getvalue())


def view_of(client: httpx.Client, rid: str) -> dict[str, Any] | None:
    response = client.get(f"/referrals/{rid}", params={"person": "false"})
    return response.json()["view"] if response.status_code == 200 else None


def service_client(alliance: Alliance, service_org: str) -> httpx.Client:
    role = "link_worker" if service_org == alliance.ids["link_worker"] else "second_link_worker"
    return alliance.client(role)


def accepted_referral(alliance: Alliance) -> tuple[str, httpx.Client]:
    """A referral routed and accepted; returns its id and its link-worker service's client."""
    referrer = alliance.client("referrer")
    created = referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}"))
    assert created.status_code == 201, created.text
    rid = created.json()["referral_id"]
    routed = wait_until(
        lambda: (v := view_of(referrer, rid)) and v["status"] == "routed" and v, timeout=60
    )
    service = service_client(alliance, routed["service_org"])
    accepted = service.post(
        f"/referrals/{rid}/accept", json={"accepted_at": "2026-01-06T09:00:00Z"}
    )
    assert accepted.status_code == 200, accepted.text
    return rid, service


def add_session(service: httpx.Client, rid: str, minutes: int = 50, day: int = 8) -> None:
    response = service.post(
        f"/referrals/{rid}/sessions",
        json={
            "kind": "longer-appointment",
            "minutes": minutes,
            "mode": "in-person",
            "held_at": f"2026-01-{day:02d}T10:00:00Z",
        },
    )
    assert response.status_code == 201, response.text


def journeys(alliance: Alliance, count: int, sessions: int = 1) -> list[str]:
    """``count`` referrals, each accepted and with ``sessions`` sessions."""
    rids = []
    for _ in range(count):
        rid, service = accepted_referral(alliance)
        for n in range(sessions):
            add_session(service, rid, minutes=30 + n, day=8 + n)
        rids.append(rid)
    return rids


def caught_up(system: RunningSystem, wait_seconds: float = 60.0) -> float:
    return asyncio.run(
        wait_caught_up(
            system.database_url, system.bootstrap_servers, system.topics, wait_seconds=wait_seconds
        )
    )


def checksums(system: RunningSystem, orgs: list[str]) -> dict[str, str]:
    """Every named organisation's live view checksum."""

    async def collect() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(
            system.database_url, autocommit=True
        ) as conn:
            return {o: await view_checksum(conn, schema_name(o)) for o in orgs}

    return asyncio.run(collect())


def query(system: RunningSystem, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()
