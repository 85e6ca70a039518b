"""Starts the system's processes, restarts any that die, stops them all on exit.

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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog

from infra.processes import listens_on, spawn
from referralnet.ops.restarts import record_restart

log = structlog.get_logger(__name__)

WORKERS = ("api", "relay", "routing", "distributor", "outcomes", "views")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    started: float
    restarts: int = 0
    kills: list[float] = field(default_factory=list)


class Supervisor:
    """Owns the worker processes of one running system."""

    def __init__(self, home: Path, env: dict[str, str], names: Iterable[str] = WORKERS) -> None:
        self.home = home
        self.env = env
        self.names = tuple(names)
        self.children: dict[str, Child] = {}
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._lock = threading.Lock()
        (home / "logs").mkdir(parents=True, exist_ok=True)
        self.workdir = home / "run" / "workers"
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        os.environ.update(self.env)  # spawn() inherits our environment
        output = (self.home / "logs" / f"{name}.log").open("ab")
        try:
            # -P: never put the caller's directory on the import path (an empty bus.py
            # there made every worker fail); cwd under the home: whatever a library
            # writes relative to it (faust's <app>-data) lands under REFERRALNET_HOME.
            api_fd = self.env.get("REFERRALNET_API_FD")  # the API's socket, bound by us
            return spawn(
                [sys.executable, "-P", "-m", "referralnet.workers", name],
                output=output,
                death_signal=signal.SIGTERM,
                run_as=None,
                cwd=self.workdir,
                pass_fds=(int(api_fd),) if name == "api" and api_fd else (),
            )
        finally:
            output.close()

    def start(self) -> None:
        for name in self.names:
            self.children[name] = Child(name, self._spawn(name), time.monotonic())
        log.info("workers_started", workers=list(self.names))

    def restart_dead(self) -> list[str]:
        """Restart every child that exited; return their names."""
        restarted = []
        with self._lock:
            children = list(self.children.values()) if not self._stopping.is_set() else []
        for child in children:
            code = child.proc.poll()
            if code is not None:
                log.warning("worker_exited", worker=child.name, code=code)
                child.proc = self._spawn(child.name)
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
    home: Path, env: dict[str, str], names: Iterable[str] = WORKERS
) -> Iterator[Supervisor]:
    """Run the workers for the duration of a ``with`` block."""
    sup = Supervisor(home, env, names)
    sup.start()
    sup.watch()
    try:
        yield sup
    finally:
        sup.stop()
