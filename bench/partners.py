"""Partners at regional scale (issue 17): ``python -m bench.partners [--partners 2000]``.

On one embedded broker and PostgreSQL: registers ``--partners`` organisations (GP
practices, link-worker services one per area, one commissioner), each with its topic
and its view schema; starts the whole system with ``--views`` view-worker instances (and
one of every other kind); then offers a burst of referrals, each from a different GP
practice, through the API. Prints, one ``name: value`` a line:

- registration: directory + view schemas, then the partner topics (seconds);
- start-up: workers started until the API answers, and until a referral from the last
  partner registered is in its own view (every worker, its consumers assigned);
- idle cost of hosting every partner's consumer: CPU of the views instances and the
  broker over ``--idle`` seconds with nothing flowing;
- memory (RSS) per view-worker instance, after start-up and at its peak in the burst;
- the burst: referrals posted and how long, the largest total lag seen right after it,
  and how long until every consumer (the partners' views included) has caught up;
- one ``status``-style lag reading over every consumer (seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import psutil
import psycopg
from psycopg import sql

from bench.common import bench_stack, console
from bus.membership import owner
from bus.runner import positions_of
from bus.topics import Topics
from bus.tracking import Projection
from directory.model import DirectoryFile, LinkWorkerCapacity, Organisation, OrgKind
from referralnet.bootstrap import create_schemas, create_topics
from referralnet.lag import consumer_lags, highwaters, outbox_backlog
from referralnet.registration import register
from referralnet.services_table import BUS_CONSUMERS
from referralnet.settings import Settings
from referralnet.system import RunningSystem, running_system
from schemas.events import Need
from views.projection import ViewProjection
from views.schema import schema_name

AREAS_PER_LINK_WORKER_SERVICE = 1
PARTNERS_PER_AREA = 50
REFERRED_AT = "2026-01-05T10:00:00Z"


def directory(partners: int) -> DirectoryFile:
    """``partners`` organisations: one commissioner, a link-worker service per area of
    ``PARTNERS_PER_AREA`` partners, GP practices for the rest."""
    areas = max(1, partners // PARTNERS_PER_AREA)
    orgs = [
        Organisation(
            id="icb-region",
            name="Regional commissioner",
            kind=OrgKind("commissioner"),
            areas=[f"area-{a}" for a in range(areas)],
        )
    ]
    for a in range(areas):
        orgs.append(
            Organisation(
                id=f"lw-{a}",
                name=f"Link workers {a}",
                kind=OrgKind("link-worker-service"),
                areas=[f"area-{a}"],
                link_worker_service=LinkWorkerCapacity(
                    needs=[Need("social-connection")], link_workers=100, caseload_per_worker=200
                ),
            )
        )
    for g in range(partners - len(orgs)):
        orgs.append(
            Organisation(
                id=f"gp-{g}",
                name=f"Practice {g}",
                kind=OrgKind("gp-practice"),
                areas=[f"area-{g % areas}"],
            )
        )
    return DirectoryFile(alliance="Bench region", organisations=orgs)


async def _register(url: str, parsed: DirectoryFile) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await register(conn, parsed)


def _referral(area: str) -> dict[str, Any]:
    return {
        "person": {"name": "Bench Person", "date_of_birth": "1980-01-01"},
        "needs": ["social-connection"],
        "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": True},
        "area": area,
        "urgency": "routine",
        "referred_at": REFERRED_AT,
    }


def _post(base_url: str, token: str, area: str) -> str:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        r = client.post(
            "/referrals", json=_referral(area), headers={"Authorization": f"Bearer {token}"}
        )
    r.raise_for_status()
    return str(r.json()["referral_id"])


def _in_view(url: str, org: str, referral_id: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f'SELECT 1 FROM "{schema_name(org)}".referrals WHERE referral_id = %s', (referral_id,)
        ).fetchone()
    return row is not None


def _poll(check: Any, timeout: float) -> float:
    """Seconds until ``check()`` is true (polling with a deadline)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - started


