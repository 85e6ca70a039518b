"""Outcomes' case table is a projection of the stores: rebuilt from them, written by the
handlers exactly as the fold says, and ``projections verify`` names the first drift."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.workload import journey
from directory.model import Activity
from eventstore.store import EventStore
from referralnet.ops.projections import PROJECTIONS, rebuild, verify
from schemas.events.base import Need
from services.intake import store as intake
from services.outcomes import commands as c
from services.outcomes import store as outcomes
from services.outcomes.adapters import PostgresUnitOfWork, cases_in_table
from services.outcomes.handlers import handle
from services.routing import store as routing
from services.routing.adapters import PostgresUnitOfWork as RoutingUnitOfWork
from services.routing.adapters import cases_in_table as routing_cases
from services.routing.commands import ReleasePlace
from services.routing.handlers import handle as routing_handle
from tests.services.databases import BACKENDS, fresh_database

BIN = Path(sys.executable).parent


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    database = fresh_database(request.param, request)
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await intake.create(conn)
        await routing.create(conn)
        await outcomes.create(conn)
    yield database


async def _append(conn: Any, store: EventStore, events: list[Any], rid: Any) -> None:
    await store.append(conn, rid, 0, events)


async def test_handlers_write_the_fold_and_verify_names_the_first_drift(url: str) -> None:
    rng = random.Random(14)
    done, fresh = journey(0, rng), journey(1, rng)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for j in (done, fresh):
            await _append(conn, intake.STORE, j.intake, j.referral_id)
            await _append(conn, routing.STORE, j.routing, j.referral_id)
        await _append(conn, outcomes.STORE, done.outcomes, done.referral_id)
        for org in {done.service, fresh.service}:
            await conn.execute(
                "INSERT INTO routing.capacity (service_org, areas, needs, min_age, "
                "caseload_limit) VALUES (%s, '{north}', '{social-connection}', 16, 5)",
                (org,),
            )

        missing = await verify(conn, PROJECTIONS)
        assert [m.split(" ")[0] for m in missing] == [p.name for p in PROJECTIONS]
        assert all("in the stores, missing from the table" in m for m in missing[:2])
        assert missing[2] == (
            f"routing.capacity {fresh.service}: caseload is 0, the stores say 1"
        ), missing[2]
        assert await rebuild(conn, PROJECTIONS) == {
            "outcomes.cases": 2,
            "routing.cases": 2,
            "routing.capacity": len({done.service, fresh.service}),
        }
        assert await verify(conn, PROJECTIONS) == []
        assert (await routing_cases(conn))[fresh.referral_id].holds_place
        table = await cases_in_table(conn)
        assert table[done.referral_id].status == "closed"
        assert table[done.referral_id].version == len(done.outcomes)
        assert table[fresh.referral_id].status == "accepted"

        # casework through the handlers: the table moves exactly as the fold says
        rid, org = fresh.referral_id, fresh.service
        at = fresh.routing[-1].occurred_at + timedelta(hours=1)
        walk = Activity(
            id="walk", name="Walk", provider="vg", kind="walking",
            needs=[Need.PHYSICAL_ACTIVITY], area="north",
        )  # fmt: skip
        uow = PostgresUnitOfWork(lambda: nullcontext(conn))
        await handle(c.RecordFirstContact(rid, org, at, "phone"), uow)
        await handle(c.ReferToActivity(rid, org, "walk", walk, at), uow)
        await handle(c.RecordSession(rid, org, "group", 60, "in-person", at), uow)
        closed_at = at + timedelta(days=1)
        await handle(c.CloseReferral(rid, org, "completed", closed_at), uow)
        trailing = await verify(conn, PROJECTIONS)  # routing has not heard yet
        assert [t.split(":")[0] for t in trailing] == [
            f"routing.cases {rid}",
            f"routing.capacity {org}",
        ], trailing
        assert trailing[0].endswith("status is 'accepted', the stores say 'closed'")
        # what routing's consumer does with the referral-closed: the place is free
        in_conn = RoutingUnitOfWork(lambda: nullcontext(conn))
        assert await routing_handle(ReleasePlace(rid, closed_at), in_conn) is not None
        assert await verify(conn, PROJECTIONS) == []
        seen = (await cases_in_table(conn))[rid].routed_seen_at

        await conn.execute(
            "UPDATE outcomes.cases SET overdue_flagged = true WHERE referral_id = %s", (rid,)
        )
        (drift,) = await verify(conn, PROJECTIONS)
        assert drift == (f"outcomes.cases {rid}: overdue_flagged is True, the stores say False"), (
            drift
        )
        cli = await asyncio.to_thread(
            subprocess.run,
            [str(BIN / "referralnet"), "projections", "verify"],
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 1, cli.stdout + cli.stderr
        assert f"{rid}: overdue_flagged is True" in cli.stdout

        await conn.execute("DELETE FROM outcomes.activity_links WHERE referral_id = %s", (rid,))
        await rebuild(conn, PROJECTIONS)
        assert await verify(conn, PROJECTIONS) == []
        after = (await cases_in_table(conn))[rid]
        assert after.routed_seen_at == seen and "walk" in after.activities
