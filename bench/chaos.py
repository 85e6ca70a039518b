"""Fault harness: kill -9 the workers while referrals flow, then prove nothing was lost.

``python -m bench.chaos --kills 100`` (``make chaos``) and ``tests/e2e/test_chaos.py``
(20 kills) run the same code:

1. the whole system runs as users run it (``running_system``), with a bench alliance;
2. a driver thread plays the partners through the public API: referrals, acceptance,
   sessions, an outcome measure, sometimes closing, several journeys at once;
3. meanwhile the killer SIGKILLs a random worker (API, relay, routing, distributor,
   outcomes, views) every couple of seconds; the supervisor's watchdog restarts it;
4. optionally the broker is restarted (losing its whole log) mid-run and
   ``referralnet.ops.republish`` refills it from the stores;
5. once the pipeline has caught up, ``verify`` checks the stores against what the API
   acknowledged and every view against what the stores say it must hold, and compares
   each view's checksum with a clean rebuild from the stores.

What counts as accepted work. A request answered 2xx is *acknowledged*. A request whose
answer was lost (the API died, a 5xx, a timeout) has an *unknown* outcome: the driver
waits until the old API process is gone, looks in the store of record for the event
the request would have written (every command carries a unique time, so each is
recognisable), and counts it *confirmed* if it landed; if not, it is sent again. POST
/referrals is retried with the same ``Idempotency-Key`` instead. So a lost response is
neither counted as lost work nor retried into a duplicate, and any duplicate or loss
the system itself causes is caught: the stores must hold exactly the acknowledged and
confirmed commands, and every view exactly the copies the distributor's policy gives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import structlog
from psycopg import AsyncConnection, sql

from bench.distribution import MemoryDistributor
from bench.tamper import run_tamper_phase
from bench.workload import ALLIANCE_YAML, COMMISSIONER, NEEDS, ORGS, REFERRERS
from bus.relay import to_cloudevent
from bus.tracking import Record, apply_batch
from directory.loader import parse
from domain import lifecycle
from eventstore.records import StoredEvent
from eventstore.store import EVENT_COLUMNS, stored_event
from referralnet.bootstrap import create_schemas
from referralnet.lag import wait_caught_up
from referralnet.ops.checksum import view_checksum
from referralnet.ops.republish import republish
from referralnet.registration import register
from referralnet.settings import Settings
from referralnet.supervisor import WORKERS
from referralnet.system import RunningSystem, running_system
from schemas.envelope import to_kafka
from services.distributor.policy import model_of
from services.distributor.store import pseudonym_secret
from services.intake.store import STORE as INTAKE
from services.outcomes.store import STORE as OUTCOMES
from services.routing.store import STORE as ROUTING
from views.projection import ViewProjection
from views.schema import create_view, schema_name

log = structlog.get_logger(__name__)

STORES = {s.schema: s for s in (INTAKE, ROUTING, OUTCOMES)}
HISTORY = (
    "SELECT * FROM ("
    + " UNION ALL ".join(f"SELECT '{n}' AS store, {EVENT_COLUMNS} FROM {n}.events" for n in STORES)
    + ") e ORDER BY recorded_at, store, position"
)
DEADLINE = 600.0
"""Seconds a journey step may wait for the pipeline: while routing is killed every few
seconds it may not route at all until the killing stops, and that is not a failure."""


# ----------------------------------------------------------------------------- driving


@dataclass(frozen=True)
class Command:
    """An accepted command and how we know: acknowledged (2xx) or confirmed in the store."""

    kind: str  # referral | accept | session | outcome | close
    referral_id: UUID
    at: datetime | None  # the command's unique world time (held_at, recorded_at ...)
    minutes: int
    how: str


@dataclass
class Ledger:
    """What the driver did, shared between its tasks and the checker."""

    commands: list[Command] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    unknown: int = 0
    unknown_referrals: int = 0
    unknown_landed: int = 0
    unknown_not_landed: int = 0
    shed: int = 0
    journeys_done: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, command: Command) -> None:
        with self.lock:
            self.commands.append(command)


class Unknown(Exception):
    """The request's answer was lost: it may or may not have been carried out."""


