"""Outcomes' case table, routing's cases and capacity and the distributor's entitlements
are projections of the stores: rebuilt from them, written by the handlers (and the
distributor) exactly as the fold says, and ``projections verify`` names the first drift."""

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
from psycopg.types.json import Jsonb

from bench.workload import COMMISSIONER, LINK_WORKERS, PROVIDER, REFERRERS, journey
from bus.relay import to_cloudevent
from bus.topics import Topics
from bus.tracking import Record, apply_batch
from directory import store as directory
from directory.model import Activity
from eventstore.records import new_event
from eventstore.store import EventStore
from referralnet.ops.projections import PROJECTIONS, rebuild, verify
from schemas.envelope import to_kafka
from schemas.events import ConsentWithdrawn, WithdrawnConsent
from schemas.events.base import Need
from schemas.events.referral import (
    DeclineReason,
    ReferralAccepted,
    ReferralDeclined,
    ReferralEscalated,
    ReferralRouted,
)
from services.distributor import store as distributor
from services.distributor.projection import DistributorProjection
from services.intake import store as intake
from services.outcomes import commands as c
from services.outcomes import store as outcomes
from services.outcomes.adapters import PostgresUnitOfWork, cases_in_table
from services.outcomes.handlers import handle
from services.outcomes.projection import CaseProjection
from services.routing import store as routing
from services.routing.adapters import PostgresUnitOfWork as RoutingUnitOfWork
from services.routing.adapters import cases_in_table as routing_cases
from services.routing.commands import ReleasePlace
from services.routing.handlers import handle as routing_handle
from tests.services.databases import BACKENDS, fresh_database