async def total_lag(
    url: str, bootstrap: str, topics: Topics, org_ids: list[str]
) -> tuple[int, int, float]:
    """(events behind over every consumer, outbox backlog, seconds the reading took).

    Positions are read ``POSITIONS_PER_QUERY`` view schemas per query (as the views
    runner does), high watermarks from fetch responses (``referralnet.lag.highwaters``).
    """
    started = time.monotonic()
    wanted: dict[str, Projection] = {
        topics.org(o): ViewProjection(o, schema_name(o)) for o in org_ids
    }
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        backlog = sum((await outbox_backlog(conn)).values())
        positions = await positions_of(conn, wanted)
        for s in BUS_CONSUMERS:
            cur = await conn.execute(
                sql.SQL("SELECT topic, partition, next_offset FROM {}.positions "
                        "WHERE consumer = %s").format(sql.Identifier(s.schema)),
                (s.consumer,),
            )  # fmt: skip
            positions[f"{s.name}:"] = {(t, p): o for t, p, o in await cur.fetchall()}
    hw = await highwaters(bootstrap, [topics.referral_events, *wanted])
    behind = 0
    for key, stored in positions.items():
        topic = topics.referral_events if key.endswith(":") else key
        for (t, p), high in hw.items():
            if t == topic:
                behind += max(0, high - stored.get((t, p), 0))
    return behind, backlog, time.monotonic() - started


def takeover(
    system: RunningSystem,
    url: str,
    parsed: DirectoryFile,
    tokens: dict[str, str],
    timeout: float,
) -> float:
    """Seconds from killing the last views instance (SIGKILL, not restarted) until a new
    referral from one of the practices it hosted is in that practice's view."""
    victim = system.supervisor.of_kind("views")[-1]
    with psycopg.connect(url) as conn:
        members = conn.execute(
            "SELECT member, pid FROM runtime.members WHERE kind = 'views' "
            "AND heartbeat_at > now() - interval '6 seconds'"
        ).fetchall()
    live = sorted(m for m, _ in members)
    mine = next(m for m, pid in members if pid == victim.proc.pid)
    gp = next(
        o
        for o in reversed(parsed.organisations)
        if o.kind == OrgKind("gp-practice") and owner(o.id, live) == mine
    )
    started = time.monotonic()
    system.supervisor.retire(victim.name)
    rid = _post(system.base_url, tokens[gp.id], gp.areas[0])
    _poll(lambda: _in_view(url, gp.id, rid), timeout=timeout)
    return time.monotonic() - started


def caught_up(
    url: str, bootstrap: str, topics: Topics, org_ids: list[str], timeout: float
) -> float:
    """Seconds until nothing is behind anywhere, twice in a row (polling, with a deadline)."""
    started = time.monotonic()
    quiet = 0
    while quiet < 2:
        lag, backlog, _ = asyncio.run(total_lag(url, bootstrap, topics, org_ids))
        quiet = quiet + 1 if lag + backlog == 0 else 0
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"lag {lag}, outbox {backlog} after {timeout:.0f}s")
    return time.monotonic() - started


async def status_lags(url: str, bootstrap: str, topics: Topics) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return sum(x.lag for x in await consumer_lags(conn, bootstrap, topics))


def _mb(rss: int) -> str:
    return f"{rss / 2**20:.0f}"


