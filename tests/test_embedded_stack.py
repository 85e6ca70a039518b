"""The embedded Tansu broker and PostgreSQL: start, health, stop, restart, no orphans."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from infra import processes
from infra.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    EmbeddedStartError,
    Endpoints,
    running_stack,
)
from infra.tansu import TANSU_BIN
from referralnet.settings import Settings

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parents[1]
_PR_SET_CHILD_SUBREAPER = 36

# Starts the stack, prints its endpoints and blocks until signalled or killed. SIGINT is
# ignored in processes started in the background by a shell; the script acts as if it
# ran in a terminal, where Ctrl-C raises KeyboardInterrupt.
STACK_SCRIPT = """
import dataclasses, json, signal, sys
from pathlib import Path
from infra.embedded import running_stack
from referralnet.settings import Settings
signal.signal(signal.SIGINT, signal.default_int_handler)
with running_stack(Settings(home=Path(sys.argv[1]))) as endpoints:
    print("ENDPOINTS", json.dumps(dataclasses.asdict(endpoints)), flush=True)
    sys.stdin.read()
"""


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/", 1)[0])


def can_bind(port: int) -> bool:
    """Whether a server could listen on the port now (servers set SO_REUSEADDR too,
    so lingering TIME_WAIT connections do not count as "taken")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_BEFORE: set[int] = set()
"""Descendants alive before the current test (e.g. a session-wide system fixture)."""


@pytest.fixture(autouse=True)
def _ignore_older_children() -> None:
    _BEFORE.clear()
    _BEFORE.update(c.pid for c in psutil.Process().children(recursive=True))


def our_children(name: str, recursive: bool = True) -> list[psutil.Process]:
    """Live (non-zombie) descendants called ``name`` that this test started."""
    found = []
    for child in psutil.Process().children(recursive=recursive):
        try:
            if child.pid in _BEFORE:
                continue
            if child.name() == name and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def round_trip(servers: str, topic: str, values: list[bytes]) -> list[bytes]:
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=servers, acks="all")
    try:
        for value in values:
            producer.send(topic, value).get(timeout=10)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, fetch_max_wait_ms=50)
    got: list[bytes] = []
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        deadline = time.monotonic() + 10
        while len(got) < len(values) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                got.extend(record.value for record in records)
    finally:
        consumer.close()
    return got


