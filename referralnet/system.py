"""A whole running Referral Network: broker, database, schemas, topics, workers, API.

Used by ``referralnet up``, ``referralnet demo`` and the end-to-end tests alike, so the
tests exercise exactly what users run.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import structlog
from psycopg import AsyncConnection

from bus.topics import Topics
from infra.embedded import EmbeddedBroker, EmbeddedPostgres, _sigterm_exits
from infra.processes import EmbeddedStartError
from referralnet.bootstrap import create_schemas, create_topics
from referralnet.services_table import WORKERS
from referralnet.settings import Settings
from referralnet.supervisor import Supervisor, supervised

log = structlog.get_logger(__name__)


@dataclass
class RunningSystem:
    """Handles on everything a running system consists of."""

    settings: Settings
    bootstrap_servers: str
    database_url: str
    topics: Topics
    supervisor: Supervisor
    broker: EmbeddedBroker | None
    database: EmbeddedPostgres | None
    startup_seconds: dict[str, float]

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    @property
    def local_database_url(self) -> str:
        """The URL for this machine's processes (the embedded server's Unix socket);
        ``database_url`` is the TCP address printed for tools."""
        return self.database.local_url() if self.database else self.database_url

    @property
    def env(self) -> dict[str, str]:
        return self.supervisor.env


def api_socket(host: str, port: int, *, any_port_if_taken: bool) -> socket.socket:
    """The API's listening socket, bound here and handed to the API process.

    Binding it before any worker starts makes the port ours at once: two stacks started
    at the same moment cannot both believe they have it (checking, then letting uvicorn
    bind later, was a race), and a restarted API process reuses the same socket. Port 0
    means any free port; ``any_port_if_taken`` takes one when ``port`` is in use.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        try:
            sock.bind((host, port))
        except OSError:
            if not any_port_if_taken:
                raise EmbeddedStartError(
                    f"the API port {host}:{port} is in use (another referralnet up?); "
                    "choose another with --port or REFERRALNET_API_PORT"
                ) from None
            sock.bind((host, 0))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


async def _org_ids(database_url: str) -> list[str]:
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT id FROM directory.organisations")
        return [r[0] for r in await cur.fetchall()]


@contextmanager
def running_system(
    settings: Settings,
    workers: Iterable[str] = WORKERS,
    pick_free_port: bool = False,
    any_port_if_taken: bool = False,
    scale: Mapping[str, int] | None = None,
) -> Iterator[RunningSystem]:
    """Start what the settings leave unset, prepare schemas and topics, run the workers
    (``scale``: instances per worker kind, ``supervisor.parse_scale``; default one each).

    The API listens on ``settings.api_port`` (any free port if ``pick_free_port``, or if
    it is taken and ``any_port_if_taken``); ``RunningSystem.base_url`` says where.
    """
    workers = tuple(workers)
    timings: dict[str, float] = {}
    with _sigterm_exits(), ExitStack() as stack:
        listener = None
        if "api" in workers:
            listener = api_socket(
                settings.api_host,
                0 if pick_free_port else settings.api_port,
                any_port_if_taken=any_port_if_taken,
            )
            stack.callback(listener.close)
            settings = replace(settings, api_port=listener.getsockname()[1])
        broker = database = None
        bootstrap = settings.kafka_bootstrap_servers
        if bootstrap is None:
            t = time.monotonic()
            broker = EmbeddedBroker(settings.home)
            stack.callback(broker.stop)
            bootstrap = broker.start()
            timings["broker"] = time.monotonic() - t
        database_url = settings.database_url
        if database_url is None:
            t = time.monotonic()
            database = EmbeddedPostgres(settings.home)
            stack.callback(database.stop)
            database_url = database.start()
            timings["database"] = time.monotonic() - t
        t = time.monotonic()
        topics = Topics(prefix=settings.topic_prefix)
        asyncio.run(create_schemas(database_url))
        create_topics(bootstrap, topics, asyncio.run(_org_ids(database_url)))
        timings["schemas_and_topics"] = time.monotonic() - t
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": database.local_url() if database else database_url,  # socket: cheaper
            "REFERRALNET_HOME": str(settings.home.absolute()),  # workers run elsewhere
            "REFERRALNET_API_HOST": settings.api_host,
            "REFERRALNET_API_PORT": str(settings.api_port),
            "REFERRALNET_TOPIC_PREFIX": settings.topic_prefix,
            "REFERRALNET_TIMEZONE": settings.timezone,  # one calendar for every process
        }
        if listener is not None:
            env["REFERRALNET_API_FD"] = str(listener.fileno())
        t = time.monotonic()
        supervisor = stack.enter_context(supervised(settings.home, env, workers, scale))
        system = RunningSystem(
            settings, bootstrap, database_url, topics, supervisor, broker, database, timings
        )
        if "api" in supervisor.names:
            # Every extra instance is another interpreter importing the whole stack on
            # the same cores while the API starts: give each some time.
            extra = len(supervisor.instances) - len(supervisor.names)
            supervisor.wait_api(system.base_url, timeout=60.0 + 10.0 * extra)
        timings["workers"] = time.monotonic() - t
        yield system