def run(args: argparse.Namespace) -> dict[str, str]:
    figures: dict[str, str] = {}

    def show(name: str, value: object) -> None:
        figures[name] = str(value)
        console.print(f"{name}: {value}", highlight=False)

    show("partners", args.partners)
    show("view_worker_instances", args.views)
    show("cpus", os.cpu_count())
    show("load_average_at_start", " ".join(f"{x:.1f}" for x in os.getloadavg()))
    with bench_stack() as stack:
        url = stack.database.local_url()
        bootstrap = stack.bootstrap_servers
        settings = replace(
            Settings(),
            home=stack.home / "system",
            kafka_bootstrap_servers=bootstrap,
            database_url=url,
        )
        asyncio.run(create_schemas(url))
        parsed = directory(args.partners)
        t = time.monotonic()
        tokens = asyncio.run(_register(url, parsed))
        show("register_seconds (directory + view schemas)", f"{time.monotonic() - t:.1f}")
        t = time.monotonic()
        topics = Topics(prefix=settings.topic_prefix)
        create_topics(bootstrap, topics, [o.id for o in parsed.organisations])
        show("create_topics_seconds", f"{time.monotonic() - t:.1f}")
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM pg_class").fetchone()
            show("pg_class_rows", row[0] if row else "?")
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            show("database_mb_registered", _mb(int(row[0])) if row else "?")

        t = time.monotonic()
        with running_system(settings, pick_free_port=True, scale={"views": args.views}) as system:
            show("workers_until_api_answers_seconds", f"{time.monotonic() - t:.1f}")
            # Probes from ten practices spread over the list (so over every instance's
            # share): each must reach its own view.
            step = max(1, len(parsed.organisations) // 10)
            probes = parsed.organisations[-1::-step][:10]
            sent = [(o.id, _post(system.base_url, tokens[o.id], o.areas[0])) for o in probes]
            for org, rid in sent:
                _poll(lambda o=org, r=rid: _in_view(url, o, r), timeout=args.timeout)
            show("startup_until_ten_partners_see_their_referral_seconds",
                 f"{time.monotonic() - t:.1f}")  # fmt: skip
            views = [psutil.Process(c.proc.pid) for c in system.supervisor.of_kind("views")]

            def owned() -> list[int]:
                with psycopg.connect(url) as conn:
                    rows = conn.execute(
                        "SELECT owned FROM runtime.members WHERE kind = 'views' "
                        "AND heartbeat_at > now() - interval '6 seconds' ORDER BY member"
                    ).fetchall()
                return [int(r[0]) for r in rows]

            _poll(lambda: len(owned()) == args.views and sum(owned()) == args.partners,
                  timeout=args.timeout)  # fmt: skip
            show("startup_until_partners_shared_out_seconds", f"{time.monotonic() - t:.1f}")
            show("partners_per_view_instance", " ".join(str(o) for o in owned()))
            show("rss_mb_per_view_instance_after_startup",
                 " ".join(_mb(p.memory_info().rss) for p in views))  # fmt: skip

            # Idle: every partner's consumer hosted, nothing flowing.
            caught_up(url, bootstrap, topics, [o.id for o in parsed.organisations], args.timeout)
            tansu = stack.broker._child.proc  # the embedded broker's process
            broker = psutil.Process(tansu.pid) if tansu is not None else None
            watched = [*views, *([broker] if broker else [])]
            before = [sum(p.cpu_times()[:2]) for p in watched]
            time.sleep(args.idle)  # a measurement window, not synchronisation
            after = [sum(p.cpu_times()[:2]) for p in watched]
            cpu = [(a - b) / args.idle for a, b in zip(after, before, strict=True)]
            show("idle_cpu_cores_per_view_instance",
                 " ".join(f"{c:.2f}" for c in cpu[: len(views)]))  # fmt: skip
            if broker:
                show("idle_cpu_cores_broker", f"{cpu[-1]:.2f}")

            # A burst: each referral from another practice, so it touches many topics.
            gps = [o for o in parsed.organisations if o.kind == OrgKind("gp-practice")]
            burst = gps[: args.burst]
            peak = [0] * len(views)
            sampling = threading.Event()
            sampling.set()

            def sample() -> None:
                while sampling.is_set():
                    for i, p in enumerate(views):
                        with contextlib.suppress(psutil.Error):  # stopped meanwhile
                            peak[i] = max(peak[i], p.memory_info().rss)
                    time.sleep(0.2)  # a sampling interval

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                list(
                    pool.map(
                        lambda o: _post(system.base_url, tokens[o.id], o.areas[0]),
                        burst,
                    )
                )
            posted = time.monotonic() - t
            show("burst_referrals", len(burst))
            show("burst_post_seconds", f"{posted:.1f}")

            org_ids = [o.id for o in parsed.organisations]
            lag, backlog, reading = asyncio.run(total_lag(url, bootstrap, topics, org_ids))
            show("lag_events_right_after_burst (+ outbox backlog)", f"{lag} (+ {backlog})")
            show("lag_reading_seconds (batched positions)", f"{reading:.1f}")
            waited = caught_up(url, bootstrap, topics, org_ids, args.timeout)
            show("caught_up_seconds_after_burst_posted", f"{waited:.1f}")
            show("burst_to_caught_up_seconds", f"{time.monotonic() - t:.1f}")
            t2 = time.monotonic()
            asyncio.run(status_lags(url, bootstrap, topics))
            show("status_lag_reading_seconds (referralnet.lag.consumer_lags)",
                 f"{time.monotonic() - t2:.1f}")  # fmt: skip
            sampling.clear()
            sampler.join()
            show("rss_mb_per_view_instance_peak", " ".join(_mb(r) for r in peak))
            others = {
                c.name: _mb(psutil.Process(c.proc.pid).memory_info().rss)
                for c in system.supervisor.children.values()
                if c.kind != "views" and c.proc.poll() is None
            }
            show("rss_mb_other_workers", " ".join(f"{k}={v}" for k, v in others.items()))
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                show("database_mb_after_burst", _mb(int(row[0])) if row else "?")
            if args.views > 1:
                show("takeover_seconds (kill -9 of a views instance until a referral from "
                     "one of its partners is in that partner's view)",
                     f"{takeover(system, url, parsed, tokens, args.timeout):.1f}")  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.partners", description=__doc__)
    p.add_argument("--partners", type=int, default=2000, help="registered organisations")
    p.add_argument("--views", type=int, default=2, help="view-worker instances")
    p.add_argument("--burst", type=int, default=400, help="referrals in the burst")
    p.add_argument("--clients", type=int, default=8, help="concurrent API clients")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of the idle CPU window")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for any one wait")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