def topics(servers: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def select_one(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker(tmp_path / "home")
    yield embedded
    embedded.stop()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    embedded = EmbeddedPostgres(tmp_path / "home")
    yield embedded
    embedded.stop()


def test_broker_starts_round_trips_and_stop_frees_port(broker: EmbeddedBroker) -> None:
    servers = broker.start()
    port = port_of(servers)
    assert servers == f"127.0.0.1:{port}" == broker.bootstrap_servers
    assert not can_bind(port)
    (tansu,) = our_children("tansu")

    values = [b"one", b"two", b"three"]
    assert round_trip(servers, "roundtrip", values) == values

    broker.stop()
    assert not psutil.pid_exists(tansu.pid)  # reaped, not a zombie
    assert our_children("tansu") == []
    assert can_bind(port)
    assert not (broker.home / "run" / "tansu.pid").exists()
    with pytest.raises(RuntimeError):
        _ = broker.bootstrap_servers


def test_broker_restart_keeps_port_and_loses_topics(broker: EmbeddedBroker) -> None:
    servers = broker.start()
    assert round_trip(servers, "before-restart", [b"x"]) == [b"x"]
    assert "before-restart" in topics(servers)

    assert broker.restart() == servers
    assert "before-restart" not in topics(servers)
    assert round_trip(servers, "after-restart", [b"y"]) == [b"y"]
    assert len(our_children("tansu")) == 1


def test_second_owner_of_a_home_is_refused(broker: EmbeddedBroker) -> None:
    broker.start()
    with pytest.raises(EmbeddedStartError, match="already runs"):
        EmbeddedBroker(broker.home).start()
    assert len(our_children("tansu")) == 1


def test_lost_port_race_retries_on_another_port(
    broker: EmbeddedBroker, database: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If someone binds the chosen port first, the child exits and another port is used."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        real_free_port = processes.free_port
        for embedded in (broker, database):
            offers = iter([taken_port])  # the first offer loses the race, then real ones

            def offer(offers: Iterator[int] = offers) -> int:
                return next(offers, 0) or real_free_port()

            monkeypatch.setattr(processes, "free_port", offer)
            assert port_of(embedded.start()) != taken_port
    assert "Address in use" in (broker.home / "logs" / "tansu.log").read_text()
    assert "could not bind" in (database.home / "logs" / "postgres.log").read_text()


def test_restart_on_a_taken_port_fails_with_the_log_tail(broker: EmbeddedBroker) -> None:
    port = port_of(broker.start())
    broker.stop()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(EmbeddedStartError, match=r"(?s)instead of listening.*Address in use"):
            broker.start()
    assert our_children("tansu") == []


def test_leftover_broker_of_a_crashed_run_is_killed(broker: EmbeddedBroker) -> None:
    """A child recorded in run/tansu.pid whose owner is gone is killed on start."""
    port = 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    leftover = subprocess.Popen(
        [str(TANSU_BIN), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run = broker.home / "run"
        run.mkdir(parents=True)
        record = {"pid": leftover.pid, "create_time": psutil.Process(leftover.pid).create_time()}
        (run / "tansu.pid").write_text(json.dumps(record))

        broker.start()
        assert leftover.wait(timeout=5) is not None
    finally:
        leftover.kill()
        leftover.wait()


def test_postgres_starts_selects_restarts_and_stop_frees_port(
    database: EmbeddedPostgres,
) -> None:
    url = database.start()
    port = port_of(url)
    assert url == f"postgresql://postgres@127.0.0.1:{port}/referralnet"
    assert select_one(url) == 1
    assert not can_bind(port)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('survives restart')")

    local = database.local_url()  # the workers' address: the Unix socket, same server
    with psycopg.connect(local) as conn:
        assert conn.info.host == str(database.socket_dir)
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)  # not TCP
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)

    fresh = database.create_database("fresh_db")
    assert fresh.endswith(f":{port}/fresh_db")
    assert select_one(fresh) == 1
    assert database.create_database("fresh_db") == fresh  # idempotent

    (postmaster,) = our_children("postgres", recursive=False)
    database.stop()
    assert not psutil.pid_exists(postmaster.pid)
    assert our_children("postgres") == []
    assert can_bind(port)

    # A postmaster.pid naming a dead process (postgres killed -9) must not block a start.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (database.pgdata / "postmaster.pid").write_text(f"{dead.pid}\n{database.pgdata}\n")

    assert database.start() == url
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT value FROM kept").fetchall() == [("survives restart",)]


def test_running_stack_starts_nothing_when_endpoints_are_given(tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap_servers="kafka.example:9092",
        database_url="postgresql://app@db.example/app",
        home=tmp_path / "home",
    )
    with running_stack(settings) as endpoints:
        assert endpoints == Endpoints(
            "kafka.example:9092", "postgresql://app@db.example/app", False, False
        )
        assert our_children("tansu") == our_children("postgres") == []
    assert not settings.home.exists()


def test_running_stack_serves_both_and_stops_them(tmp_path: Path) -> None:
    with running_stack(Settings(home=tmp_path / "home")) as endpoints:
        assert endpoints.embedded_broker and endpoints.embedded_database
        topic = f"t-{uuid.uuid4().hex}"
        assert round_trip(endpoints.kafka_bootstrap_servers, topic, [b"v"]) == [b"v"]
        assert select_one(endpoints.database_url) == 1
    assert our_children("tansu") == our_children("postgres") == []
    assert can_bind(port_of(endpoints.kafka_bootstrap_servers))
    assert can_bind(port_of(endpoints.database_url))


def start_stack_process(home: Path) -> tuple[subprocess.Popen[str], Endpoints, list[int]]:
    """Run the stack in a child Python; return it, its endpoints and its descendants."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STACK_SCRIPT, str(home)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # structlog's default output shares stdout
        if line.startswith("ENDPOINTS "):
            break
    else:
        pytest.fail(f"stack process exited with {proc.wait()}")
    endpoints = Endpoints(**json.loads(line.removeprefix("ENDPOINTS ")))
    descendants: list[int] = []
    names: set[str] = set()
    for child in psutil.Process(proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # postgres forks short-lived helpers
            names.add(child.name())
            descendants.append(child.pid)
    assert {"tansu", "postgres"} <= names
    return proc, endpoints, descendants


def all_gone(pids: list[int]) -> bool:
    """True once none of ``pids`` runs; reaps those that were re-parented to us."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return not any(psutil.pid_exists(pid) for pid in pids)


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Adopt orphaned grandchildren, so we can reap them (PID 1 here does not)."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_stack_process_leaves_nothing_behind(
    tmp_path: Path, subreaper: None, how: signal.Signals
) -> None:
    """kill -9 (PDEATHSIG), SIGTERM and Ctrl-C of the owner: no tansu/postgres, ports free."""
    proc, endpoints, descendants = start_stack_process(tmp_path / "home")
    proc.send_signal(how)
    code = proc.wait(timeout=20)
    assert code == {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: -2}[how]

    wait_until(lambda: all_gone(descendants), 10.0, "tansu and postgres to exit")
    assert can_bind(port_of(endpoints.kafka_bootstrap_servers))
    assert can_bind(port_of(endpoints.database_url))
    if how is not signal.SIGKILL:
        assert not list((tmp_path / "home" / "run").glob("*.pid"))
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()  # clean shutdown

    with running_stack(Settings(home=tmp_path / "home")) as again:  # the home is reusable
        assert select_one(again.database_url) == 1
