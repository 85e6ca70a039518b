"""Chaos phases with records no service wrote, produced by an independent client.

``confluent_kafka`` (librdkafka) shares no code with the system's Kafka clients, so
what it produces is what any other client on the bus could produce.

- **Forged gap**: for a real referral whose outcomes stream is at version N, a valid
  ``session-held`` claiming version N+5 lands on ``referral-events``; then two real
  sessions and a close go through the API. The contract (issue 11, gap-safe
  consumers): the real events all reach every view they are due to, the forged one
  reaches none and ends in dead letters or held (``bus.held``), nothing else changes.
- **Poison header**: copies of real records with the ``ce_actor`` header set to null,
  on a partner topic and on ``referral-events``. The contract: each ends in dead letters,
  no worker restarts, nothing forwards the header (no ``None`` actor on any partner
  topic), and new referrals keep flowing.

Both then run the chaos checker (``bench.chaos.verify``): stores equal to what the API
accepted, every view equal to what the stores say and to a clean rebuild.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
from confluent_kafka import Producer
from psycopg import AsyncConnection, sql

from bench.workload import AREA, ORGS, REFERRERS
from bus.relay import to_cloudevent
from eventstore.store import EVENT_COLUMNS, stored_event
from referralnet.lag import wait_caught_up
from referralnet.ops import log
from referralnet.ops.dead_letters import consumer_schemas
from referralnet.system import RunningSystem
from schemas.envelope import to_kafka
from services.outcomes.store import STORE as OUTCOMES

Kafka = tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]
Ledger = Any  # bench.chaos.Ledger (a cycle otherwise)
CommandFactory = Callable[[str, UUID, datetime | None, int], Any]


@dataclass
class ForgeryVerdict:
    """What a forged-gap or poison-header phase found."""

    phase: str
    forged: int = 0
    accounted: list[str] = field(default_factory=list)  # where each bad record ended
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and len(self.accounted) >= self.forged

    def summary(self) -> str:
        lines = [
            f"{self.phase}: {self.forged} bad record(s) produced, {len(self.accounted)} "
            f"accounted for ({'; '.join(self.accounted) or '-'}), problems {len(self.problems)}"
        ]
        lines += [f"  problem: {p}" for p in self.problems[:10]]
        return "\n".join(lines)


def produce(bootstrap_servers: str, topic: str, records: list[Kafka]) -> list[tuple[int, int]]:
    """Produce with confluent_kafka; each record's (partition, offset), in order."""
    # murmur2_random: the Java partitioner, as aiokafka's, so a referral's records land
    # on the partition its other events are on.
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "acks": "all", "partitioner": "murmur2_random"}
    )
    placed: dict[int, tuple[int, int]] = {}
    errors: list[str] = []
    for i, (key, value, headers) in enumerate(records):

        def report(err: Any, msg: Any, i: int = i) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                placed[i] = (msg.partition(), msg.offset())

        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=report)
    if producer.flush(30) != 0 or errors:
        raise RuntimeError(f"confluent_kafka could not produce to {topic}: {errors}")
    return [placed[i] for i in range(len(records))]


