"""The embedded stack: a Tansu broker and a PostgreSQL server for local runs and tests.

``running_stack`` starts only what the settings leave unset (DESIGN §6), so the same
code runs against Apache Kafka and a managed PostgreSQL when their addresses are given.
Children never outlive us: see ``infra.processes`` for how (stop on exit, Ctrl-C and
SIGTERM; PDEATHSIG on a hard crash; stale children of a crashed run killed on start).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from infra.postgres_server import EmbeddedPostgres
from infra.processes import EmbeddedStartError
from infra.tansu import EmbeddedBroker

if TYPE_CHECKING:
    from referralnet.settings import Settings

__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "EmbeddedStartError",
    "Endpoints",
    "running_stack",
]


@dataclass(frozen=True)
class Endpoints:
    """Where the bus and the store are, and whether we started them."""

    kafka_bootstrap_servers: str
    database_url: str
    embedded_broker: bool
    embedded_database: bool


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` so ``finally`` blocks stop the children gracefully.

    Only from the main thread and only if nobody installed a handler already (e.g.
    uvicorn). A second SIGTERM during shutdown kills us outright; PDEATHSIG then stops
    the children.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def running_stack(settings: Settings) -> Iterator[Endpoints]:
    """Start the embedded broker/database the settings leave unset; stop them on exit.

    Data lives under ``settings.home`` (``pgdata``, ``run``, ``logs``).
    """
    with _sigterm_exits(), ExitStack() as started:
        kafka = settings.kafka_bootstrap_servers
        if kafka is None:
            broker = EmbeddedBroker(settings.home)
            started.callback(broker.stop)
            kafka = broker.start()
        database_url = settings.database_url
        if database_url is None:
            database = EmbeddedPostgres(settings.home)
            started.callback(database.stop)
            database_url = database.start()
        yield Endpoints(
            kafka_bootstrap_servers=kafka,
            database_url=database_url,
            embedded_broker=settings.kafka_bootstrap_servers is None,
            embedded_database=settings.database_url is None,
        )
