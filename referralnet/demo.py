"""``make demo``: a demo alliance's simulated year, end to end, on the embedded stack."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
from psycopg import AsyncConnection
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from directory import loader
from directory import store as directory
from eventstore.anchor import AnchorPaths
from referralnet import journey, render
from referralnet.lag import wait_caught_up
from referralnet.ops import render as ops_render
from referralnet.ops.replay import ViewDiffers, replay_view
from referralnet.registration import register
from referralnet.settings import Settings
from referralnet.simulation import AllianceSimulation, SimulationStats
from referralnet.system import RunningSystem, running_system
from views import queries
from views.report import build_report
from views.schema import schema_name

DEMO_YEAR = 2025


def demo_directory() -> Any:
    text = resources.files("referralnet.data").joinpath("demo-alliance.yaml").read_text()
    return loader.parse(text, "demo-alliance.yaml")


async def _register(url: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        tokens = await register(conn, demo_directory())
        acts = [a.model_dump(mode="json") for a in await directory.activities(conn)]
    return tokens, acts


async def _simulate(
    system: RunningSystem,
    tokens: dict[str, str],
    acts: list[dict[str, Any]],
    referrals: int,
    concurrency: int,
    console: Console,
) -> SimulationStats:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        base_url=system.base_url, connector=connector, timeout=timeout
    ) as client:
        sim = AllianceSimulation(
            client, tokens, acts, referrals=referrals, year=DEMO_YEAR, concurrency=concurrency
        )
        with Progress(
            TextColumn("simulating a year"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("referrals"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("year", total=referrals)
            return await sim.run(lambda done: progress.update(task, completed=done))


async def _results(system: RunningSystem, first: str) -> tuple[Any, list[dict[str, Any]], Any, str]:
    async with await AsyncConnection.connect(system.local_database_url, autocommit=True) as conn:
        orgs = await directory.organisations(conn)
        commissioner = next(o.id for o in orgs if o.kind.value == "commissioner")
        report = await build_report(conn, schema_name(commissioner))
        rows = [
            {"org": o.id, "kind": o.kind.value, **await queries.totals(conn, o.id)} for o in orgs
        ]
        steps = await journey.timeline(conn, UUID(first))
        # against the signed checkpoints and seals too, as `journey --verify` does
        breaks = await journey.verify(conn, UUID(first), AnchorPaths.under(system.settings.home))
    return report, rows, (steps, breaks), commissioner


def run_demo(settings: Settings, *, referrals: int, concurrency: int, console: Console) -> int:
    """Run the demo; return the process exit code."""
    started = time.monotonic()
    home = settings.home / "demo"
    shutil.rmtree(home, ignore_errors=True)  # a fresh alliance every run
    settings = replace(settings, home=home)
    with running_system(settings, pick_free_port=True) as system:
        boot = time.monotonic() - started
        console.print(
            f"stack up in {boot:.1f}s "
            + ", ".join(f"{k} {v:.2f}s" for k, v in system.startup_seconds.items())
        )
        console.print(f"broker {system.bootstrap_servers}  database {system.database_url}")
        tokens, acts = asyncio.run(_register(system.local_database_url))
        console.print(f"registered {len(tokens)} partners and {len(acts)} activities")
        sim_start = time.monotonic()
        stats = asyncio.run(_simulate(system, tokens, acts, referrals, concurrency, console))
        sim_seconds = time.monotonic() - sim_start
        waited = asyncio.run(
            wait_caught_up(system.local_database_url, system.bootstrap_servers, system.topics)
        )
        console.print(
            f"{stats.referrals} referrals and {stats.requests} API requests in {sim_seconds:.1f}s "
            f"({stats.referrals / sim_seconds:.1f} referrals/s, {stats.requests / sim_seconds:.0f} "
            f"requests/s); every view caught up {waited:.1f}s later"
        )
        report, rows, (steps, breaks), commissioner = asyncio.run(
            _results(system, stats.first_referral or "")
        )
        render.report(console, report)
        render.partner_views(console, rows)
        render.journey(console, UUID(stats.first_referral or ""), steps, breaks)
        # The report's own source, rebuilt from the log beside the live view and compared
        # (`referralnet replay --all` does every partner's; it adds ~5 s per 1,000 referrals).
        try:
            replayed = asyncio.run(
                replay_view(
                    system.local_database_url, system.bootstrap_servers, system.topics, commissioner
                )
            )
        except ViewDiffers as differs:  # the live view was kept; say so and fail
            console.print(f"[red]replay {commissioner}: {differs}[/red]")
            return 1
        console.print(
            f"replay {commissioner}: {replayed.events} events rebuilt in {replayed.seconds:.1f}s"
        )
        ops_render.replays(console, [replayed])
    console.print(f"demo wall time {time.monotonic() - started:.1f}s")
    try_in_browser(console, home, tokens)
    return 1 if breaks or not replayed.matches else 0


DEMO_ROLES = (
    ("referrer (GP practice)", "gp-riverside"),
    ("link-worker service", "lw-north"),
    ("activity provider (walking groups)", "vg-walkers"),
    ("commissioner", "icb-commissioner"),
)
"""One demo organisation per role of the web app (``web.app``)."""


def try_in_browser(console: Console, home: Path, tokens: dict[str, str]) -> None:
    """The web app's address and a sign-in token per role; the demo's data stays in
    ``home`` for ``referralnet up`` to serve (docs/webapp.md)."""
    console.print(
        "\n[bold]Try it in your browser[/bold]: "
        f"REFERRALNET_HOME={home} .venv/bin/referralnet up, then open "
        "http://127.0.0.1:8000/app/ (the port `up` prints) and sign in with a token:"
    )
    for role, org in DEMO_ROLES:
        if org in tokens:
            console.print(f"  {role:<36} {org:<18} {tokens[org]}")
