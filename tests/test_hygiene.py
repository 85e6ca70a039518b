"""Process hygiene of `referralnet up`: run from any directory, write only under
REFERRALNET_HOME, stop without errors, and two stacks started together both come up.

The real console script in a directory holding an empty ``bus.py`` (it used to shadow
the project's ``bus`` package in every worker) and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from infra.processes import free_port
from referralnet import endpoints
from tests.conftest import alliance_yaml, referral_body, wait_until
from web.ops_guard import ops_token

pytestmark = pytest.mark.infra

REFERRALNET = Path(sys.executable).parent / "referralnet"
BAD_LOG_LINES = ("Traceback", "[ERROR]", "Unclosed", "is not a package", "error]")


@contextmanager
def referralnet_up(
    cwd: Path, home: Path, *, default_port: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`referralnet up` run from ``cwd`` (on a free port, or the default one)."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAFKA_", "DATABASE_", "REFERRALNET_API_PORT"))
    }
    env["REFERRALNET_HOME"] = str(home)
    proc = subprocess.Popen(
        [str(REFERRALNET), "up", *([] if default_port else ["--port", str(port)])],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def healthy(proc: subprocess.Popen[bytes], base: str, home: Path, timeout: float = 120.0) -> None:
    """Poll (with a deadline) until the API answers and routing reports healthy; the
    per-worker health needs the operators' token, which the stack creates at start."""
    deadline = time.monotonic() + timeout
    headers: dict[str, str] | None = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"referralnet up exited with {proc.returncode}"
        try:
            if headers is None:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    headers = {"Authorization": f"Bearer {ops_token(home)}"}
            elif (
                httpx.get(f"{base}/healthz/routing", headers=headers, timeout=2).status_code == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling with a deadline
    raise AssertionError(f"{base} did not become healthy in {timeout}s")


def one_referral_through(base: str, home: Path, env_home: dict[str, str]) -> None:
    """Register a small alliance and send one referral until it reaches its referrer's
    view, so that every worker has opened its connections and producers."""
    suffix = uuid.uuid4().hex[:8]
    directory = home.parent / f"alliance-{suffix}.yaml"
    directory.write_text(alliance_yaml(suffix))
    loaded = subprocess.run(
        [str(REFERRALNET), "directory", "load", str(directory), "--json"],
        env=env_home, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    token = json.loads(loaded.stdout)["tokens"][f"gp-{suffix}"]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as gp:
        created = gp.post("/referrals", json=referral_body(area=f"area-{suffix}"))
        assert created.status_code == 201, created.text
        rid = created.json()["referral_id"]
        wait_until(lambda: gp.get(f"/referrals/{rid}").status_code == 200, timeout=120)


def problems_in_logs(home: Path) -> list[str]:
    found = []
    for log in sorted((home / "logs").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(bad in line for bad in BAD_LOG_LINES):
                found.append(f"{log.name}: {line}")
    return found


def test_up_from_a_directory_with_bus_py_writes_only_under_home(tmp_path: Path) -> None:
    cwd, home = tmp_path / "cwd", tmp_path / "elsewhere" / "home"
    cwd.mkdir()
    (cwd / "bus.py").write_text("")
    with referralnet_up(cwd, home) as (proc, base):
        healthy(proc, base, home)
        # traffic first: the routing and distributor agents open their producers lazily,
        # and an unclosed one is what a clean stop used to log as an error
        env_home = {
            k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_"))
        }
        one_referral_through(base, home, env_home | {"REFERRALNET_HOME": str(home)})
    assert proc.returncode == 0
    assert sorted(p.name for p in cwd.iterdir()) == ["bus.py"]  # no faust data dirs here
    assert problems_in_logs(home) == []  # a clean stop logs no errors


def recorded_api(proc: subprocess.Popen[bytes], home: Path, timeout: float = 120.0) -> str:
    """The API address `referralnet up` recorded in its home once it was up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"referralnet up exited with {proc.returncode}"
        live = endpoints.running(home)
        if live is not None:
            return live.api
        time.sleep(0.2)  # polling with a deadline
    raise AssertionError(f"no endpoints recorded in {home} within {timeout}s")


def test_two_stacks_started_at_the_same_moment_both_come_up(tmp_path: Path) -> None:
    """Both on the default port setting: the second takes a free port (and says so),
    and neither mistakes the other's API for its own."""
    homes = [tmp_path / "home1", tmp_path / "home2"]
    with ExitStack() as stack:
        running = [
            stack.enter_context(referralnet_up(tmp_path, home, default_port=True)) for home in homes
        ]
        apis = [recorded_api(proc, home) for (proc, _), home in zip(running, homes, strict=True)]
        assert apis[0] != apis[1]
        for (proc, _), api, home in zip(running, apis, homes, strict=True):
            healthy(proc, api, home)
    for home in homes:
        assert problems_in_logs(home) == []


def test_a_chosen_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_"))}
        env["REFERRALNET_HOME"] = str(tmp_path / "home")
        done = subprocess.run(
            [str(REFERRALNET), "up", "--port", str(port)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    out = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1, out
    assert len(out) == 1 and f"127.0.0.1:{port} is in use" in out[0], out
