"""Entry points of the long-running processes: ``python -m referralnet.workers NAME``.

One per worker kind of ``services_table.WORKER_KINDS``. Each process reads its endpoints
from the environment (the supervisor sets them) and stops cleanly on SIGTERM or SIGINT.
Being separate processes, any one of them can be killed -9 and restarted without the
others noticing more than a pause; and any kind can run as several instances, sharing
its work as its ``WorkerKind.sharing`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
import uvicorn
import uvloop
from aiokafka import AIOKafkaProducer

from bus.membership import leader
from bus.relay import OutboxRelay
from bus.runner import TrackedRunner
from bus.topics import Topics
from eventstore.pool import connection_pool
from infra.kafka_security import client_kwargs
from infra.logging import configure_logging
from referralnet.gateway import create_app
from referralnet.services_table import STORES, WORKERS
from referralnet.settings import Settings, check_or_exit
from services.outcomes.projection import CaseProjection
from services.outcomes.sla import flag_overdue
from views import worker as view_worker

log = structlog.get_logger(__name__)


def _endpoints() -> tuple[Settings, str, str, Topics]:
    settings = Settings.from_env()
    if not settings.kafka_bootstrap_servers or not settings.database_url:
        sys.exit("workers need KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL (the supervisor sets them)")
    topics = Topics(prefix=settings.topic_prefix)
    return settings, settings.kafka_bootstrap_servers, settings.database_url, topics


def _instance() -> str:
    """This process's name in the supervisor (``views-2``), or "" when run by hand."""
    return Settings.from_env().instance


async def _until_signalled(body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await body(stop)


async def relay(stop: asyncio.Event) -> None:
    """Relay the outboxes of the service stores onto ``referral-events``, and checkpoint
    the stores' chains into the signed anchor beside it (tamper evidence).

    Several relay instances: each store's outbox is relayed by whichever instance holds
    its advisory lock (``OutboxRelay.run``), the checkpoints by the holder of another, so
    one instance at a time publishes a store's events, in outbox order."""
    settings, bootstrap, database_url, topics = _endpoints()
    # linger_ms=20: the three relays' sends share one record batch per partition. The
    # embedded broker's fetch cost grows with the number of batches a partition holds,
    # so batches of one event made it ~2.5x slower over a 2,000-referral year.
    producer = AIOKafkaProducer(
        **client_kwargs("aiokafka"),
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        request_timeout_ms=10_000,
    )
    await producer.start()
    try:
        relays = [
            OutboxRelay(store, database_url, producer, topics.referral_events, instance=_instance())
            for store in STORES
        ]
        await asyncio.gather(*(r.run(stop) for r in relays), _checkpoints(settings, stop))
    finally:
        await producer.stop()


async def _checkpoints(settings: Settings, stop: asyncio.Event) -> None:
    """Sign the stores' chain heads every REFERRALNET_CHECKPOINT_SECONDS (0: never)."""
    from referralnet.ops.verify import checkpoint_periodically

    interval = settings.checkpoint_seconds
    if interval > 0 and settings.database_url:
        async with leader(settings.database_url, "relay:checkpoints", stop, _instance()) as leading:
            if leading:
                await checkpoint_periodically(settings.database_url, settings.home, stop, interval)


async def outcomes(stop: asyncio.Event) -> None:
    """Keep ``outcomes.cases`` in step with routing's events.

    Several instances: one leads (an advisory lock), the others wait as hot standbys
    and take over within a second of its death, from the positions it stored."""
    _, bootstrap, database_url, topics = _endpoints()
    async with leader(database_url, "outcomes:consumer", stop, _instance()) as leading:
        if leading:
            await _outcomes(bootstrap, database_url, topics, stop)


async def _outcomes(bootstrap: str, database_url: str, topics: Topics, stop: asyncio.Event) -> None:
    projection = CaseProjection()

    async def projections() -> dict[str, CaseProjection]:
        return {topics.referral_events: projection}

    async with connection_pool(database_url, min_size=1, max_size=2) as pool:
        runner = TrackedRunner(
            bootstrap_servers=bootstrap,
            pool=pool,
            projections=projections,
            partitions_of=topics.partitions_of,
            dead_letter_topic=topics.dead_letters,
            client_id="referralnet-outcomes",
        )
        await asyncio.gather(runner.run(stop), _sla_timer(pool, stop))


async def _sla_timer(pool: Any, stop: asyncio.Event) -> None:
    """Flag referrals waiting too long for first contact, every few seconds."""
    interval = Settings.from_env().sla_check_seconds
    while not stop.is_set():
        async with pool.connection() as conn:
            flagged = await flag_overdue(conn, datetime.now(UTC))
        if flagged:
            log.info("first_contact_overdue_flagged", referrals=flagged)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def views(stop: asyncio.Event) -> None:
    """This instance's share of the partners' view consumers (``views.worker``)."""
    _, bootstrap, database_url, topics = _endpoints()
    await view_worker.run(bootstrap, database_url, topics, stop)


def api() -> None:
    """Serve the HTTP API (uvicorn handles SIGTERM/SIGINT)."""
    settings, _, database_url, _ = _endpoints()
    app = create_app(database_url, settings.home)
    # The supervisor binds the socket and passes it (REFERRALNET_API_FD), so the port is
    # the stack's from before any worker starts; on its own, the API binds it itself.
    fd = settings.api_fd
    where: dict[str, Any] = (
        {"fd": fd} if fd is not None else {"host": settings.api_host, "port": settings.api_port}
    )
    uvicorn.run(app, log_level="warning", access_log=False, **where)


def routing() -> None:
    from services.routing.app import main

    _, bootstrap, database_url, topics = _endpoints()
    main(bootstrap, database_url, topics)


def distributor() -> None:
    from services.distributor.app import main

    settings, bootstrap, database_url, topics = _endpoints()
    main(bootstrap, database_url, topics, settings.home)


ASYNC_WORKERS: dict[str, Callable[[asyncio.Event], Awaitable[None]]] = {
    "relay": relay,
    "outcomes": outcomes,
    "views": views,
}
SYNC_WORKERS: dict[str, Callable[[], None]] = {
    "api": api,
    "routing": routing,
    "distributor": distributor,
}
NAMES = WORKERS
assert set(NAMES) == {*SYNC_WORKERS, *ASYNC_WORKERS}, "services_table.WORKERS and entry points"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in NAMES:
        print(f"usage: python -m referralnet.workers {{{'|'.join(NAMES)}}}", file=sys.stderr)
        sys.exit(2)
    check_or_exit("referralnet.workers")  # a bad variable: one line, exit 2, no traceback
    configure_logging()
    name = args[0]
    if name in SYNC_WORKERS:
        SYNC_WORKERS[name]()
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_until_signalled(ASYNC_WORKERS[name]))


if __name__ == "__main__":
    main()