class Driver:
    """Partners' journeys through the public API, from a background thread."""

    def __init__(
        self,
        system: RunningSystem,
        tokens: dict[str, str],
        ledger: Ledger,
        concurrency: int = 6,
        seed: int = 1,
        deadline: float = DEADLINE,
    ) -> None:
        self.deadline = deadline
        self.system = system
        self.tokens = tokens
        self.ledger = ledger
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.keep_going = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticks = itertools.count(1)
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)

    # -- lifecycle
    def start(self) -> None:
        self.keep_going.set()
        self._thread = threading.Thread(target=self._run, name="chaos-driver", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 240.0) -> None:
        """Start no new journeys; wait for those under way to finish."""
        self.keep_going.clear()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.ledger.errors.append("driver did not finish its journeys in time")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # reported by the checker, never swallowed
            self.ledger.errors.append(f"driver crashed: {exc!r}")

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(self.system.base_url, timeout=timeout) as client:
            running: set[asyncio.Task[None]] = set()
            index = 0
            while self.keep_going.is_set():
                while len(running) < self.concurrency and self.keep_going.is_set():
                    running.add(asyncio.create_task(self._journey(client, index)))
                    index += 1
                done, running = await asyncio.wait(
                    running, timeout=0.2, return_when=asyncio.FIRST_COMPLETED
                )
                self._collect(done)
            if running:
                self._collect((await asyncio.wait(running))[0])

    def _collect(self, done: set[asyncio.Task[None]]) -> None:
        for task in done:
            if task.exception() is not None:
                self.ledger.errors.append(f"journey failed: {task.exception()!r}")

    def _at(self) -> datetime:
        """A world time unique to this run: how an unknown outcome is found in a store."""
        return self.base + timedelta(seconds=next(self._ticks))

    # -- one journey
    async def _journey(self, client: aiohttp.ClientSession, index: int) -> None:
        referrer = REFERRERS[index % len(REFERRERS)]
        rid = await self._create(client, referrer, index)
        service = await self._routed(client, referrer, rid)
        accepted_at = self._at()
        await self._command(
            client, service, "accept", rid, f"/referrals/{rid}/accept",
            {"accepted_at": accepted_at.isoformat()}, accepted_at,
        )  # fmt: skip
        for n in range(1 + index % 3):
            held_at = self._at()
            minutes = 10 + (index + n) % 50
            await self._command(
                client, service, "session", rid, f"/referrals/{rid}/sessions",
                {"kind": "short-conversation", "minutes": minutes, "mode": "phone",
                 "held_at": held_at.isoformat()},
                held_at, minutes,
            )  # fmt: skip
        recorded_at = self._at()
        await self._command(
            client, service, "outcome", rid, f"/referrals/{rid}/outcomes",
            {"measure": "ucla3", "timepoint": "baseline", "items": [1 + index % 3, 2, 2],
             "recorded_at": recorded_at.isoformat()},
            recorded_at,
        )  # fmt: skip
        if index % 2 == 0:
            closed_at = self._at()
            await self._command(
                client, service, "close", rid, f"/referrals/{rid}/close",
                {"reason": "completed", "closed_at": closed_at.isoformat()}, closed_at,
            )  # fmt: skip
        with self.ledger.lock:
            self.ledger.journeys_done += 1

    async def _send(
        self, client: aiohttp.ClientSession, method: str, path: str, org: str, body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bool, Any]:  # fmt: skip
        """(status, Retry-After given, JSON body); raises ``Unknown`` if the answer is lost."""
        with self.ledger.lock:
            self.ledger.requests += 1
        try:
            async with client.request(
                method,
                path,
                json=body,
                headers={"Authorization": f"Bearer {self.tokens[org]}", **(headers or {})},
            ) as response:
                payload = await response.json(content_type=None)
                status, retry = response.status, "Retry-After" in response.headers
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise Unknown(type(exc).__name__) from exc
        if status == 503 and retry:
            with self.ledger.lock:
                self.ledger.shed += 1  # refused before anything was done: safe to resend
        elif status >= 500:
            raise Unknown(f"HTTP {status}")
        return status, retry, payload

    async def _pause(self, attempt: int) -> None:
        with self.ledger.lock:
            self.ledger.retries += 1
        await asyncio.sleep(min(0.05 * 1.5**attempt, 1.0))  # retry backoff (fault injection)

    async def _create(self, client: aiohttp.ClientSession, referrer: str, index: int) -> UUID:
        """POST /referrals with an Idempotency-Key, resent until answered."""
        key = str(uuid4())
        body = {
            "person": {"name": f"Chaos Person {index}", "date_of_birth": "1980-05-17"},
            "needs": [NEEDS[index % len(NEEDS)]],
            "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": True},
            "area": "benchland",
            "urgency": "routine",
            "referred_at": self.base.isoformat(),
        }
        deadline = time.monotonic() + self.deadline
        for attempt in itertools.count():
            try:
                status, _, payload = await self._send(
                    client, "POST", "/referrals", referrer, body, {"Idempotency-Key": key}
                )
            except Unknown:
                status, payload = 0, None
                with self.ledger.lock:
                    self.ledger.unknown_referrals += 1  # resent with the same key
            if status in (200, 201):
                rid = UUID(payload["referral_id"])
                self.ledger.accept(Command("referral", rid, None, 0, "acknowledged"))
                return rid
            if status not in (0, 503) or time.monotonic() > deadline:
                raise AssertionError(f"POST /referrals: {status} {payload}")
            await self._pause(attempt)
        raise AssertionError("unreachable")

    async def _routed(self, client: aiohttp.ClientSession, referrer: str, rid: UUID) -> str:
        """The link-worker service, once the referrer's own view shows the referral routed."""
        deadline = time.monotonic() + self.deadline
        for attempt in itertools.count():
            with contextlib.suppress(Unknown):
                status, _, payload = await self._send(
                    client, "GET", f"/referrals/{rid}?person=false", referrer
                )
                view = payload.get("view", {}) if status == 200 else {}
                if view.get("service_org") and view.get("status") in ("routed", "accepted"):
                    return str(view["service_org"])
            if time.monotonic() > deadline:
                raise AssertionError(f"referral {rid} not routed within {self.deadline:.0f}s")
            await self._pause(min(attempt, 6))
        raise AssertionError("unreachable")

    async def _command(
        self, client: aiohttp.ClientSession, org: str, kind: str, rid: UUID, path: str,
        body: dict[str, Any], at: datetime, minutes: int = 0,
    ) -> None:  # fmt: skip
        """Send until acknowledged, or until the store shows a lost answer's command landed."""
        deadline = time.monotonic() + self.deadline
        for attempt in itertools.count():
            api_pid = self.system.supervisor.children["api"].proc.pid
            try:
                status, retry, payload = await self._send(client, "POST", path, org, body)
            except Unknown:
                with self.ledger.lock:
                    self.ledger.unknown += 1
                await self._settle(client, api_pid)
                if await landed(self.system.database_url, kind, rid, at):
                    with self.ledger.lock:
                        self.ledger.unknown_landed += 1
                    self.ledger.accept(Command(kind, rid, at, minutes, "confirmed"))
                    return
                with self.ledger.lock:
                    self.ledger.unknown_not_landed += 1
                continue
            if status in (200, 201):
                self.ledger.accept(Command(kind, rid, at, minutes, "acknowledged"))
                return
            # 503: shed; 403/404/409: outcomes or routing has not heard yet (a worker is down)
            if status not in (403, 404, 409, 503) or time.monotonic() > deadline:
                raise AssertionError(f"{kind} {rid}: {status} {payload} (retry-after {retry})")
            await self._pause(min(attempt, 6))

    async def _settle(self, client: aiohttp.ClientSession, api_pid: int) -> None:
        """Wait until no API process can still be working on the lost request."""
        deadline = time.monotonic() + 60
        child = self.system.supervisor.children["api"]
        if child.proc.pid == api_pid and child.proc.poll() is None:
            await asyncio.sleep(10)  # the same API is alive: let a slow request finish
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                async with client.get("/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)  # polling the restarted API with a deadline


async def landed(database_url: str, kind: str, rid: UUID, at: datetime | None) -> bool:
    """Whether the command whose answer was lost is in its store of record."""
    store, event_type, key = {
        "accept": ("routing", "referral-accepted", "accepted_at"),
        "session": ("outcomes", "session-held", "held_at"),
        "outcome": ("outcomes", "outcome-recorded", "recorded_at"),
        "close": ("outcomes", "referral-closed", "closed_at"),
    }[kind]
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT data->>%s FROM {}.events WHERE stream_id = %s AND type = %s").format(
                sql.Identifier(store)
            ),
            (key, rid, event_type),
        )
        return any(_same_time(r[0], at) for r in await cur.fetchall())


