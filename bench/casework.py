"""casework: outcomes' command path, as partners drive it, at 16 concurrent clients.

Calls the outcomes routes' functions (``services.outcomes.api``) directly on a pool,
without HTTP, so that what is measured is the command path: read the case, decide,
append, update the case table. Each client works on its own accepted referrals: one
first contact, then sessions and outcome measures. Prints commands/s, latency and the
client's CPU time per command (steadier than rates on a shared machine).

Runs against whatever ``services`` package is first on ``sys.path``, so the same script
measures an older checkout too (``PYTHONPATH=/path/to/old/checkout``); give it a fresh
database each run (``--url``). Example, alternating old and new::

    python -m bench.casework --url postgresql://.../db1 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

from psycopg import AsyncConnection

from eventstore.pool import connection_pool
from schemas.events.base import ContactMode
from schemas.events.contact import SessionKind
from schemas.events.outcome import Timepoint
from schemas.measures import Measure
from services.intake import store as intake
from services.outcomes import api
from services.outcomes import store as outcomes
from services.outcomes.requests import FirstContact, OutcomeRecord, SessionHeld
from services.routing import store as routing

START = datetime(2026, 1, 5, 9, tzinfo=UTC)


async def _prepare(url: str, cases: int) -> list[UUID]:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await intake.create(conn)
        await routing.create(conn)
        await outcomes.create(conn)
        rids = [uuid4() for _ in range(cases)]
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO outcomes.cases (referral_id, referrer_org, referred_at, "
                "service_org, status, routed_at, routed_seen_at, accepted_at) "
                "VALUES (%s, 'gp', %s, 'lw', 'accepted', %s, %s, %s)",
                [(rid, START, START, START, START) for rid in rids],
            )
        return rids


async def _client(db: Any, org: Any, rids: list[UUID], stop: float, latencies: list[float]) -> int:
    rng, done = random.Random(), 0
    contacted: set[UUID] = set()
    at = START + timedelta(days=1)
    while time.monotonic() < stop:
        rid = rng.choice(rids)
        began = time.perf_counter()
        if rid not in contacted:
            contacted.add(rid)
            await api.first_contact(
                rid, FirstContact(contacted_at=at, mode=ContactMode.PHONE), org, db
            )
        elif rng.random() < 0.5:
            body = SessionHeld(
                kind=SessionKind.GROUP, minutes=60, mode=ContactMode.IN_PERSON, held_at=at
            )
            await api.session(rid, body, org, db)
        else:
            record = OutcomeRecord(
                measure=Measure.SWEMWBS, items=[3] * 7, timepoint=Timepoint.BASELINE, recorded_at=at
            )
            await api.outcome(rid, record, org, db)
        latencies.append(time.perf_counter() - began)
        done += 1
    return done


async def run(url: str, clients: int, seconds: float, cases_per_client: int) -> dict[str, float]:
    """Commands/s and latency percentiles (ms) of ``clients`` concurrent clients."""
    rids = await _prepare(url, clients * cases_per_client)
    org = SimpleNamespace(id="lw", kind="link-worker-service")
    latencies: list[float] = []
    async with connection_pool(url, min_size=clients, max_size=clients) as db:
        cpu = time.process_time()
        stop = time.monotonic() + seconds
        counts = await asyncio.gather(
            *(_client(db, org, rids[i::clients], stop, latencies) for i in range(clients))
        )
        cpu = time.process_time() - cpu
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "commands_per_s": round(sum(counts) / seconds, 1),
        "client_cpu_ms_per_command": round(cpu * 1000 / sum(counts), 3),
        "p50_ms": round(cuts[49] * 1000, 2),
        "p95_ms": round(cuts[94] * 1000, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.casework", description=__doc__)
    p.add_argument("--url", required=True, help="a fresh database")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--cases", type=int, default=20, help="accepted referrals per client")
    args = p.parse_args()
    print(asyncio.run(run(args.url, args.clients, args.seconds, args.cases)))


if __name__ == "__main__":
    main()
