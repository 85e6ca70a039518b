"""kill -9 of a consumer at any moment neither loses nor doubles an event (DESIGN §4).

Referrals with sessions flow through the public API while one worker is killed with
SIGKILL again and again (the supervisor's watchdog restarts it). Once the pipeline has
caught up, every count in the partners' views and in routing equals what the stores of
record say. A record delivered twice on an organisation's topic counts once.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from referralnet.lag import wait_caught_up
from referralnet.system import RunningSystem
from services.distributor.policy import MILESTONES_FOR_REFERRER
from tests.conftest import Alliance, alliance_yaml, referral_body, register_alliance, wait_until
from views.schema import schema_name

pytestmark = pytest.mark.infra

MIN_REFERRALS = 30
MAX_REFERRALS = 150  # a bound, in case kills take far longer than expected
CONCURRENCY = 6
REFERRED_AT = datetime(2026, 1, 5, 10, tzinfo=UTC)


# ----------------------------------------------------------------------------- driving


@dataclass
class Flow:
    """Referrals driven through the API, and what the driver knows it did."""

    alliance: Alliance
    sessions: dict[str, list[int]] = field(default_factory=dict)  # rid → minutes
    referrer_of: dict[str, str] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def journey(self, index: int) -> None:
        role = "referrer" if index % 2 == 0 else "other_referrer"
        area = f"area-{self.alliance.suffix}"
        with self.alliance.client(role) as referrer, self.alliance.client("link_worker") as lw:
            # "stress" only the first link-worker service takes: no routing ambiguity.
            created = referrer.post(
                "/referrals",
                json=referral_body(area=area, needs=["stress"]),
            )
            assert created.status_code == 201, created.text
            rid = created.json()["referral_id"]
            with self.lock:
                self.referrer_of[rid] = self.alliance.ids[role]
                self.sessions[rid] = []
            # Until routing has routed it: 409 not yet; retried (routing may be the one killed).
            _until_ok(lambda: lw.post(f"/referrals/{rid}/accept", json={"accepted_at": _at(1)}))
            for n in range(1 + index % 3):
                minutes = 10 + index % 7 + n
                session = {
                    "kind": "short-conversation" if n % 2 else "longer-appointment",
                    "minutes": minutes,
                    "mode": "phone",
                    "held_at": _at(2 + n),
                }

                def hold(body: dict[str, Any] = session) -> httpx.Response:
                    return lw.post(f"/referrals/{rid}/sessions", json=body)

                _until_ok(hold, created=True)
                with self.lock:
                    self.sessions[rid].append(minutes)


def _at(days: int) -> str:
    return (REFERRED_AT + timedelta(days=days)).isoformat()


def _until_ok(call: Callable[[], httpx.Response], *, created: bool = False) -> httpx.Response:
    """Retry while the service has not heard yet (404/409), with a deadline."""
    deadline = time.monotonic() + 60
    pause = 0.05
    while True:
        response = call()
        if response.status_code == (201 if created else 200):
            return response
        if response.status_code not in (404, 409) or time.monotonic() > deadline:
            raise AssertionError(f"{response.status_code}: {response.text}")
        time.sleep(pause)  # polling the API with a deadline
        pause = min(pause * 1.5, 0.5)


def drive(flow: Flow, keep_going: threading.Event) -> None:
    """At least MIN_REFERRALS journeys, more while ``keep_going`` is set, CONCURRENCY at once."""
    slots = threading.BoundedSemaphore(CONCURRENCY)
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="driver") as pool:
        for index in range(MAX_REFERRALS):
            if index >= MIN_REFERRALS and not keep_going.is_set():
                break
            if any(f.done() and f.exception() for f in futures):
                break  # a journey failed: stop and report it
            slots.acquire()
            future = pool.submit(flow.journey, index)
            future.add_done_callback(lambda _: slots.release())
            futures.append(future)
    flow.errors.extend(e for f in futures if (e := f.exception()) is not None)


# ----------------------------------------------------------------------------- killing


def _progress(conn: psycopg.Connection[Any], worker: str, alliance: Alliance) -> int:
    """How far ``worker``'s stored positions have got (sum of next offsets)."""
    if worker == "views":
        org = alliance.ids["link_worker"]
        schema, consumer = schema_name(org), f"view.{org}"
    else:
        schema = consumer = worker
    row = conn.execute(
        f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".positions WHERE consumer = %s',
        (consumer,),
    ).fetchone()
    return int(row[0]) if row else 0