def _same_time(text: str | None, at: datetime | None) -> bool:
    if text is None or at is None:
        return False
    return datetime.fromisoformat(text.replace("Z", "+00:00")) == at


# ----------------------------------------------------------------------------- killing


@dataclass
class Killer:
    """SIGKILLs a worker every ``gap`` seconds (randomised), cycling through all of them."""

    system: RunningSystem
    seed: int = 7
    gap: tuple[float, float] = (1.0, 3.0)
    kills: Counter[str] = field(default_factory=Counter)

    def kill_some(self, count: int, progress: Any = None) -> None:
        rng = random.Random(self.seed)
        names = list(WORKERS)
        order: Iterator[str] = itertools.chain.from_iterable(
            rng.sample(names, len(names)) for _ in itertools.count()
        )
        done = 0
        while done < count:
            time.sleep(rng.uniform(*self.gap))  # random fault-injection points
            name = next(order)
            child = self.system.supervisor.children[name]
            deadline = time.monotonic() + 30
            while child.proc.poll() is not None and time.monotonic() < deadline:
                time.sleep(0.05)  # the watchdog is restarting it; kill the new one
            self.system.supervisor.kill(name)
            self.kills[name] += 1
            done += 1
            if progress is not None:
                progress(done)


# ----------------------------------------------------------------------------- checking


