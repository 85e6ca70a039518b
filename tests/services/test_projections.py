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

        missing = await verify(conn, PROJECTIONS)
        assert len(missing) == 1 and "in the stores, missing from the table" in missing[0]
        assert await rebuild(conn, PROJECTIONS) == {"outcomes.cases": 2}
        assert await verify(conn, PROJECTIONS) == []
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
        await handle(c.CloseReferral(rid, org, "completed", at + timedelta(days=1)), uow)
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