def kill_repeatedly(
    system: RunningSystem, workers: tuple[str, ...], alliance: Alliance, kills: int
) -> dict[str, list[int]]:
    """SIGKILL each of ``workers`` ``kills`` times, each time just after its (restarted)
    process applied something new, so that every kill lands while it is working; at
    least the watchdog's restart time apart. Workers are killed independently, so their
    restarts overlap."""
    sup = system.supervisor
    killed: dict[str, list[int]] = {w: [] for w in workers}
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        last = {w: _progress(conn, w, alliance) for w in workers}
        deadline = time.monotonic() + 90
        while any(len(k) < kills for k in killed.values()) and time.monotonic() < deadline:
            for worker in workers:
                proc = sup.children[worker].proc
                now = _progress(conn, worker, alliance)
                if (
                    len(killed[worker]) < kills
                    and now > last[worker]
                    and proc.poll() is None
                    and proc.pid not in killed[worker]
                ):
                    killed[worker].append(proc.pid)
                    sup.kill(worker)  # SIGKILL and reap; the watchdog starts a new one
                    last[worker] = _progress(conn, worker, alliance)
            time.sleep(0.05)  # polling positions with a deadline
    return killed


# ----------------------------------------------------------------------------- checking


def _scalar(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def check_views_match_the_stores(system: RunningSystem, flow: Flow) -> None:
    alliance = flow.alliance
    lw = alliance.ids["link_worker"]
    rids = sorted(flow.sessions)
    ids = [UUID(r) for r in rids]
    with psycopg.connect(system.database_url) as conn:
        # The stores of record agree with what the driver did.
        store_events: dict[UUID, list[tuple[UUID, str]]] = {r: [] for r in ids}
        for schema in ("intake", "routing", "outcomes"):
            for stream, event_id, type_ in conn.execute(
                f"SELECT stream_id, event_id, type FROM {schema}.events "
                "WHERE stream_id = ANY(%s) ORDER BY position",
                (ids,),
            ):
                store_events[stream].append((event_id, type_))
        for rid in ids:
            types = Counter(t for _, t in store_events[rid])
            assert types["referral-created"] == 1
            assert types["referral-routed"] == 1, f"{rid} routed {types['referral-routed']}x"
            assert types["referral-accepted"] == 1
            assert types["session-held"] == len(flow.sessions[str(rid)])
        # Routing's capacity ledger counted each referral once.
        assert _scalar(
            conn, "SELECT caseload FROM routing.capacity WHERE service_org = %s", lw
        ) == len(rids)
        assert _scalar(
            conn, "SELECT count(*) FROM outcomes.cases WHERE referral_id = ANY(%s) "
            "AND status = 'accepted' AND service_org = %s", ids, lw,
        ) == len(rids)  # fmt: skip

        # The link worker's view: the whole referral, every session exactly once.
        lw_view = schema_name(lw)
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                f"SELECT referral_id, sessions, session_minutes, status, service_org "
                f"FROM {lw_view}.referrals WHERE referral_id = ANY(%s)",
                (ids,),
            )
        }
        assert set(rows) == set(ids), "link worker's view lost referrals"
        for rid in ids:
            minutes = flow.sessions[str(rid)]
            assert rows[rid] == (len(minutes), sum(minutes), "in-progress", lw), rid
        session_rows = Counter(
            r[0]
            for r in conn.execute(
                f"SELECT referral_id FROM {lw_view}.sessions WHERE referral_id = ANY(%s)", (ids,)
            )
        )
        assert session_rows == Counter(
            {rid: len(flow.sessions[str(rid)]) for rid in ids if flow.sessions[str(rid)]}
        )
        timeline = _timeline(conn, lw_view, ids)
        for rid in ids:  # the routed service sees every event of its referral
            assert timeline[rid] == Counter(store_events[rid]), rid

        # Each referrer's view: each of its referrals exactly once, its milestones.
        for role in ("referrer", "other_referrer"):
            org = alliance.ids[role]
            mine = [UUID(r) for r in rids if flow.referrer_of[r] == org]
            view = schema_name(org)
            got: dict[UUID, int] = dict(
                conn.execute(
                    f"SELECT referral_id, sessions FROM {view}.referrals "
                    "WHERE referral_id = ANY(%s) OR referrer_org = %s",
                    (ids, org),
                ).fetchall()
            )
            assert set(got) == set(mine), f"{role}'s view holds other or missing referrals"
            assert got == {rid: len(flow.sessions[str(rid)]) for rid in mine}
            timeline = _timeline(conn, view, mine)
            for rid in mine:
                milestones = {m.event_type for m in MILESTONES_FOR_REFERRER}
                expected = Counter(e for e in store_events[rid] if e[1] in milestones)
                assert timeline[rid] == expected, rid

        # No view consumer parked anything: nothing was rejected on the way.
        for org in alliance.ids.values():
            assert _scalar(conn, f"SELECT count(*) FROM {schema_name(org)}.dead_letter_outbox") == 0


def _timeline(
    conn: psycopg.Connection[Any], schema: str, ids: list[UUID]
) -> dict[UUID, Counter[tuple[UUID, str]]]:
    result: dict[UUID, Counter[tuple[UUID, str]]] = {rid: Counter() for rid in ids}
    for rid, event_id, type_ in conn.execute(
        f"SELECT referral_id, event_id, type FROM {schema}.timeline WHERE referral_id = ANY(%s)",
        (ids,),
    ):
        result[rid][(event_id, type_)] += 1
    return result


