"""The system's health in numbers: what ``referralnet status`` prints and ``/metrics`` serves.

Everything is read from the outside (PostgreSQL and the broker), not from the worker
processes, so it covers every worker whether it runs here or elsewhere: a consumer's
lag is its stored position against the partition's true high watermark, a relay's
backlog is its outbox, and a worker that stopped shows up as lag that does not move.

Unhealthy, each with its reason (and ``status`` exits 1):
- the database or broker does not answer;
- a topic is missing (the broker lost its log, or it was never created);
- a stored position is beyond its partition's high watermark (the broker lost its log:
  without this check that reads as "lag 0");
- a consumer lags more than ``max_lag``, or a partition's position stands still while
  its high watermark is ahead (no progress for ``stuck_seconds`` and, with
  ``recheck_seconds``, not moving across two readings): a consumer stuck behind one
  record, whatever its other partitions do;
- the supervisor restarted a worker more than ``max_restarts`` times in the last
  ``restart_window`` seconds (a crash loop);
- an outbox older than ``stuck_seconds``;
- dead letters nobody has re-driven or discarded yet.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql

from bus.held import HeldSummary, held_summary
from bus.seal_guard import refusal_counts
from bus.topics import Topics
from bus.tracking import REPLACED
from referralnet.lag import STORES, LogLoss, consumer_lags, consumers, log_losses
from referralnet.ops import log
from referralnet.ops.dead_letters import pending_counts
from referralnet.ops.restarts import restarts_within
from referralnet.services_table import BUS_CONSUMERS, SERVICES

SERVICE_OF_CONSUMER = {s.consumer: s.name for s in BUS_CONSUMERS if s.consumer is not None}


@dataclass(frozen=True)
class Thresholds:
    """When numbers become a problem."""

    max_lag: int = 1000
    stuck_seconds: float = 60.0
    max_restarts: int = 3
    restart_window: float = 60.0
    recheck_seconds: float = 0.0
    """A second reading of the positions this long after the first (0: one reading)."""
    held_seconds: float = 30.0
    """A record held behind a missing stream version longer than this is a problem: the
    version it waits for is not coming by itself (``bus.ordering``)."""


@dataclass
class StoreHealth:
    """One service's event store and the relay's backlog for it."""

    service: str
    events: int
    outbox_backlog: int
    oldest_unpublished_seconds: float | None
    last_event_at: datetime | None


@dataclass
class ConsumerHealth:
    """One consumer (a service's, or a partner view's) over its topic."""

    consumer: str
    kind: str
    topic: str
    lag: int
    position: int
    highwater: int
    last_applied_at: datetime | None
    dead_letters: int = 0


@dataclass
class PartitionHealth:
    """One consumer on one partition (where "stuck behind one record" shows)."""

    consumer: str
    topic: str
    partition: int
    position: int
    highwater: int
    updated_at: datetime | None
    moved: bool | None = None  # across two readings; None: read once


@dataclass(frozen=True)
class Problem:
    """Something unhealthy, and which part of the system it is about."""

    component: str
    message: str


SERVICE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "api": ("database", "worker:api"),
    "relay": ("database", "broker", "store:", "worker:relay"),
    "views": ("database", "broker", "consumer:view.", "worker:views"),
}
for _s in SERVICES:
    SERVICE_COMPONENTS[_s.name] = (
        ("database", "broker")
        + ((f"store:{_s.name}",) if _s.store is not None else ())
        + ((f"consumer:{_s.consumer}",) if _s.consumer is not None else ())
        + tuple(f"worker:{w}" for w in _s.workers)
    )
"""Which components each worker process answers for (prefixes), for ``/healthz/<name>``."""


@dataclass
class SystemStatus:
    """A snapshot; ``problems`` empty means healthy."""

    at: datetime
    database_error: str | None
    broker_error: str | None
    stores: list[StoreHealth] = field(default_factory=list)
    consumers: list[ConsumerHealth] = field(default_factory=list)
    dead_letters: int = 0
    problems: list[Problem] = field(default_factory=list)
    partitions: list[PartitionHealth] = field(default_factory=list)
    missing_topics: list[str] = field(default_factory=list)
    misshapen_topics: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``{topic: (partitions on the broker, partitions it is created with)}`` where they
    differ: a broker that lost its log auto-created it with its own count."""
    restarts: dict[str, int] = field(default_factory=dict)
    dead_letters_by_consumer: dict[str, int] = field(default_factory=dict)
    held: dict[str, HeldSummary] = field(default_factory=dict)
    """Per consumer with held records: what waits behind a missing stream version."""
    refused: dict[str, int] = field(default_factory=dict)
    """Per store: events the publishers refused as tampered (``bus.seal_guard``)."""
    log_losses: list[LogLoss] = field(default_factory=list)
    """Partitions whose log a consumer found lost (and re-read from the start) since the
    last ``republish``: its positions no longer show it, the consumers noted it."""

    @property
    def healthy(self) -> bool:
        return not self.problems

    def problems_of(self, service: str) -> list[Problem]:
        """The problems a worker process answers for (see ``SERVICE_COMPONENTS``)."""
        prefixes = SERVICE_COMPONENTS[service]
        return [p for p in self.problems if p.component.startswith(prefixes)]

    def as_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else value

        return {
            "at": self.at.isoformat(),
            "healthy": self.healthy,
            "database": {"reachable": self.database_error is None, "error": self.database_error},
            "broker": {"reachable": self.broker_error is None, "error": self.broker_error},
            "stores": [{k: plain(v) for k, v in asdict(s).items()} for s in self.stores],
            "consumers": [{k: plain(v) for k, v in asdict(c).items()} for c in self.consumers],
            "dead_letters": self.dead_letters,
            "missing_topics": self.missing_topics,
            "misshapen_topics": {
                t: {"partitions": found, "created_with": wanted}
                for t, (found, wanted) in self.misshapen_topics.items()
            },
            "restarts_in_window": self.restarts,
            "held": {c: {k: plain(v) for k, v in asdict(h).items()} for c, h in self.held.items()},
            "refused_events": self.refused,
            "log_losses": [{k: plain(v) for k, v in asdict(x).items()} for x in self.log_losses],
            "problems": [asdict(p) for p in self.problems],
        }


