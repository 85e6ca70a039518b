"""Where a CLI command finds the broker and database.

Order: the environment (``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL``); else a running
``referralnet up`` in the same ``REFERRALNET_HOME`` (it records its endpoints in
``run/endpoints.json``); else, for the database only, the embedded server started just
for this command (its data directory persists, the broker's log does not).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.postgres_server import EmbeddedPostgres
from referralnet.settings import Settings


class NoBroker(RuntimeError):
    """The command needs a broker and none is running or configured."""


@dataclass(frozen=True)
class Recorded:
    bootstrap_servers: str
    database_url: str
    api: str
    pid: int


def record_path(home: Path) -> Path:
    return home / "run" / "endpoints.json"


def record(home: Path, endpoints: Recorded) -> None:
    path = record_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(endpoints), indent=2))


def forget(home: Path) -> None:
    record_path(home).unlink(missing_ok=True)


def running(home: Path) -> Recorded | None:
    """The endpoints of a live ``referralnet up`` in ``home``, if there is one."""
    try:
        data = json.loads(record_path(home).read_text())
        found = Recorded(**data)
        os.kill(found.pid, 0)
    except (OSError, ValueError, TypeError):
        return None
    return found


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """A database URL for the duration of a command (starting the embedded one if need be)."""
    if settings.database_url:
        yield settings.database_url
        return
    live = running(settings.home)
    if live:
        yield live.database_url
        return
    server = EmbeddedPostgres(settings.home)
    try:
        yield server.start()
    finally:
        server.stop()


def bootstrap_servers(settings: Settings) -> str:
    """The broker's address; a command that needs the bus cannot start an empty one."""
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    live = running(settings.home)
    if live:
        return live.bootstrap_servers
    raise NoBroker(
        "no broker: run `referralnet up` in another terminal (same REFERRALNET_HOME) "
        "or set KAFKA_BOOTSTRAP_SERVERS"
    )