# ----------------------------------------------------------------------------- tests


@pytest.fixture
def alliance(system: RunningSystem) -> Alliance:
    """An alliance whose link-worker service has room for every referral driven here."""
    suffix = uuid.uuid4().hex[:8]
    return register_alliance(system, alliance_yaml(suffix, capacity=MAX_REFERRALS + 10), suffix)


def _org_topic_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record on ``topic`` (until each partition's position is its high watermark)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
            if all(
                (hw := consumer.highwater(tp)) is not None and consumer.position(tp) >= hw
                for tp in tps
            ):
                return records
        raise AssertionError(f"could not read {topic} to its end")
    finally:
        consumer.close()


def test_an_event_delivered_twice_on_an_org_topic_counts_once(
    system: RunningSystem, alliance: Alliance
) -> None:
    flow = Flow(alliance)
    flow.journey(1)  # a referral with two sessions
    (rid,) = flow.sessions
    lw = alliance.ids["link_worker"]
    view, topic = schema_name(lw), system.topics.org(lw)

    def view_state() -> tuple[Any, ...]:
        with psycopg.connect(system.database_url) as conn:
            row = conn.execute(
                f"SELECT sessions, session_minutes, status, last_event_at FROM {view}.referrals "
                "WHERE referral_id = %s",
                (rid,),
            ).fetchone()
            timeline = _scalar(
                conn, f"SELECT count(*) FROM {view}.timeline WHERE referral_id = %s", rid
            )
            sessions = _scalar(
                conn, f"SELECT count(*) FROM {view}.sessions WHERE referral_id = %s", rid
            )
        return (row, timeline, sessions)

    before = wait_until(lambda: (s := view_state())[0] and s[0][0] == 2 and s, timeout=60)
    records = [
        r for r in _org_topic_records(system.bootstrap_servers, topic) if r.key == rid.encode()
    ]
    by_type = {dict(r.headers)["ce_type"].decode(): r for r in records}
    assert {"referral-created", "referral-routed", "session-held"} <= set(by_type)
    delivered = {(dict(r.headers)["ce_id"], dict(r.headers)["ce_type"]) for r in records}
    assert before[1] == len(delivered)  # timeline rows == distinct events delivered

    # Copies at new offsets, byte for byte, as a producer retry or a replay would make.
    producer = KafkaProducer(bootstrap_servers=system.bootstrap_servers, acks="all")
    copies = []
    try:
        for event_type in ("session-held", "referral-created", "referral-routed"):
            original = by_type[event_type]
            copies.append(
                producer.send(
                    topic,
                    key=original.key,
                    value=original.value,
                    headers=list(original.headers),
                    partition=original.partition,
                ).get(timeout=10)
            )
    finally:
        producer.close()
    partition = copies[0].partition
    last_copy = max(c.offset for c in copies)

    def view_read_past_the_copies() -> bool:
        with psycopg.connect(system.database_url) as conn:
            position = conn.execute(
                f"SELECT next_offset FROM {view}.positions WHERE consumer = %s AND topic = %s "
                "AND partition = %s",
                (f"view.{lw}", topic, partition),
            ).fetchone()
        return position is not None and position[0] > last_copy

    wait_until(view_read_past_the_copies, timeout=60)
    assert view_state() == before
    with psycopg.connect(system.database_url) as conn:
        assert _scalar(conn, f"SELECT count(*) FROM {view}.dead_letter_outbox") == 0


@pytest.mark.parametrize(
    ("workers", "kills"),
    [(("views",), 3), (("distributor", "routing"), 2)],
    ids=["views", "faust-workers"],
)
def test_kill_9_while_referrals_flow_loses_and_doubles_nothing(
    system: RunningSystem, alliance: Alliance, workers: tuple[str, ...], kills: int
) -> None:
    flow = Flow(alliance)
    keep_going = threading.Event()
    keep_going.set()
    driver = threading.Thread(target=drive, args=(flow, keep_going), name="driver")
    driver.start()
    try:
        killed = kill_repeatedly(system, workers, alliance, kills)
    finally:
        keep_going.clear()
        driver.join(timeout=180)
    assert not driver.is_alive(), "the driver did not finish"
    assert not flow.errors, flow.errors[:3]
    for worker, pids in killed.items():
        assert len(pids) == kills, f"only {len(pids)} kills of {worker} landed while it worked"
        child, n = system.supervisor.children[worker], len(pids)
        wait_until(lambda c=child, n=n: c.restarts >= n and c.proc.poll() is None)
    assert len(flow.sessions) >= MIN_REFERRALS

    # One more referral after the last kill: "caught up" then also means every restarted
    # worker has joined and consumed, not merely that nothing was left when it died.
    flow.journey(MAX_REFERRALS)
    asyncio.run(wait_caught_up(system.database_url, system.bootstrap_servers, system.topics))
    check_views_match_the_stores(system, flow)