@dataclass
class Verdict:
    """What the checker found."""

    kills: int = 0
    kills_by_worker: dict[str, int] = field(default_factory=dict)
    broker_restarts: int = 0
    commands: int = 0
    confirmed_after_lost_answer: int = 0
    events_checked: int = 0
    copies_checked: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    view_mismatches: list[str] = field(default_factory=list)
    checksums: dict[str, tuple[str, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    ledger: dict[str, int] = field(default_factory=dict)

    @property
    def checksum_mismatches(self) -> list[str]:
        return [org for org, (live, clean) in self.checksums.items() if live != clean]

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.view_mismatches
            or self.checksum_mismatches
            or self.errors
        )

    def summary(self) -> str:
        by_worker = ", ".join(f"{k} {v}" for k, v in self.kills_by_worker.items())
        lines = [
            f"kills done: {self.kills} ({by_worker}); broker restarts: {self.broker_restarts}",
            f"commands accepted: {self.commands} ({self.confirmed_after_lost_answer} confirmed "
            f"in the store after a lost answer); driver: {self.ledger}",
            f"events checked: {self.events_checked} stored, {self.copies_checked} view copies",
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, view mismatches "
            f"{len(self.view_mismatches)}, checksum mismatches {len(self.checksum_mismatches)} "
            f"of {len(self.checksums)} views",
        ]
        for title, items in (
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("view", self.view_mismatches),
            ("checksum", self.checksum_mismatches),
            ("error", self.errors),
        ):
            lines += [f"  {title}: {item}" for item in items[:10]]
        return "\n".join(lines)


async def _history(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    """Every stored event of every store, oldest recorded first: (store, *EVENT_COLUMNS)."""
    cur = await conn.execute(HISTORY)
    return list(await cur.fetchall())


_COLUMNS = [c.strip() for c in EVENT_COLUMNS.split(",")]


def _event(row: tuple[Any, ...]) -> tuple[str, StoredEvent]:
    store, *columns = row
    return store, stored_event(dict(zip(_COLUMNS, columns, strict=True)))


def _check_stores(rows: list[Any], ledger: Ledger, verdict: Verdict) -> None:
    """The stores hold exactly the commands the API accepted: nothing lost, nothing twice."""
    keys = {
        "referral-accepted": ("accept", "accepted_at"),
        "session-held": ("session", "held_at"),
        "outcome-recorded": ("outcome", "recorded_at"),
        "referral-closed": ("close", "closed_at"),
    }
    stored: Counter[tuple[str, UUID, str]] = Counter()
    created: Counter[UUID] = Counter()
    routed: Counter[UUID] = Counter()
    for row in rows:
        _, event = _event(row)
        if event.type == "referral-created":
            created[event.stream_id] += 1
        elif event.type == "referral-routed":
            routed[event.stream_id] += 1
        elif event.type in keys:
            kind, field_name = keys[event.type]
            at = datetime.fromisoformat(str(event.data[field_name]).replace("Z", "+00:00"))
            stored[(kind, event.stream_id, at.isoformat())] += 1
    wanted: Counter[tuple[str, UUID, str]] = Counter()
    referrals: set[UUID] = set()
    for c in ledger.commands:
        if c.kind == "referral":
            referrals.add(c.referral_id)
        elif c.at is not None:
            wanted[(c.kind, c.referral_id, c.at.isoformat())] += 1
    for rid in referrals - set(created):
        verdict.lost.append(f"referral {rid} acknowledged but not in intake's store")
    for rid, n in created.items():
        if n > 1 or rid not in referrals:
            verdict.duplicated.append(
                f"referral {rid}: created {n}x, acknowledged: {rid in referrals}"
            )
    for rid in referrals:
        if routed[rid] != 1:
            verdict.duplicated.append(f"referral {rid} routed {routed[rid]}x")
    for command, n in wanted.items():
        if n > 1:
            verdict.duplicated.append(f"{command} accepted {n}x by the driver")
        if stored.get(command, 0) == 0:
            verdict.lost.append(f"{command[0]} {command[1]} at {command[2]}: accepted, not stored")
    for command, got in stored.items():
        if got > 1 or command not in wanted:
            verdict.duplicated.append(f"{command} stored {got}x, accepted {wanted[command]}x")
    verdict.events_checked = len(rows)


@dataclass
class _Expected:
    timeline: set[tuple[UUID, UUID, str]] = field(default_factory=set)
    # each referral's lifecycle folded over the copies this view receives
    states: dict[UUID, lifecycle.Referral] = field(
        default_factory=lambda: defaultdict(lambda: lifecycle.NEW)
    )
    counters: dict[UUID, list[int]] = field(default_factory=dict)  # sessions, minutes, outcomes


def _expected_views(rows: list[Any], secret: bytes) -> dict[str, _Expected]:
    """What every view must hold, from the stores and the distributor's own policy."""
    distributor = MemoryDistributor([COMMISSIONER], secret)
    expected: dict[str, _Expected] = defaultdict(_Expected)
    for row in rows:
        store, event = _event(row)
        for org, copy in distributor.copies(to_cloudevent(STORES[store], event)):
            view = expected[org]
            rid = UUID(copy.subject)
            view.timeline.add((rid, copy.id, copy.type))
            view.states[rid] = lifecycle.apply(view.states[rid], model_of(copy))
    for view in expected.values():
        for rid, state in view.states.items():
            view.counters[rid] = [state.sessions, state.minutes, state.outcomes]
    return expected


async def _check_views(
    conn: AsyncConnection[Any], rows: list[Any], secret: bytes, verdict: Verdict
) -> None:
    """Each view holds each copy it is entitled to exactly once (timeline and counters)."""
    expected = _expected_views(rows, secret)
    for org in ORGS:
        want = expected.get(org, _Expected())
        s = sql.Identifier(schema_name(org))
        cur = await conn.execute(
            sql.SQL("SELECT referral_id, event_id, type FROM {}.timeline").format(s)
        )
        got = {(r[0], r[1], r[2]) for r in await cur.fetchall()}
        verdict.copies_checked += len(want.timeline)
        for item in sorted(want.timeline - got, key=str)[:20]:
            verdict.view_mismatches.append(f"{org}: missing {item[2]} {item[1]} of {item[0]}")
        for item in sorted(got - want.timeline, key=str)[:20]:
            verdict.view_mismatches.append(f"{org}: unexpected {item[2]} {item[1]} of {item[0]}")
        cur = await conn.execute(
            sql.SQL(
                "SELECT r.referral_id, r.sessions, r.session_minutes, r.outcomes, "
                "(SELECT count(*) FROM {s}.sessions x WHERE x.referral_id = r.referral_id) "
                "FROM {s}.referrals r"
            ).format(s=s)
        )
        for rid, sessions, minutes, outcomes, session_rows in await cur.fetchall():
            counters = want.counters.get(rid, [0, 0, 0])
            actual = [sessions, minutes, outcomes]
            if actual != counters or session_rows != counters[0]:
                verdict.view_mismatches.append(
                    f"{org}: referral {rid} sessions/minutes/outcomes {actual} "
                    f"(session rows {session_rows}), expected {counters}"
                )


async def _clean_checksums(url: str, rows: list[Any], secret: bytes) -> dict[str, tuple[str, str]]:
    """Each live view's checksum and that of a clean rebuild from the stores."""
    distributor = MemoryDistributor([COMMISSIONER], secret)
    records: dict[str, list[Record]] = defaultdict(list)
    for row in rows:
        store, event = _event(row)
        for org, copy in distributor.copies(to_cloudevent(STORES[store], event)):
            key, value, headers = to_kafka(copy)
            records[org].append(Record(f"org.{org}", 0, len(records[org]), key, value, headers))
    result = {}
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for org in ORGS:
            clean = schema_name(org, "__chaos")
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(clean))
            )
            await create_view(conn, clean)
            projection = ViewProjection(org, clean)
            batch = records.get(org, [])
            for i in range(0, len(batch), 2000):
                await apply_batch(conn, projection, f"org.{org}", 0, batch[i : i + 2000])
            result[org] = (
                await view_checksum(conn, schema_name(org)),
                await view_checksum(conn, clean),
            )
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(clean)))
    return result