class _Partners:
    """The bench alliance through the public API (synchronous, one command at a time)."""

    def __init__(self, system: RunningSystem, tokens: dict[str, str], ledger: Ledger) -> None:
        self.system, self.tokens, self.ledger = system, tokens, ledger
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
        self.tick = 0

    def at(self) -> datetime:
        """A world time unique to this phase (the checker keys commands by it)."""
        self.tick += 1
        return self.base + timedelta(seconds=self.tick, microseconds=self.tick)

    def client(self, org: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.system.base_url,
            headers={"Authorization": f"Bearer {self.tokens[org]}"},
            timeout=30,
        )

    def command(self, org: str, kind: str, rid: UUID, path: str, body: dict[str, Any]) -> None:
        from bench.chaos import Command

        at = datetime.fromisoformat(next(v for k, v in body.items() if k.endswith("_at")))
        with self.client(org) as client:
            response = client.post(path, json=body)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{kind} {rid}: {response.status_code} {response.text}")
        self.ledger.accept(Command(kind, rid, at, int(body.get("minutes", 0)), "acknowledged"))

    def referral(self, timeout: float = 60.0) -> tuple[UUID, str]:
        """A referral created, routed and accepted; (id, its link-worker service)."""
        from bench.chaos import Command

        referrer = REFERRERS[0]
        body = {
            "person": {"name": "Forgery Person", "date_of_birth": "1980-05-17"},
            "needs": ["stress"],
            "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": True},
            "area": AREA,
            "urgency": "routine",
            "referred_at": self.base.isoformat(),
        }
        with self.client(referrer) as client:
            created = client.post("/referrals", json=body)
            if created.status_code != 201:
                raise RuntimeError(f"POST /referrals: {created.status_code} {created.text}")
            rid = UUID(created.json()["referral_id"])
            self.ledger.accept(Command("referral", rid, None, 0, "acknowledged"))
            deadline = time.monotonic() + timeout
            service = None
            while service is None:
                view = client.get(f"/referrals/{rid}", params={"person": "false"})
                if view.status_code == 200 and view.json()["view"].get("service_org"):
                    service = str(view.json()["view"]["service_org"])
                elif time.monotonic() > deadline:
                    raise RuntimeError(f"referral {rid} not routed within {timeout:.0f}s")
                else:
                    time.sleep(0.1)  # polling the referrer's view with a deadline
        self.command(
            service, "accept", rid, f"/referrals/{rid}/accept",
            {"accepted_at": self.at().isoformat()},
        )  # fmt: skip
        return rid, service

    def session(self, service: str, rid: UUID, minutes: int) -> None:
        self.command(
            service, "session", rid, f"/referrals/{rid}/sessions",
            {"kind": "short-conversation", "minutes": minutes, "mode": "phone",
             "held_at": self.at().isoformat()},
        )  # fmt: skip

    def close(self, service: str, rid: UUID) -> None:
        self.command(
            service, "close", rid, f"/referrals/{rid}/close",
            {"reason": "completed", "closed_at": self.at().isoformat()},
        )  # fmt: skip


def _caught_up(system: RunningSystem, wait_seconds: float = 120.0) -> None:
    asyncio.run(
        wait_caught_up(
            system.database_url, system.bootstrap_servers, system.topics, wait_seconds=wait_seconds
        )
    )


async def _dead_lettered_by(
    database_url: str, topic: str, partition: int, offset: int
) -> list[str]:
    """The consumers that parked the record at ``topic[partition]@offset``."""
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        found: list[str] = []
        for schema in await consumer_schemas(conn):
            cur = await conn.execute(
                sql.SQL(
                    'SELECT consumer FROM {} WHERE topic = %s AND partition = %s AND "offset" = %s'
                ).format(sql.Identifier(schema, "dead_letter_outbox")),
                (topic, partition, offset),
            )
            found += [str(r[0]) for r in await cur.fetchall()]
        return found


async def _held_anywhere(database_url: str) -> list[str]:
    """Schemas that report held or parked events (``bus.held``, from the gap-safety work;
    empty until that module exists)."""
    try:
        held = importlib.import_module("bus.held")
    except ImportError:
        return []
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        result = []
        for schema in await consumer_schemas(conn):
            summary = await held.held_summary(conn, schema)
            if summary:
                result.append(f"{schema}: {summary}")
        return result


async def _head(database_url: str, rid: UUID) -> Any:
    """The outcomes stream's newest event for ``rid``."""
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            sql.SQL(
                "SELECT " + EVENT_COLUMNS + " FROM {}.events WHERE stream_id = %s "
                "ORDER BY version DESC LIMIT 1"
            ).format(sql.Identifier(OUTCOMES.schema)),
            (rid,),
        )
        row = await cur.fetchone()
        assert row is not None, f"no outcomes events for {rid}"
        names = [c.strip() for c in EVENT_COLUMNS.split(",")]
        return stored_event(dict(zip(names, row, strict=True)))


def forged_gap_phase(
    system: RunningSystem, tokens: dict[str, str], ledger: Ledger, ahead: int = 5
) -> ForgeryVerdict:
    """A forged far-ahead version, then real events through the API (module docstring)."""
    verdict = ForgeryVerdict("forged gap")
    partners = _Partners(system, tokens, ledger)
    rid, service = partners.referral()
    partners.session(service, rid, 25)
    _caught_up(system)
    head = asyncio.run(_head(system.database_url, rid))
    real = to_cloudevent(OUTCOMES, head)
    data = dict(real.data)
    if "session_id" in data:
        data["session_id"] = str(uuid4())
    data["duration_minutes" if "duration_minutes" in data else "minutes"] = 600
    forged = replace(
        real,
        id=uuid4(),
        streamversion=head.version + ahead,
        data=data,
        time=real.time + timedelta(minutes=1),
    )
    key, value, headers = to_kafka(forged)
    [(partition, offset)] = produce(
        system.bootstrap_servers,
        system.topics.referral_events,
        [(key, value, list[tuple[str, str | bytes | None]](headers))],
    )
    verdict.forged = 1
    try:
        partners.session(service, rid, 26)
        partners.session(service, rid, 27)
        partners.close(service, rid)
        _caught_up(system)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        verdict.problems.append(f"real events after the forged record did not flow: {exc}")
    parked = asyncio.run(
        _dead_lettered_by(system.database_url, system.topics.referral_events, partition, offset)
    )
    verdict.accounted += [f"dead letter of {c}" for c in parked]
    if not parked:
        verdict.accounted += [
            f"held: {h}" for h in asyncio.run(_held_anywhere(system.database_url))
        ]
    if len(verdict.accounted) < verdict.forged:
        verdict.problems.append(
            f"forged session-held v{forged.streamversion} of {rid} (ce_id {forged.id}) is in "
            "no dead letter and not held"
        )
    return verdict


