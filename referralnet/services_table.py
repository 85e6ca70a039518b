"""The composition root: one table of the services and one of the worker kinds.

Everything that used to repeat the list of services reads it from here: schema creation
(``referralnet.bootstrap``), the relay (which stores have an outbox), the supervisor and
``python -m referralnet.workers`` (which processes exist), and the operator's tools
(``lag``, ``status``, ``republish``: which consumers keep positions over the journey
log). Adding a service is a row in ``SERVICES`` (and a ``WorkerKind`` if it runs its own
process); nothing else lists them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from directory import store as directory
from eventstore.store import EventStore
from services.distributor import store as distributor
from services.intake import store as intake
from services.outcomes import store as outcomes
from services.privacy import store as privacy
from services.routing import store as routing

CreateSchema = Callable[[AsyncConnection[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Service:
    """One service of the journey.

    ``store``: its event store of record, whose outbox the relay publishes (None: it
    keeps no events of its own). ``consumer``: the name under which it keeps positions
    over ``referral-events`` in its own schema (None: it does not consume the log); the
    schema is the service's name. ``worker``: the worker kind that runs its consumer or,
    for intake, its API.
    """

    name: str
    create: CreateSchema
    worker: str
    store: EventStore | None = None
    consumer: str | None = None

    @property
    def schema(self) -> str:
        return self.name

    @property
    def workers(self) -> tuple[str, ...]:
        """Every worker kind this service needs running (its own, and the relay if it
        has an outbox)."""
        return (self.worker, "relay") if self.store is not None else (self.worker,)


SERVICES: tuple[Service, ...] = (
    # The person's keys and the audit of reads (issue 16): served by the API, no events
    # on the bus; before intake, whose people are sealed under those keys.
    Service("privacy", privacy.create, worker="api"),
    Service("intake", intake.create, worker="api", store=intake.STORE),
    Service("routing", routing.create, worker="routing", store=routing.STORE, consumer="routing"),
    Service(
        "outcomes", outcomes.create, worker="outcomes", store=outcomes.STORE, consumer="outcomes"
    ),
    Service("distributor", distributor.create, worker="distributor", consumer="distributor"),
)
"""In the order their schemas are created (routing's capacity ledger reads the directory,
created before all of them by ``bootstrap``)."""

STORES: tuple[EventStore, ...] = tuple(s.store for s in SERVICES if s.store is not None)
"""The stores of record, in the order the relay, ``republish`` and ``journey`` read them."""

BUS_CONSUMERS: tuple[Service, ...] = tuple(s for s in SERVICES if s.consumer is not None)
"""The services that consume ``referral-events`` and keep positions in their schema."""

CREATE_DIRECTORY: CreateSchema = directory.create


@dataclass(frozen=True)
class WorkerKind:
    """A kind of long-running process (``python -m referralnet.workers NAME``).

    ``sharing`` says how N instances of the kind share the work (docs/deploy.md, "Scaling
    out"); every kind can run as several instances.
    """

    name: str
    sharing: str


WORKER_KINDS: tuple[WorkerKind, ...] = (
    WorkerKind("api", "every process accepts on the one listening socket the supervisor bound"),
    WorkerKind("relay", "one leader per store outbox (a PostgreSQL advisory lock); others wait"),
    WorkerKind("routing", "faust consumer group over the partitions of referral-events"),
    WorkerKind("distributor", "faust consumer group over the partitions of referral-events"),
    WorkerKind("outcomes", "one leader (a PostgreSQL advisory lock); others are hot standbys"),
    WorkerKind("views", "partners shared out by rendezvous hashing over live members in PG"),
)

WORKERS: tuple[str, ...] = tuple(k.name for k in WORKER_KINDS)
"""Every worker kind, in start order."""


def service(name: str) -> Service:
    """The row for ``name`` (KeyError: no such service)."""
    for s in SERVICES:
        if s.name == name:
            return s
    raise KeyError(name)