async def verify(system: RunningSystem, ledger: Ledger, verdict: Verdict) -> Verdict:
    """Compare stores with the driver's ledger and views with the stores (see module doc)."""
    secret = pseudonym_secret(system.settings.home)
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(system.database_url, autocommit=True) as conn:
        rows = await _history(conn)
        _check_stores(rows, ledger, verdict)
        await _check_views(conn, rows, secret, verdict)
    verdict.checksums = await _clean_checksums(system.database_url, rows, secret)
    verdict.commands = len(ledger.commands)
    verdict.confirmed_after_lost_answer = sum(1 for c in ledger.commands if c.how == "confirmed")
    verdict.errors += ledger.errors
    verdict.ledger = {
        "journeys": ledger.journeys_done,
        "requests": ledger.requests,
        "retries": ledger.retries,
        "shed_503": ledger.shed,
        "lost_answers_referrals": ledger.unknown_referrals,
        "lost_answers_commands": ledger.unknown,
        "of_which_landed": ledger.unknown_landed,
        "of_which_not_landed": ledger.unknown_not_landed,
    }
    return verdict


# ----------------------------------------------------------------------------- running


def prepare(system: RunningSystem) -> dict[str, str]:
    """Register the bench alliance (with ample capacity) in a running system."""
    from bus.admin import ensure_topics

    parsed = parse(ALLIANCE_YAML, "chaos-alliance.yaml")

    async def load() -> dict[str, str]:
        await create_schemas(system.database_url)
        conn: AsyncConnection[Any]
        async with await AsyncConnection.connect(system.database_url, autocommit=True) as conn:
            return await register(conn, parsed)

    tokens = asyncio.run(load())
    ensure_topics(
        system.bootstrap_servers,
        system.topics.layout(system.topics.org(o.id) for o in parsed.organisations),
    )
    return tokens