async def _stores(conn: AsyncConnection[Any]) -> list[StoreHealth]:
    result = []
    for store in STORES:
        s = sql.Identifier(store.schema)
        cur = await conn.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM {s}.events), (SELECT count(*) FROM {s}.outbox), "
                "(SELECT extract(epoch FROM clock_timestamp() - min(e.recorded_at)) "
                " FROM {s}.outbox o JOIN {s}.events e ON e.position = o.event_position), "
                "(SELECT max(recorded_at) FROM {s}.events)"
            ).format(s=s)
        )
        row = await cur.fetchone()
        assert row is not None
        oldest = float(row[2]) if row[2] is not None else None
        result.append(StoreHealth(store.schema, int(row[0]), int(row[1]), oldest, row[3]))
    return result


async def _last_applied(conn: AsyncConnection[Any], schema: str, consumer: str) -> datetime | None:
    try:
        cur = await conn.execute(
            sql.SQL("SELECT max(updated_at) FROM {}.positions WHERE consumer = %s").format(
                sql.Identifier(schema)
            ),
            (consumer,),
        )
    except psycopg.errors.UndefinedTable:
        return None
    row = await cur.fetchone()
    return row[0] if row else None


async def _consumers(
    conn: AsyncConnection[Any], bootstrap_servers: str, topics: Topics
) -> tuple[list[ConsumerHealth], list[PartitionHealth]]:
    by_consumer: dict[str, ConsumerHealth] = {}
    partitions: list[PartitionHealth] = []
    for lag in await consumer_lags(conn, bootstrap_servers, topics):
        partitions.append(
            PartitionHealth(
                lag.consumer, lag.topic, lag.partition, lag.position, lag.highwater, lag.updated_at
            )
        )
        found = by_consumer.get(lag.consumer)
        if found is None:
            kind = "service" if lag.consumer in SERVICE_OF_CONSUMER else "view"
            found = by_consumer[lag.consumer] = ConsumerHealth(
                lag.consumer,
                kind,
                lag.topic,
                0,
                0,
                0,
                await _last_applied(conn, lag.schema, lag.consumer),
            )
        found.lag += lag.lag
        found.position += lag.position
        found.highwater += lag.highwater
    return list(by_consumer.values()), partitions