BIN = Path(sys.executable).parent
TOPICS = Topics()
CASEWORK = tuple(p for p in PROJECTIONS if p.name != "distributor.entitlements")
"""What casework through the handlers moves (the distributor hears of it on the bus)."""
(ENTITLEMENTS,) = (p for p in PROJECTIONS if p.name == "distributor.entitlements")


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    database = fresh_database(request.param, request)
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await directory.create(conn)
        await intake.create(conn)
        await routing.create(conn)
        await outcomes.create(conn)
        await distributor.create(conn)
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
        assert missing[3].endswith(": in the stores, missing from the table"), missing[3]
        assert await rebuild(conn, PROJECTIONS) == {
            "outcomes.cases": 2,
            "routing.cases": 2,
            "routing.capacity": len({done.service, fresh.service}),
            "distributor.entitlements": 2,
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
        trailing = await verify(conn, CASEWORK)  # routing has not heard yet
        assert [t.split(":")[0] for t in trailing] == [
            f"routing.cases {rid}",
            f"routing.capacity {org}",
        ], trailing
        assert trailing[0].endswith("status is 'accepted', the stores say 'closed'")
        # what routing's consumer does with the referral-closed: the place is free
        in_conn = RoutingUnitOfWork(lambda: nullcontext(conn))
        assert await routing_handle(ReleasePlace(rid, closed_at), in_conn) is not None
        assert await verify(conn, CASEWORK) == []
        seen = (await cases_in_table(conn))[rid].routed_seen_at

        await conn.execute(
            "UPDATE outcomes.cases SET overdue_flagged = true WHERE referral_id = %s", (rid,)
        )
        (drift,) = await verify(conn, CASEWORK)
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


async def _distribute(conn: Any, stores: list[EventStore], first: int) -> int:
    """What the running distributor does with the stores' events as their relays publish
    them: each store's records in order, the stores one after another (an interleaving
    other than the stores' ``recorded_at`` order). Returns the next offset."""
    records = []
    for store in stores:
        async for batch in store.read_all(conn):
            for stored in batch:
                records.append(to_kafka(to_cloudevent(store, stored)))
    batch_ = [Record(TOPICS.referral_events, 0, first + i, *r) for i, r in enumerate(records)]
    result = await apply_batch(
        conn, DistributorProjection(TOPICS, b"secret"), TOPICS.referral_events, 0, batch_
    )
    assert (result.applied, result.dead) == (len(records), 0), result
    return first + len(records)


async def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "referralnet"), "projections", *args],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_entitlements_are_what_the_distributor_wrote_and_rebuild_restores_them(
    url: str,
) -> None:
    rng = random.Random(7)
    done, fresh = journey(0, rng), journey(1, rng)
    withdrawn = new_event(
        ConsentWithdrawn(
            referral_id=done.referral_id,
            consent=WithdrawnConsent.SHARE_OUTCOMES_WITH_REFERRER,
            recorded_by=done.referrer,
            withdrawn_at=done.outcomes[-1].occurred_at,
        ),
        actor=done.referrer,
        occurred_at=done.outcomes[-1].occurred_at,
        correlation_id=done.referral_id,
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for org, kind in [
            *((r, "gp-practice") for r in REFERRERS),
            *((lw, "link-worker-service") for lw in LINK_WORKERS),
            (PROVIDER, "voluntary-group"),
            (COMMISSIONER, "commissioner"),
        ]:
            await conn.execute(
                "INSERT INTO directory.organisations (id, name, kind, areas, spec) "
                "VALUES (%s, %s, %s, '{}', '{}')",
                (org, org, kind),
            )
        for j in (done, fresh):
            await _append(conn, intake.STORE, j.intake, j.referral_id)
            await _append(conn, routing.STORE, j.routing, j.referral_id)
        await _append(conn, outcomes.STORE, done.outcomes, done.referral_id)
        await intake.STORE.append(conn, done.referral_id, 1, [withdrawn])
        await _distribute(conn, [intake.STORE, outcomes.STORE, routing.STORE], 0)

        # the running distributor's own writes agree with the fold over the stores
        assert await verify(conn, (ENTITLEMENTS,)) == []
        wrote = await distributor.entitlements_in_table(conn)
        ended = wrote[str(done.referral_id)]
        assert (ended.service_org, ended.providers) == (done.service, (PROVIDER,))
        assert not ended.share_outcomes_with_referrer  # the consent was withdrawn
        assert wrote[str(fresh.referral_id)].share_outcomes_with_referrer

        rid = str(done.referral_id)
        await conn.execute(
            "UPDATE distributor.entitlements SET service_org = 'lw-elsewhere' "
            "WHERE referral_id = %s",
            (rid,),
        )
        assert await verify(conn, (ENTITLEMENTS,)) == [
            f"distributor.entitlements {rid}: service_org is 'lw-elsewhere', "
            f"the stores say {done.service!r}"
        ]
        cli = await _cli(url, "verify", "--only", "distributor.entitlements")
        assert cli.returncode == 1, cli.stdout + cli.stderr
        assert f"differs: distributor.entitlements {rid}: service_org" in cli.stdout, cli.stdout
        assert "routing.cases" not in cli.stdout  # --only: the one projection (the others
        # differ: this test fed only the distributor)
        assert await rebuild(conn, (ENTITLEMENTS,)) == {"distributor.entitlements": 2}
        assert await distributor.entitlements_in_table(conn) == wrote

        # an edited kept referral-created, shown cut short, and a lost row named first
        # (by id) when both differ
        gone, edited = sorted((str(done.referral_id), str(fresh.referral_id)))
        tamper = (
            "UPDATE distributor.entitlements SET created = created || %s WHERE referral_id = %s"
        )
        await conn.execute(tamper, (Jsonb({"key": "x"}), edited))
        (changed,) = await verify(conn, (ENTITLEMENTS,))
        assert changed.startswith(f"distributor.entitlements {edited}: created is {{"), changed
        assert len(changed) < 400, changed
        await conn.execute("DELETE FROM distributor.entitlements WHERE referral_id = %s", (gone,))
        (lost,) = await verify(conn, (ENTITLEMENTS,))
        assert lost == f"distributor.entitlements {gone}: in the stores, missing from the table"
        cli = await _cli(url, "rebuild", "--only", "distributor.entitlements")
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "rebuilt distributor.entitlements: 2 rows" in cli.stdout
        assert await verify(conn, (ENTITLEMENTS,)) == []
        assert await distributor.entitlements_in_table(conn) == wrote


async def test_outcomes_consumer_moves_cases_as_routing_answers_fold(url: str) -> None:
    """The consumer folds routing's answers with ``hear`` (the rule the stores are folded
    with): declines, re-routes, a stale acceptance and an escalation, in one batch and
    one event at a time, leave ``outcomes.cases`` as the stores say."""
    (cases_projection,) = (p for p in PROJECTIONS if p.name == "outcomes.cases")
    rng = random.Random(3)
    rerouted, escalated, plain = journey(0, rng), journey(1, rng), journey(2, rng)
    at = rerouted.intake[0].occurred_at

    def answer(model: Any, n: int) -> Any:
        return new_event(
            model,
            actor="routing",
            occurred_at=at + timedelta(hours=n),
            correlation_id=model.referral_id,
        )

    a, b = rerouted.referral_id, escalated.referral_id
    answers = {
        a: [
            answer(ReferralRouted(referral_id=a, service_org="lw-1", attempt=1, reason="r"), 1),
            answer(
                ReferralDeclined(
                    referral_id=a,
                    service_org="lw-1",
                    reason=DeclineReason.NO_CAPACITY,
                    declined_at=at + timedelta(hours=2),
                ),
                2,
            ),
            answer(ReferralRouted(referral_id=a, service_org="lw-2", attempt=2, reason="r"), 3),
            answer(  # a late answer from the service that declined: nothing changes
                ReferralAccepted(referral_id=a, service_org="lw-1", accepted_at=at), 4
            ),
            answer(
                ReferralAccepted(
                    referral_id=a, service_org="lw-2", accepted_at=at + timedelta(hours=5)
                ),
                5,
            ),
        ],
        b: [
            answer(ReferralRouted(referral_id=b, service_org="lw-1", attempt=1, reason="r"), 1),
            answer(ReferralEscalated(referral_id=b, reason="none left", tried=["lw-1"]), 2),
        ],
        plain.referral_id: plain.routing,
    }
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for j in (rerouted, escalated, plain):
            await _append(conn, intake.STORE, j.intake, j.referral_id)
            await _append(conn, routing.STORE, answers[j.referral_id], j.referral_id)
        records = []
        for store in (intake.STORE, routing.STORE):
            async for batch in store.read_all(conn):
                records += [to_kafka(to_cloudevent(store, e)) for e in batch]
        # the other referrals' events in one transaction, the plain one's one at a time
        alone = [r for r in records if r[0] == str(plain.referral_id).encode()]
        together = [r for r in records if r not in alone]
        projection = CaseProjection()
        offset = 0
        for part in [together, *([r] for r in alone)]:
            batch_ = [Record(TOPICS.referral_events, 0, offset + i, *r) for i, r in enumerate(part)]
            result = await apply_batch(conn, projection, TOPICS.referral_events, 0, batch_)
            assert (result.applied, result.dead) == (len(part), 0), result
            offset += len(part)

        assert await verify(conn, (cases_projection,)) == []
        table = await cases_in_table(conn)
        assert (table[a].status, table[a].service_org) == ("accepted", "lw-2")
        assert table[a].accepted_at == at + timedelta(hours=5)
        assert (table[b].status, table[b].service_org) == ("escalated", None)
        assert table[plain.referral_id].status == "accepted"
        assert all(c.routed_seen_at is not None for c in table.values())