def _caught_up(system: RunningSystem, wait_seconds: float = 120.0) -> float:
    return asyncio.run(
        wait_caught_up(
            system.database_url, system.bootstrap_servers, system.topics, wait_seconds=wait_seconds
        )
    )


def kill_phase(
    system: RunningSystem,
    tokens: dict[str, str],
    ledger: Ledger,
    kills: int,
    *,
    gap: tuple[float, float] = (1.0, 3.0),
    concurrency: int = 6,
    seed: int = 1,
    progress: Any = None,
) -> Verdict:
    """Drive journeys while killing ``kills`` times; catch up; verify.

    ``ledger`` holds what was accepted since the system started (verification compares
    it with everything in the stores), so pass the same one to every phase.
    """
    driver = Driver(system, tokens, ledger, concurrency=concurrency, seed=seed)
    killer = Killer(system, seed=seed, gap=gap)
    driver.start()
    try:
        killer.kill_some(kills, progress)
    finally:
        driver.stop()
    _caught_up(system)
    verdict = Verdict(kills=sum(killer.kills.values()), kills_by_worker=dict(killer.kills))
    return asyncio.run(verify(system, ledger, verdict))


def broker_restart_phase(
    system: RunningSystem,
    tokens: dict[str, str],
    ledger: Ledger,
    *,
    under_traffic: bool = False,
    seconds: float = 8.0,
    settle: float = 3.0,
    seed: int = 2,
) -> Verdict:
    """Restart the broker (losing its whole log), ``republish``, drive on, verify.

    By default journeys pause while the broker restarts and ``republish`` refills it
    (journeys run before and after). ``under_traffic`` keeps them running throughout:
    ``republish`` fences the relays while it refills (nothing twice, no stream's new
    events before its old ones) and recreates the lost topics empty. Consumers tell a
    stale position from one in the refilled log by its mark (``bus.tracking``).
    """
    if system.broker is None:
        raise RuntimeError("the broker-restart phase needs the embedded broker")
    # Under traffic nothing is killed: a journey waiting minutes is a stall, not chaos.
    patience = 120.0 if under_traffic else DEADLINE
    driver = Driver(system, tokens, ledger, seed=seed, deadline=patience)
    driver.start()
    try:
        time.sleep(seconds / 2)  # journeys under way ...
        if not under_traffic:
            driver.stop()  # ... and finished, with the pipeline caught up
            _caught_up(system)
        system.broker.restart()
        time.sleep(settle)  # as an operator would: notice, then run republish
        refill(system)
        if not under_traffic:
            driver = Driver(system, tokens, ledger, seed=seed + 100, deadline=patience)
            driver.start()
        time.sleep(seconds / 2)  # more journeys after the refill
    finally:
        driver.stop()
    _caught_up(system)
    return asyncio.run(verify(system, ledger, Verdict(broker_restarts=1)))