async def _recheck(
    conn: AsyncConnection[Any], topics: Topics, partitions: list[PartitionHealth]
) -> None:
    """Second reading of the stored positions: did each partition move since the first?"""
    now: dict[tuple[str, str, int], int] = {}
    for consumer, schema, topic in await consumers(conn, topics):
        try:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT partition, next_offset FROM {}.positions "
                    "WHERE consumer = %s AND topic = %s"
                ).format(sql.Identifier(schema)),
                (consumer, topic),
            )
        except psycopg.errors.UndefinedTable:
            continue
        for partition, offset in await cur.fetchall():
            now[(consumer, topic, int(partition))] = int(offset)
    for p in partitions:
        p.moved = now.get((p.consumer, p.topic, p.partition), 0) != p.position


def _topic_shapes(
    bootstrap_servers: str, layout: dict[str, int]
) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Topics of ``{topic: partitions}`` missing on the broker, and those it holds with
    another partition count (found, wanted)."""
    counts = log.partition_counts(bootstrap_servers, list(layout))
    missing = sorted(t for t in layout if t not in counts)
    misshapen = {t: (counts[t], n) for t, n in sorted(layout.items()) if counts.get(t, n) != n}
    return missing, misshapen


def _problems(status: SystemStatus, limits: Thresholds) -> list[Problem]:
    problems = []
    if status.database_error:
        problems.append(Problem("database", f"database unreachable: {status.database_error}"))
    if status.broker_error:
        problems.append(Problem("broker", f"broker unreachable: {status.broker_error}"))
    for store in status.stores:
        age = store.oldest_unpublished_seconds
        if store.outbox_backlog and age is not None and age > limits.stuck_seconds:
            problems.append(
                Problem(
                    f"store:{store.service}",
                    f"{store.service} outbox stuck: {store.outbox_backlog} events, oldest "
                    f"unpublished for {age:.0f}s",
                )
            )
    if status.missing_topics:
        problems.append(
            Problem(
                "broker",
                f"topic(s) missing on the broker: {', '.join(status.missing_topics)} (it lost "
                "its log, or they were never created): run `referralnet republish`",
            )
        )
    for topic, (found, wanted) in status.misshapen_topics.items():
        problems.append(
            Problem(
                "broker",
                f"topic {topic} has {found} partitions, created with {wanted} (a broker that "
                "lost its log auto-created it; records land in other partitions than the "
                "consumers read): run `referralnet republish`",
            )
        )
    for p in status.partitions:
        where = f"consumer:{p.consumer}"
        if p.position > p.highwater:
            problems.append(
                Problem(
                    where,
                    f"{p.consumer}: stored position {p.position} is beyond the high watermark "
                    f"{p.highwater} of {p.topic}[{p.partition}] (the broker lost its log): "
                    "run `referralnet republish`",
                )
            )
        elif p.highwater > p.position and p.moved is not True:
            idle = (status.at - p.updated_at).total_seconds() if p.updated_at is not None else None
            if idle is None or idle > limits.stuck_seconds:
                since = "never moved" if idle is None else f"no progress for {idle:.0f}s"
                problems.append(
                    Problem(
                        where,
                        f"{p.consumer} stuck at {p.topic}[{p.partition}] offset {p.position} "
                        f"(high watermark {p.highwater}): {since}",
                    )
                )
    for worker, n in sorted(status.restarts.items()):
        if n > limits.max_restarts:
            problems.append(
                Problem(
                    f"worker:{worker}",
                    f"worker {worker} restarted {n} times in the last "
                    f"{limits.restart_window:.0f}s (> {limits.max_restarts}): a crash loop? "
                    f"see logs/{worker}.log",
                )
            )
    for consumer, n in sorted(status.dead_letters_by_consumer.items()):
        problems.append(
            Problem(
                f"dead-letters:{consumer}",
                f"{consumer}: {n} pending dead letter(s): see `referralnet dead-letters`, then "
                "`retry` or `discard` them",
            )
        )
    lost_topics: dict[str, list[LogLoss]] = {}
    for loss in status.log_losses:
        lost_topics.setdefault(loss.topic, []).append(loss)
    for topic, losses in sorted(lost_topics.items()):
        first = min(losses, key=lambda x: x.found_at)
        what = (
            f"holding another log than its position {first.stored} was read from"
            if first.highwater == REPLACED
            else f"ending at {first.highwater}, below its position {first.stored}"
        )
        problems.append(
            Problem(
                "broker",
                f"the broker lost its log of {topic}: {first.consumer} found "
                f"{topic}[{first.partition}] {what}, at {first.found_at:%Y-%m-%d %H:%M:%S} "
                f"({len(losses)} partition(s)/consumer(s)); what was on it before is not "
                "there: run `referralnet republish`",
            )
        )
    for where, n in sorted(status.refused.items()):
        problems.append(
            Problem(
                f"refused:{where}",
                f"{where}: {n} event(s) refused by the publishers as tampered, never sent "
                "(`referralnet verify --all` names them)",
            )
        )
    for consumer, held in sorted(status.held.items()):
        waited = (status.at - held.oldest_held_at).total_seconds() if held.oldest_held_at else 0
        if waited > limits.held_seconds:
            problems.append(
                Problem(  # like dead letters: the worker goes on, so its health is fine
                    f"held:{consumer}",
                    f"{consumer}: {held.count} event(s) of {held.streams} stream(s) held behind "
                    f"a missing version for {waited:.0f}s (`status --json`: held): the "
                    "version it waits for was dead-lettered (`referralnet dead-letters`) or "
                    "lost from the log (`referralnet republish`)",
                )
            )
    for c in status.consumers:
        where = f"consumer:{c.consumer}"
        if c.lag > limits.max_lag:
            problems.append(
                Problem(where, f"{c.consumer} lags {c.lag} events (> {limits.max_lag})")
            )
        elif c.lag and c.last_applied_at is not None:
            idle = (status.at - c.last_applied_at).total_seconds()
            if idle > limits.stuck_seconds:
                problems.append(
                    Problem(where, f"{c.consumer} lags {c.lag} events, idle for {idle:.0f}s")
                )
    return problems


async def collect(
    database_url: str,
    bootstrap_servers: str,
    topics: Topics,
    limits: Thresholds = Thresholds(),
    home: Path | None = None,
) -> SystemStatus:
    """Measure everything; never raises for an unreachable broker or database.

    ``home`` is where the supervisor records worker restarts (``REFERRALNET_HOME``).
    """
    status = SystemStatus(datetime.now(UTC), None, await log.broker_reachable(bootstrap_servers))
    try:
        conn: AsyncConnection[Any]
        async with await AsyncConnection.connect(
            database_url, autocommit=True, connect_timeout=3
        ) as conn:
            status.stores = await _stores(conn)
            status.refused = await refusal_counts(conn, [st.schema for st in STORES])
            status.log_losses = await log_losses(conn, topics)
            if status.broker_error is None:
                wanted = sorted(
                    {topics.referral_events, topics.dead_letters}
                    | {t for _, _, t in await consumers(conn, topics)}
                )
                status.missing_topics, status.misshapen_topics = await asyncio.to_thread(
                    _topic_shapes, bootstrap_servers, topics.layout(wanted)
                )
                status.consumers, status.partitions = await _consumers(
                    conn, bootstrap_servers, topics
                )
                if limits.recheck_seconds > 0 and any(
                    p.highwater > p.position for p in status.partitions
                ):
                    await asyncio.sleep(limits.recheck_seconds)  # the second reading
                    await _recheck(conn, topics, status.partitions)
            # From PostgreSQL, where dead letters are kept: a broker restart loses none.
            status.dead_letters_by_consumer = await pending_counts(conn)
            status.dead_letters = sum(status.dead_letters_by_consumer.values())
            for consumer, schema, _topic in await consumers(conn, topics):
                held = await held_summary(conn, schema)
                if held.count:
                    status.held[consumer] = held
            for c in status.consumers:
                c.dead_letters = status.dead_letters_by_consumer.get(c.consumer, 0)
    except psycopg.OperationalError as exc:
        status.database_error = str(exc).strip().splitlines()[0] if str(exc) else "unreachable"
    if home is not None:
        status.restarts = restarts_within(home, limits.restart_window)
    status.problems = _problems(status, limits)
    return status
