"""Child processes whose lifetime is tied to ours (used by the embedded broker and database).

Every child is started so that it cannot outlive this process:

* normal exit, an unhandled exception, Ctrl-C and SIGTERM (via ``running_stack``) stop
  it gracefully (``stop()`` / ``atexit``), and we always ``wait()`` on it (PID 1 may not
  reap orphans);
* a hard death of this process (SIGKILL, OOM kill, segfault) is covered by Linux
  ``prctl(PR_SET_PDEATHSIG)``. That signal fires when the *thread* that forked the child
  exits, not the process, so all forks happen in one daemon thread that lives exactly as
  long as the process (``_Spawner``); callers may start children from any thread;
* each child runs in its own process group, so a terminal's Ctrl-C reaches only us and we
  stop children in order instead of racing them;
* ``<home>/run/<name>.pid`` records each child and ``<home>/run/<name>.lock`` (``flock``,
  released by the kernel when we die) tells a crashed previous owner from a live one: a
  recorded process is killed on start only if nobody holds the lock.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import structlog

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1
LOOPBACK = "127.0.0.1"
_PORT_ATTEMPTS = 3  # a free port can be taken between choosing and binding it


class EmbeddedStartError(RuntimeError):
    """An embedded broker or database did not become healthy; the message has its log tail."""


@dataclass(frozen=True)
class RunAs:
    """Unprivileged account a child switches to (PostgreSQL refuses to run as root)."""

    user: str
    uid: int
    gid: int


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now (the caller retries if it loses the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def listens_on(pid: int, port: int) -> bool:
    """True if process ``pid`` itself has a TCP socket listening on ``port``."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(
        conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        for conn in connections
    )


def is_alive(pid: int) -> bool:
    """True if ``pid`` runs; zombies count as dead (they hold no ports, files or memory)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Poll until a process that is not our child has exited; True if it did in time."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def terminate_foreign(pid: int, sig: signal.Signals, timeout: float) -> None:
    """Stop a process we cannot ``wait()`` on: ``sig`` first, SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if not wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 5.0)


def log_tail(path: Path, start: int = 0, max_lines: int = 40) -> str:
    """Last lines a child wrote to its log since byte ``start``, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    lines = text.splitlines()[-max_lines:]
    return "\n".join(lines) if lines else f"(log {path} is empty)"


def ensure_traversable(path: Path) -> None:
    """Add o+x to ``path``'s ancestors that lack it, so an unprivileged child can reach it.

    Only the traverse bit is added (never read), and only where missing.
    """
    for parent in path.absolute().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


class _Spawner:
    """A daemon thread that does every fork, so PDEATHSIG means "this process died"."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="embedded-spawner", daemon=True
                )
                self._thread.start()
        result: Future[Any] = Future()
        self._jobs.put((fn, result))
        return result.result()

    def _loop(self) -> None:
        while True:
            fn, result = self._jobs.get()
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)


_SPAWNER = _Spawner()
_LIBC: Any = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _tie_to_parent(death_signal: signal.Signals, parent_pid: int) -> Callable[[], None]:
    """``preexec_fn`` run in the child after the uid switch (which would clear PDEATHSIG)."""

    def preexec() -> None:
        if _LIBC is not None and _LIBC.prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # parent died before prctl took effect
            os._exit(1)

    return preexec