async def _last_record(bootstrap_servers: str, topic: str) -> tuple[Any, int] | None:
    """The newest record on ``topic`` (any partition) and its partition."""
    highwater = await log.topic_highwaters(bootstrap_servers, [topic])
    best: tuple[Any, int] | None = None
    for (t, p), hw in highwater.items():
        if hw == 0:
            continue
        async for _, messages in log.read_range(bootstrap_servers, {(t, p): hw - 1}, {(t, p): hw}):
            for m in messages:
                if best is None or m.timestamp > best[0].timestamp:
                    best = (m, p)
    return best


async def _forwarded_null_actor(bootstrap_servers: str, topics: list[str]) -> list[str]:
    """Records on ``topics`` whose ``ce_actor`` is missing, empty or the text ``None``."""
    highwater = await log.topic_highwaters(bootstrap_servers, topics)
    bad = []
    async for tp, messages in log.read_range(bootstrap_servers, {}, highwater):
        for m in messages:
            actor = dict(m.headers or ()).get("ce_actor")
            if actor in (None, b"", b"None"):
                bad.append(f"{tp.topic}[{tp.partition}]@{m.offset}")
    return bad


def poison_header_phase(
    system: RunningSystem, tokens: dict[str, str], ledger: Ledger
) -> ForgeryVerdict:
    """Copies of real records with a null ``ce_actor`` (module docstring)."""
    verdict = ForgeryVerdict("poison header")
    partners = _Partners(system, tokens, ledger)
    rid, service = partners.referral()
    partners.session(service, rid, 31)
    _caught_up(system)
    restarts = {n: c.restarts for n, c in system.supervisor.children.items()}
    referrer_topic = system.topics.org(REFERRERS[0])
    placed: list[tuple[str, int, int]] = []
    for topic in (referrer_topic, system.topics.referral_events):
        found = asyncio.run(_last_record(system.bootstrap_servers, topic))
        if found is None:
            verdict.problems.append(f"no record on {topic} to copy")
            continue
        record, _ = found
        headers: list[tuple[str, str | bytes | None]] = [
            (k, None if k == "ce_actor" else bytes(v)) for k, v in record.headers or ()
        ]
        [(partition, offset)] = produce(
            system.bootstrap_servers, topic, [(record.key, record.value, headers)]
        )
        placed.append((topic, partition, offset))
    verdict.forged = len(placed)
    # The consumers go on: a new journey reaches the views.
    try:
        rid2, service2 = partners.referral()
        partners.session(service2, rid2, 32)
        _caught_up(system)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        verdict.problems.append(f"new referrals did not flow after the poison: {exc}")
    for topic, partition, offset in placed:
        parked = asyncio.run(_dead_lettered_by(system.database_url, topic, partition, offset))
        if parked:
            verdict.accounted.append(f"{topic}[{partition}]@{offset}: dead letter of {parked}")
        else:
            verdict.problems.append(
                f"{topic}[{partition}]@{offset} (null ce_actor): no dead letter"
            )
    again = {n: c.restarts for n, c in system.supervisor.children.items()}
    for name, n in again.items():
        if n != restarts.get(name, 0):
            verdict.problems.append(f"worker {name} restarted {n - restarts.get(name, 0)}x")
    partner_topics = [system.topics.org(o) for o in ORGS]
    forwarded = asyncio.run(_forwarded_null_actor(system.bootstrap_servers, partner_topics))
    verdict.problems += [f"forwarded with a null actor: {w}" for w in forwarded if w not in {
        f"{t}[{p}]@{o}" for t, p, o in placed
    }]  # fmt: skip
    return verdict