def refill(system: RunningSystem, attempts: int = 5) -> None:
    """``republish`` after the broker lost its log, again if it fails while the workers
    (reconnecting to the empty broker at the same moment) disturb it; it is idempotent."""
    for attempt in range(1, attempts + 1):
        try:
            result = asyncio.run(
                republish(
                    system.database_url,
                    system.bootstrap_servers,
                    system.topics,
                    home=system.settings.home,
                )
            )
        except Exception as exc:
            log.warning("republish_failed", attempt=attempt, error=repr(exc))
            if attempt == attempts:
                raise
            time.sleep(2.0)  # let the workers' clients settle on the new broker
            continue
        log.info(
            "republished",
            attempt=attempt,
            published=result.published,
            already_present=result.already_present,
            consumers_reset=len(result.consumers_reset),
            seconds=round(result.seconds, 2),
        )
        return


@contextlib.contextmanager
def chaos_system(home: Path | None = None) -> Iterator[tuple[RunningSystem, dict[str, str]]]:
    """A whole system of its own (embedded broker and database) with the bench alliance."""
    base = Path(tempfile.mkdtemp(prefix="referralnet-chaos-")) if home is None else home
    settings = replace(Settings(), home=base, kafka_bootstrap_servers=None, database_url=None)
    try:
        with running_system(settings, pick_free_port=True) as system:
            yield system, prepare(system)
    finally:
        if home is None:
            shutil.rmtree(base, ignore_errors=True)