def run_tied(
    argv: Sequence[str],
    *,
    output: IO[bytes],
    run_as: RunAs | None,
    cwd: Path | None = None,
    timeout: float,
) -> int:
    """Run a short helper (initdb) to completion, tied to our lifetime like a server."""
    proc = spawn(argv, output=output, death_signal=signal.SIGTERM, run_as=run_as, cwd=cwd)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def spawn(
    argv: Sequence[str],
    *,
    output: IO[bytes],
    death_signal: signal.Signals,
    run_as: RunAs | None,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, output to ``output``, dying with us;
    ``pass_fds`` stay open in the child (the API's listening socket)."""
    preexec = _tie_to_parent(death_signal, os.getpid())

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            process_group=0,
            preexec_fn=preexec,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
            pass_fds=tuple(pass_fds),
        )

    proc: subprocess.Popen[bytes] = _SPAWNER.call(start)
    return proc


class ManagedProcess:
    """One long-running server child (broker or postmaster): lock, pid file, start, stop."""

    def __init__(
        self,
        name: str,
        home: Path,
        *,
        matches: Callable[[psutil.Process], bool],
        death_signal: signal.Signals,
        stop_signal: signal.Signals,
        stop_timeout: float,
    ) -> None:
        self.name = name
        self.run_dir = home / "run"
        self.log_path = home / "logs" / f"{name}.log"
        self.matches = matches
        self.death_signal = death_signal
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_start = 0
        self._lock_fd: int | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(
        self,
        argv_for: Callable[[int], Sequence[str]],
        *,
        port: int | None,
        deadline: float,
        run_as: RunAs | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Launch on ``port`` (or a free one) and return the port once the child listens.

        A port chosen by ``free_port`` can be taken before the child binds it; the child
        then exits and we try another. Stops the child and raises EmbeddedStartError with
        the log tail on failure.
        """
        self._end_child()  # one that crashed since its start, if any
        self.claim()
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                chosen = port if port is not None else free_port()
                self._launch(argv_for(chosen), run_as=run_as, cwd=cwd)
                if self._wait_listening(chosen, deadline):
                    return chosen
                code, tail = self.exited(), self.tail()
                self._end_child()
                if port is not None or attempt == _PORT_ATTEMPTS:
                    raise EmbeddedStartError(
                        f"{self.name} exited ({code}) instead of listening on "
                        f"{LOOPBACK}:{chosen}; log {self.log_path}:\n{tail}"
                    )
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def exited(self) -> int | None:
        """Exit code if the child has ended (reaping it), else None."""
        return None if self.proc is None else self.proc.poll()

    def tail(self) -> str:
        """What the current child wrote to its log, for error messages."""
        return log_tail(self.log_path, self.log_start)

    def stop(self) -> None:
        """Stop and reap the child and give up the home's lock. Safe to call twice."""
        try:
            self._end_child()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def claim(self) -> None:
        """Take the home's lock for this child, then kill a leftover of a crashed owner.

        Idempotent; ``start`` calls it, callers that prepare files first (initdb) call it
        before that. Raises EmbeddedStartError if another live process owns the home.
        """
        if self._lock_fd is not None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / f"{self.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedStartError(
                f"another process already runs the embedded {self.name} of {self.run_dir.parent}"
            ) from None
        self._lock_fd = fd
        try:
            record = json.loads(self.pid_file.read_text())
            proc = psutil.Process(int(record["pid"]))
            same = abs(proc.create_time() - float(record["create_time"])) < 0.05
            if same and is_alive(proc.pid) and self.matches(proc):
                log.warning("killing leftover process", name=self.name, pid=proc.pid)
                terminate_foreign(proc.pid, self.stop_signal, self.stop_timeout)
        except (OSError, ValueError, KeyError, psutil.Error):
            pass  # no record, unreadable record, or the process is gone
        self.pid_file.unlink(missing_ok=True)

    def _launch(self, argv: Sequence[str], *, run_as: RunAs | None, cwd: Path | None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as output:
            self.log_start = output.tell()
            self.proc = spawn(
                argv, output=output, death_signal=self.death_signal, run_as=run_as, cwd=cwd
            )
        _LIVE[id(self)] = self
        record = {
            "pid": self.proc.pid,
            "create_time": psutil.Process(self.proc.pid).create_time(),
            "argv": list(argv),
        }
        self.pid_file.write_text(json.dumps(record))

    def _wait_listening(self, port: int, deadline: float) -> bool:
        """Poll until the child itself listens on ``port``; False if it exits first.

        Checking the child's own sockets (not just "something accepts") matters: if we
        lost the port race, the listener there belongs to someone else.
        """
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if listens_on(self.proc.pid, port):
                return True
            time.sleep(0.005)
        raise EmbeddedStartError(
            f"{self.name} did not listen on {LOOPBACK}:{port} in time; "
            f"log {self.log_path}:\n{self.tail()}"
        )

    def _end_child(self) -> None:
        """Signal, wait, escalate to SIGKILL; always reap; forget the pid file."""
        proc, self.proc = self.proc, None
        _LIVE.pop(id(self), None)
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(self.stop_signal)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    log.warning("child ignored stop signal", name=self.name, pid=proc.pid)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            self.pid_file.unlink(missing_ok=True)


_LIVE: dict[int, ManagedProcess] = {}


def _forget_in_forked_child() -> None:
    """A fork of us (not exec) owns none of our children and has no spawner thread."""
    global _SPAWNER
    _SPAWNER = _Spawner()
    for child in _LIVE.values():
        child.proc = None
        if child._lock_fd is not None:
            os.close(child._lock_fd)  # the parent's copy keeps the lock
            child._lock_fd = None
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_in_forked_child)


@atexit.register
def _stop_all_at_exit() -> None:
    """Last resort for children whose owner never called stop (newest first)."""
    for child in reversed(list(_LIVE.values())):
        child.stop()
