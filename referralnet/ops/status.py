"""The system's health in numbers: what ``referralnet status`` prints and ``/metrics`` serves.

Everything is read from the outside (PostgreSQL and the broker), not from the worker
processes, so it covers every worker whether it runs here or elsewhere: a consumer's
lag is its stored position against the partition's true high watermark, a relay's
backlog is its outbox, and a worker that stopped shows up as lag that does not move.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql

from bus.topics import Topics
from referralnet.lag import STORES, consumer_lags
from referralnet.ops import log
from referralnet.ops.dead_letters import pending_counts

SERVICE_OF_CONSUMER = {"routing": "routing", "distributor": "distributor", "outcomes": "outcomes"}


@dataclass(frozen=True)
class Thresholds:
    """When numbers become a problem."""

    max_lag: int = 1000
    stuck_seconds: float = 60.0


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


@dataclass(frozen=True)
class Problem:
    """Something unhealthy, and which part of the system it is about."""

    component: str
    message: str


SERVICE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "api": ("database",),
    "intake": ("database", "broker", "store:intake"),
    "routing": ("database", "broker", "store:routing", "consumer:routing"),
    "outcomes": ("database", "broker", "store:outcomes", "consumer:outcomes"),
    "distributor": ("database", "broker", "consumer:distributor"),
    "relay": ("database", "broker", "store:"),
    "views": ("database", "broker", "consumer:view."),
}
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
) -> list[ConsumerHealth]:
    by_consumer: dict[str, ConsumerHealth] = {}
    for lag in await consumer_lags(conn, bootstrap_servers, topics):
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
    return list(by_consumer.values())


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
) -> SystemStatus:
    """Measure everything; never raises for an unreachable broker or database."""
    status = SystemStatus(datetime.now(UTC), None, await log.broker_reachable(bootstrap_servers))
    try:
        conn: AsyncConnection[Any]
        async with await AsyncConnection.connect(
            database_url, autocommit=True, connect_timeout=3
        ) as conn:
            status.stores = await _stores(conn)
            if status.broker_error is None:
                status.consumers = await _consumers(conn, bootstrap_servers, topics)
            # From PostgreSQL, where dead letters are kept: a broker restart loses none.
            per_consumer = await pending_counts(conn)
            status.dead_letters = sum(per_consumer.values())
            for c in status.consumers:
                c.dead_letters = per_consumer.get(c.consumer, 0)
    except psycopg.OperationalError as exc:
        status.database_error = str(exc).strip().splitlines()[0] if str(exc) else "unreachable"
    status.problems = _problems(status, limits)
    return status
