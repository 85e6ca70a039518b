"""When the supervisor restarted each worker: written by it, read by ``status``.

The supervisor runs in the ``referralnet up`` process; ``status`` and ``/metrics`` run
elsewhere. So each restart is appended to ``<home>/logs/restarts.json`` (worker name →
unix times of its restarts in the last hour), replaced atomically so a reader never sees
half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

KEEP_SECONDS = 3600.0


def restarts_file(home: Path) -> Path:
    return home / "logs" / "restarts.json"


def read_restarts(home: Path) -> dict[str, list[float]]:
    """Every recorded restart time per worker (empty when none or unreadable)."""
    try:
        raw = json.loads(restarts_file(home).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): [float(t) for t in v] for k, v in raw.items() if isinstance(v, list)}


def record_restart(home: Path, worker: str, at: float | None = None) -> None:
    """Add one restart of ``worker`` (older than an hour are forgotten)."""
    now = time.time() if at is None else at
    known = read_restarts(home)
    known[worker] = [t for t in known.get(worker, []) if now - t < KEEP_SECONDS] + [now]
    path = restarts_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".restarts-")
    with os.fdopen(fd, "w") as out:
        json.dump(known, out)
    os.replace(tmp, path)


def restarts_within(home: Path, seconds: float, now: float | None = None) -> dict[str, int]:
    """How many times each worker was restarted in the last ``seconds``."""
    at = time.time() if now is None else now
    return {
        worker: n
        for worker, times in read_restarts(home).items()
        if (n := sum(1 for t in times if at - t <= seconds))
    }
