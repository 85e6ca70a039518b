"""What every benchmark shares: the embedded stack, fresh databases, results, progress.

Each benchmark gets a database of its own on one embedded PostgreSQL (dropped when it
is done) and, when it needs one, the embedded Tansu broker, so figures measured in the
same run share the machine's state and can be compared as ratios.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from infra.embedded import EmbeddedBroker, EmbeddedPostgres

console = Console(stderr=True)


@dataclass
class Row:
    """One line of the results table: a measured figure, its reference and the verdict."""

    benchmark: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return self.value / self.baseline


@dataclass
class Section:
    """What one benchmark measured, how, and at what size."""

    name: str
    command: str
    parameters: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for row, original in zip(data["rows"], self.rows, strict=True):
            row["ratio"] = original.ratio
        return data


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def progress(description: str) -> Progress:
    """A live progress bar on stderr for one long phase."""
    return Progress(
        TextColumn(f"[bold]{description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def machine() -> dict[str, Any]:
    """The machine and versions the figures were measured with."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("psycopg", "aiokafka", "faust-streaming", "fastapi", "uvicorn", "eventsourcing"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


class BenchStack:
    """One embedded PostgreSQL and one Tansu broker for a whole ``python -m bench`` run."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.database = EmbeddedPostgres(home)
        self.broker = EmbeddedBroker(home)
        self.bootstrap_servers = ""
        self.server_version = ""

    def start(self) -> None:
        url = self.database.start()
        self.bootstrap_servers = self.broker.start()
        with psycopg.connect(url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            self.server_version = str(row[0]) if row else "?"

    def stop(self) -> None:
        self.broker.stop()
        self.database.stop()

    @contextlib.contextmanager
    def fresh_database(self, label: str) -> Iterator[str]:
        """A new, empty database, dropped afterwards (benchmarks clean up after themselves)."""
        name = f"bench_{label}_{uuid.uuid4().hex[:6]}"
        url = self.database.create_database(name)
        try:
            yield url
        finally:
            with psycopg.connect(self.database.url("postgres"), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@contextlib.contextmanager
def bench_stack(home: Path | None = None) -> Iterator[BenchStack]:
    """Start the stack in a scratch directory; stop it and remove the directory after."""
    base = Path(tempfile.mkdtemp(prefix="referralnet-bench-")) if home is None else home
    stack = BenchStack(base)
    started = time.monotonic()
    try:
        stack.start()
        console.print(
            f"stack up in {time.monotonic() - started:.1f}s: PostgreSQL {stack.server_version}, "
            f"broker {stack.bootstrap_servers}"
        )
        yield stack
    finally:
        stack.stop()
        if home is None:
            shutil.rmtree(base, ignore_errors=True)
