"""routing path: routing's consumer handler on ``referral-created``, then ``referral-closed``.

Calls ``services.routing.projection.RoutingProjection.apply`` directly (no broker), one
transaction per event as the consumer's batches would hold many, from ``--clients``
concurrent tasks on one area with a few services, so the capacity rows are contended
as in a busy alliance. Prints events/s and the client's CPU time per event.

Runs against whatever ``services`` package is first on ``sys.path`` (``PYTHONPATH``), so
the same script measures an older checkout too; give it a fresh database (``--url``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from psycopg import AsyncConnection

from eventstore.pool import connection_pool
from schemas.dataschema import dataschema_uri
from schemas.envelope import CloudEvent
from schemas.events.referral import ReferralClosed, ReferralCreated
from services.intake import store as intake
from services.outcomes import store as outcomes
from services.routing import store as routing
from services.routing.projection import RoutingProjection

START = datetime(2026, 1, 5, 9, tzinfo=UTC)


def _event(model: Any, rid: UUID, at: datetime) -> CloudEvent:
    return CloudEvent(
        id=uuid4(),
        source="/bench",
        type=model.event_type,
        subject=str(rid),
        time=at,
        dataschema=dataschema_uri(model.event_type, model.version),
        data=model.model_dump(mode="json"),
        streamversion=1,
        correlationid=rid,
        causationid=None,
        actor="bench",
    )


def _created(rid: UUID) -> ReferralCreated:
    return ReferralCreated.model_validate(
        {
            "referral_id": rid,
            "person_ref": "p_bench",
            "referrer_org": "gp-bench",
            "referrer_kind": "gp-practice",
            "needs": ["social-connection"],
            "urgency": "routine",
            "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": True},
            "area": "bench",
            "age_band": "35-49",
            "referred_at": START,
        }
    )


async def _prepare(url: str, services: int) -> None:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await intake.create(conn)
        await routing.create(conn)
        await outcomes.create(conn)
        for i in range(services):
            await conn.execute(
                "INSERT INTO routing.capacity (service_org, areas, needs, min_age, "
                "caseload_limit) VALUES (%s, '{bench}', '{social-connection}', 16, 1000000)",
                (f"lw-{i}",),
            )


async def _client(db: Any, stop: float) -> int:
    projection, done = RoutingProjection(), 0
    while time.monotonic() < stop:
        rid = uuid4()
        created = _created(rid)
        closed = ReferralClosed.model_validate(
            {"referral_id": rid, "reason": "completed", "closed_at": START + timedelta(days=9)}
        )
        for model in (created, closed):
            async with db.connection() as conn, conn.transaction():
                await projection.apply(conn, _event(model, rid, START), model)
            done += 1
    return done


async def run(url: str, clients: int, seconds: float) -> dict[str, float]:
    """Events/s and client CPU per event of ``clients`` concurrent consumers' work."""
    await _prepare(url, 4)
    async with connection_pool(url, min_size=clients, max_size=clients) as db:
        cpu = time.process_time()
        stop = time.monotonic() + seconds
        counts = await asyncio.gather(*(_client(db, stop) for _ in range(clients)))
        cpu = time.process_time() - cpu
    total = sum(counts)
    return {
        "events_per_s": round(total / seconds, 1),
        "client_cpu_ms_per_event": round(cpu * 1000 / total, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.routing_path", description=__doc__)
    p.add_argument("--url", required=True, help="a fresh database")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args()
    print(asyncio.run(run(args.url, args.clients, args.seconds)))


if __name__ == "__main__":
    main()