PHASES = ("kill", "broker-restart", "broker-loss-under-traffic", "forged-gap", "poison-header",
          "tamper")  # fmt: skip


def tamper_phase(system: RunningSystem) -> tuple[int, int]:
    """(tamperings detected, tamperings tried) by ``bench.tamper.run_tamper_phase``.

    It copies streams of the running stores into a scratch schema and tampers with the
    copy as a database administrator would; the live stores are never touched. The
    system's home is passed because the seal and checkpoint keys live there.
    """
    result = run_tamper_phase(system.database_url, system.settings.home)
    return result.detected, result.total


@dataclass
class Totals:
    """What every phase found together: the figures ``make chaos`` ends with."""

    kills: int = 0
    events_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    failed: list[str] = field(default_factory=list)
    tamper: tuple[int, int] | None = None

    def add(self, phase: str, verdict: Verdict) -> None:
        self.kills += verdict.kills
        self.events_checked = max(self.events_checked, verdict.events_checked)
        self.lost += len(verdict.lost)
        self.duplicated += len(verdict.duplicated)
        if not verdict.ok:
            self.failed.append(phase)

    def summary(self) -> str:
        tampering = (
            f"tamperings detected {self.tamper[0]}/{self.tamper[1]}"
            if self.tamper is not None
            else "tamperings detected: no tamper phase (bench/tamper.py not present)"
        )
        return (
            f"kills {self.kills}, events checked {self.events_checked}, lost {self.lost}, "
            f"duplicated {self.duplicated}, {tampering}; failed phases: "
            f"{', '.join(self.failed) or 'none'}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=6, help="journeys at once")
    p.add_argument("--min-gap", type=float, default=1.5, help="seconds between kills, at least")
    p.add_argument("--max-gap", type=float, default=3.5, help="seconds between kills, at most")
    p.add_argument("--skip", action="append", default=[], choices=PHASES, help="skip a phase")
    p.add_argument("--no-broker-restart", action="store_true", help="skip both broker phases")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    from bench.common import console, progress
    from bench.forgery import forged_gap_phase, poison_header_phase

    skip = set(args.skip)
    if args.no_broker_restart:
        skip |= {"broker-restart", "broker-loss-under-traffic"}
    started = time.monotonic()
    totals = Totals()
    ledger = Ledger()
    with chaos_system() as (system, tokens):
        if "kill" not in skip:
            with progress("kill -9") as bar:
                task = bar.add_task("kills", total=args.kills)
                verdict = kill_phase(
                    system, tokens, ledger, args.kills, gap=(args.min_gap, args.max_gap),
                    concurrency=args.concurrency, seed=args.seed,
                    progress=lambda n: bar.update(task, completed=n),
                )  # fmt: skip
            console.print(verdict.summary())
            totals.add("kill", verdict)
        for phase, under_traffic in (
            ("broker-restart", False),
            ("broker-loss-under-traffic", True),
        ):
            if phase in skip:
                continue
            console.print(f"[bold]{phase}[/]")
            restart = broker_restart_phase(
                system, tokens, ledger, under_traffic=under_traffic, seed=args.seed + 1
            )
            console.print(restart.summary())
            totals.add(phase, restart)
        for phase, run in (
            ("forged-gap", forged_gap_phase),
            ("poison-header", poison_header_phase),
        ):
            if phase in skip:
                continue
            console.print(f"[bold]{phase}[/]")
            found = run(system, tokens, ledger)
            console.print(found.summary())
            checked = asyncio.run(verify(system, ledger, Verdict()))
            console.print(checked.summary())
            totals.add(phase, checked)
            if not found.ok:
                totals.failed.append(f"{phase} (bad records)")
        if "tamper" not in skip:
            totals.tamper = tamper_phase(system)
            if totals.tamper is not None and totals.tamper[0] < totals.tamper[1]:
                totals.failed.append("tamper")
    console.print(totals.summary())
    ok = not totals.failed
    console.print(f"chaos {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
