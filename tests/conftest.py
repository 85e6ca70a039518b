"""Shared fixtures: the real broker and database, started by the test session itself.

- ``stack``: an embedded Tansu broker and PostgreSQL for the whole session.
- ``database_url`` (parametrised): the embedded PostgreSQL and, when reachable, the
  "external" PostgreSQL 15 at 127.0.0.1:5432; on CI (``CI=true``) an unreachable external
  server fails the run instead of skipping, so no real-infrastructure test is skipped there.
- ``system``: the whole running Referral Network (all worker processes and the API).
- ``alliance``: a small directory registered in ``system`` with unique ids per test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from infra.embedded import EmbeddedBroker, EmbeddedPostgres
from referralnet.settings import Settings
from referralnet.system import RunningSystem, running_system

EXTERNAL_URL = os.environ.get(
    "REFERRALNET_EXTERNAL_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class Stack:
    home: Path
    bootstrap_servers: str
    database: EmbeddedPostgres
    broker: EmbeddedBroker


@contextmanager
def stack_home(name: str) -> Iterator[Path]:
    """A home for an embedded stack outside pytest's ``/tmp/pytest-of-<user>``.

    As root the embedded PostgreSQL runs as another account, so the home's parents get
    the traverse bit; every pytest session re-closes ``pytest-of-<user>`` to 0700 when it
    starts, which broke the servers of any other session running at that moment.
    """
    home = Path(tempfile.mkdtemp(prefix=f"referralnet-{name}-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with stack_home("stack") as home:
        yield from _stack(home)


def _stack(home: Path) -> Iterator[Stack]:
    broker, database = EmbeddedBroker(home), EmbeddedPostgres(home)
    bootstrap = broker.start()
    database.start()
    try:
        yield Stack(home, bootstrap, database, broker)
    finally:
        broker.stop()
        database.stop()


def _external_reachable() -> bool:
    try:
        with psycopg.connect(EXTERNAL_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session", params=["embedded", "external"])
def database_url(request: pytest.FixtureRequest, stack: Stack) -> Iterator[str]:
    """A fresh database on the embedded server, or on the external PostgreSQL 15 (dropped
    again at the end of the session: the external server outlives every run)."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    if request.param == "embedded":
        yield stack.database.create_database(name)
        return
    if not _external_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"external PostgreSQL at {EXTERNAL_URL} is not reachable on CI")
        pytest.skip(f"external PostgreSQL at {EXTERNAL_URL} is not reachable")
    with psycopg.connect(EXTERNAL_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield EXTERNAL_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(EXTERNAL_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def system() -> Iterator[RunningSystem]:
    """The whole network on its own embedded broker and database, like `referralnet up`."""
    with stack_home("system") as home:
        settings = replace(Settings(), home=home, kafka_bootstrap_servers=None, database_url=None)
        with running_system(settings, pick_free_port=True) as running:
            yield running


@dataclass
class Alliance:
    """A small registered alliance: org ids (unique to the test) and their tokens."""

    suffix: str
    ids: dict[str, str]
    tokens: dict[str, str]
    base_url: str

    def client(self, role: str) -> httpx.Client:
        """An HTTP client authenticated as the organisation playing ``role``."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.tokens[self.ids[role]]}"},
            timeout=30,
        )


def alliance_yaml(suffix: str, *, capacity: int = 40, area: str | None = None) -> str:
    """A directory with one partner of each role, ids made unique by ``suffix``."""
    area = area or f"area-{suffix}"
    return f"""
alliance: Test alliance {suffix}
organisations:
  - {{id: gp-{suffix}, name: GP {suffix}, kind: gp-practice, areas: [{area}]}}
  - {{id: fire-{suffix}, name: Fire {suffix}, kind: fire-service, areas: [{area}]}}
  - id: lw-{suffix}
    name: Link workers {suffix}
    kind: link-worker-service
    areas: [{area}]
    link_worker_service:
      needs: [social-connection, stress, physical-activity, financial-insecurity]
      link_workers: 1
      caseload_per_worker: {capacity}
  - id: lw2-{suffix}
    name: Second link workers {suffix}
    kind: link-worker-service
    areas: [{area}]
    link_worker_service:
      needs: [social-connection]
      link_workers: 1
      caseload_per_worker: {capacity}
  - {{id: vg-{suffix}, name: Walkers {suffix}, kind: voluntary-group, areas: [{area}]}}
  - {{id: icb-{suffix}, name: ICB {suffix}, kind: commissioner, areas: [{area}]}}
activities:
  - {{id: walk-{suffix}, name: Walk, provider: vg-{suffix}, kind: walking-group,
     needs: [physical-activity, social-connection], area: {area}}}
"""


ROLES = {
    "referrer": "gp",
    "other_referrer": "fire",
    "link_worker": "lw",
    "second_link_worker": "lw2",
    "provider": "vg",
    "commissioner": "icb",
}


def register_alliance(system: RunningSystem, yaml_text: str, suffix: str) -> Alliance:
    """Load a directory into ``system`` the way `referralnet directory load` does."""
    from bus.admin import ensure_topics
    from directory.loader import parse
    from referralnet.registration import register

    parsed = parse(yaml_text)

    async def load() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(system.database_url, autocommit=True) as c:
            return await register(c, parsed)

    tokens = asyncio.run(load())
    ensure_topics(
        system.bootstrap_servers,
        system.topics.layout(system.topics.org(o.id) for o in parsed.organisations),
    )
    ids = {role: f"{prefix}-{suffix}" for role, prefix in ROLES.items()}
    return Alliance(suffix, ids, tokens, system.base_url)


@pytest.fixture
def alliance(system: RunningSystem) -> Alliance:
    suffix = uuid.uuid4().hex[:8]
    return register_alliance(system, alliance_yaml(suffix), suffix)


def wait_until(check: Any, *, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``check()`` until it returns a truthy value or the deadline passes."""
    import time

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)  # polling with a deadline, not synchronisation by sleep
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def referral_body(**overrides: Any) -> dict[str, Any]:
    """A valid POST /referrals body (person aged 40, one need)."""
    body: dict[str, Any] = {
        "person": {
            "name": "Alex Example",
            "date_of_birth": "1985-04-02",
            "nhs_number": "943 476 5919",
            "phone": "07700 900123",
            "notes": "prefers mornings",
        },
        "needs": ["social-connection"],
        "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": True},
        "area": "north",
        "urgency": "routine",
        "referred_at": "2026-01-05T10:00:00Z",
    }
    body.update(overrides)
    return body
