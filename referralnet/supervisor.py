"""Starts the system's processes, restarts any that die, stops them all on exit.

Each worker kind (``services_table.WORKER_KINDS``) runs as one process or, scaled out
(``referralnet up --scale views=2,routing=2``), as several instances: the first is named
after its kind (``views``), the others ``views-2``, ``views-3`` ... with a log each.

Every child is tied to this process (PR_SET_PDEATHSIG), so even a kill -9 of the
supervisor leaves no worker behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog

from infra.processes import listens_on, spawn
from referralnet.ops.restarts import record_restart
from referralnet.services_table import WORKERS as WORKERS  # re-exported: tests, bench

log = structlog.get_logger(__name__)

MAX_INSTANCES = 16
"""Per worker kind: more than this on one machine is a typo (and 2 cores' worth)."""


class BadScale(ValueError):
    """A ``--scale`` value that names no worker kind or no sensible count."""


def parse_scale(text: str) -> dict[str, int]:
    """``"views=2,routing=2"`` → ``{"views": 2, "routing": 2}`` (kinds not named: 1).

    Raises ``BadScale`` (one line saying what is wrong) for an unknown kind, a count
    that is not an integer from 1 to ``MAX_INSTANCES``, or a kind named twice.
    """
    scale: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, sep, count = part.partition("=")
        kind = kind.strip()
        if not sep or kind not in WORKERS:
            raise BadScale(
                f"--scale takes KIND=N[,KIND=N...] with KIND one of {', '.join(WORKERS)}; "
                f"got {part!r}"
            )
        if kind in scale:
            raise BadScale(f"--scale names {kind} twice")
        if not count.strip().isdigit() or not 1 <= int(count) <= MAX_INSTANCES:
            raise BadScale(f"--scale {kind}: the count must be 1 to {MAX_INSTANCES}, not {count!r}")
        scale[kind] = int(count)
    return scale


def instance_names(kinds: Iterable[str], scale: Mapping[str, int]) -> list[tuple[str, str]]:
    """(instance name, kind) for every process: ``views``, ``views-2``, ..."""
    return [
        (kind if i == 1 else f"{kind}-{i}", kind)
        for kind in kinds
        for i in range(1, scale.get(kind, 1) + 1)
    ]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    started: float
    restarts: int = 0
    kills: list[float] = field(default_factory=list)
    kind: str = ""
    retired: bool = False  # killed on purpose and not to be restarted (tests)


class Supervisor:
    """Owns the worker processes of one running system."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str],
        names: Iterable[str] = WORKERS,
        scale: Mapping[str, int] | None = None,
    ) -> None:
        self.home = home
        self.env = env
        self.names = tuple(names)
        self.instances = instance_names(self.names, scale or {})
        self.children: dict[str, Child] = {}
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._lock = threading.Lock()
        (home / "logs").mkdir(parents=True, exist_ok=True)
        self.workdir = home / "run" / "workers"
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, kind: str) -> subprocess.Popen[bytes]:
        os.environ.update(self.env)  # spawn() inherits our environment
        os.environ["REFERRALNET_INSTANCE"] = name  # in the worker's logs and membership
        output = (self.home / "logs" / f"{name}.log").open("ab")
        try:
            # -P: never put the caller's directory on the import path (an empty bus.py
            # there made every worker fail); cwd under the home: whatever a library
            # writes relative to it (faust's <app>-data) lands under REFERRALNET_HOME.
            api_fd = self.env.get("REFERRALNET_API_FD")  # the API's socket, bound by us
            return spawn(
                [sys.executable, "-P", "-m", "referralnet.workers", kind],
                output=output,
                death_signal=signal.SIGTERM,
                run_as=None,
                cwd=self.workdir,
                pass_fds=(int(api_fd),) if kind == "api" and api_fd else (),
            )
        finally:
            output.close()

    def start(self) -> None:
        for name, kind in self.instances:
            self.children[name] = Child(name, self._spawn(name, kind), time.monotonic(), kind=kind)
        log.info("workers_started", workers=[n for n, _ in self.instances])

    def restart_dead(self) -> list[str]:
        """Restart every child that exited; return their names."""
        restarted = []
        with self._lock:
            children = list(self.children.values()) if not self._stopping.is_set() else []
        for child in children:
            code = child.proc.poll()
            if code is not None and not child.retired:
                log.warning("worker_exited", worker=child.name, code=code)
                child.proc = self._spawn(child.name, child.kind)
                child.started = time.monotonic()
                child.restarts += 1
                record_restart(self.home, child.name)  # for `status`, in another process
                restarted.append(child.name)
        return restarted

    def watch(self, interval: float = 0.5) -> None:
        """Restart dead workers from a background thread until ``stop``."""

        def loop() -> None:
            while not self._stopping.wait(interval):
                for name in self.restart_dead():
                    log.warning("worker_restarted", worker=name)

        self._watchdog = threading.Thread(target=loop, name="supervisor-watchdog", daemon=True)
        self._watchdog.start()

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill one worker abruptly (fault injection); ``restart_dead`` brings it back."""
        child = self.children[name]
        proc = child.proc  # the watchdog may replace child.proc as soon as this one dies
        proc.send_signal(sig)
        proc.wait()
        child.kills.append(time.monotonic())

    def retire(self, name: str) -> None:
        """Kill one instance with SIGKILL for good: the watchdog leaves it dead, so the
        other instances of its kind must take over its work (fault injection)."""
        self.children[name].retired = True
        self.kill(name)

    def of_kind(self, kind: str) -> list[Child]:
        """The instances of ``kind``, first one first."""
        return [c for c in self.children.values() if c.kind == kind]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM everyone, wait, then SIGKILL stragglers; always reap."""
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join()
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        log.info("workers_stopped")

    def wait_api(self, base_url: str, timeout: float = 60.0) -> None:
        """Poll ``/healthz`` until *our* API process answers (or it died trying)."""
        deadline = time.monotonic() + timeout
        port = httpx.URL(base_url).port or 80
        while time.monotonic() < deadline:
            api = self.children.get("api")
            if api is not None and api.proc.poll() is not None:
                raise RuntimeError(f"the API process exited; see {self.home}/logs/api.log")
            try:
                answered = httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                answered = False
            # Ours, not another stack's API that happens to hold the port.
            if answered and api is not None and listens_on(api.proc.pid, port):
                return
            time.sleep(0.05)  # polling an HTTP endpoint with a deadline
        raise TimeoutError(f"the API did not answer at {base_url} within {timeout:.0f}s")


@contextmanager
def supervised(
    home: Path,
    env: dict[str, str],
    names: Iterable[str] = WORKERS,
    scale: Mapping[str, int] | None = None,
) -> Iterator[Supervisor]:
    """Run the workers (``scale``: instances per kind, default 1) during a ``with`` block."""
    sup = Supervisor(home, env, names, scale)
    sup.start()
    sup.watch()
    try:
        yield sup
    finally:
        sup.stop()
