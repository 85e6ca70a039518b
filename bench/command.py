"""command path: 16 concurrent clients appending one event per command.

Each client owns streams (no conflicts between clients, as partners act on their own
referrals) and appends one ``session-held``-sized event at the version it last saw: the
store's optimistic-concurrency check runs for every command. The naive path is one
transaction per command on a pool (``EventStore.append``); the group-commit path sends
the same commands through ``bench.group_commit.GroupCommitter``. After each
variant the store is checked: events stored == commands acknowledged, outbox likewise.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from psycopg import AsyncConnection, sql

from bench.bulk import StreamAppend, append_many
from bench.common import BenchStack, Row, Section, console, percentile, progress, rate
from bench.group_commit import GroupCommitter
from eventstore.pool import connection_pool
from eventstore.records import NewEvent, StoredEvent
from eventstore.store import EventStore

Append = Callable[[UUID, int, list[NewEvent]], Awaitable[list[StoredEvent]]]


def _command(rng: random.Random, sid: UUID) -> NewEvent:
    return NewEvent(
        type="session-held",
        schema_version=2,
        data={
            "referral_id": str(sid),
            "session_id": str(uuid4()),
            "kind": "short-conversation",
            "duration_minutes": rng.randint(10, 60),
            "mode": "phone",
            "held_at": datetime.now(UTC).isoformat(),
            "group_size": None,
        },
        actor="lw-bench-1",
        occurred_at=datetime.now(UTC),
        correlation_id=sid,
    )


async def _drive(
    append: Append, clients: int, streams: list[list[UUID]], seconds: float
) -> tuple[int, list[float]]:
    """``clients`` loops appending until ``seconds`` are up; (commands, latencies)."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []

    async def client(mine: list[UUID], seed: int) -> int:
        rng = random.Random(seed)
        versions = dict.fromkeys(mine, 1)
        done = 0
        while time.perf_counter() < deadline:
            sid = mine[done % len(mine)]
            started = time.perf_counter()
            await append(sid, versions[sid], [_command(rng, sid)])
            latencies.append(time.perf_counter() - started)
            versions[sid] += 1
            done += 1
        return done

    counts = await asyncio.gather(*(client(streams[c], c) for c in range(clients)))
    return sum(counts), latencies


async def _variant(
    url: str, name: str, clients: int, per_client: int, seconds: float
) -> dict[str, Any]:
    store = EventStore(f"bench_cmd_{name}", "/bench/command")
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await store.create(conn)
        streams = [[uuid4() for _ in range(per_client)] for _ in range(clients)]
        rng = random.Random(0)
        seed = [StreamAppend(s, 0, [_command(rng, s)]) for mine in streams for s in mine]
        await append_many(conn, store, seed)
        await conn.execute(sql.SQL("DELETE FROM {}.outbox").format(sql.Identifier(store.schema)))
    batches = 0
    if name.startswith("naive"):
        size = int(name.split("_")[1])
        async with connection_pool(url, min_size=size, max_size=size) as pool:

            async def naive(sid: UUID, version: int, events: list[NewEvent]) -> list[StoredEvent]:
                async with pool.connection() as c:
                    return await store.append(c, sid, version, events)

            commands, latencies = await _drive(naive, clients, streams, seconds)
    else:
        writers = int(name.split("_")[1])
        async with GroupCommitter(url, store, writers=writers) as gc:
            commands, latencies = await _drive(gc.append, clients, streams, seconds)
            batches = gc.batches
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        s = sql.Identifier(store.schema)
        cur = await conn.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM {s}.events), (SELECT count(*) FROM {s}.outbox)"
            ).format(s=s)
        )
        row = await cur.fetchone()
        assert row is not None
        stored, outbox = int(row[0]) - len(seed), int(row[1])
        await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))
    if stored != commands or outbox != commands:
        raise AssertionError(f"{name}: {commands} acknowledged, {stored} stored, {outbox} outbox")
    return {
        "commands": commands,
        "per_second": rate(commands, seconds),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_batch": commands / batches if batches else 1.0,
    }


VARIANTS = ("naive_4", "naive_16", "group_1", "group_2")


def run(stack: BenchStack, clients: int, seconds: float) -> Section:
    section = Section(
        "command",
        f"python -m bench command --clients {clients} --seconds {seconds:g}",
        {"clients": clients, "seconds_per_variant": seconds},
    )
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    with stack.fresh_database("command") as url, progress("command path") as bar:
        task = bar.add_task("variants", total=len(VARIANTS))
        for name in VARIANTS:
            results[name] = asyncio.run(_variant(url, name, clients, 50, seconds))
            bar.advance(task)
    naive = max(results["naive_4"]["per_second"], results["naive_16"]["per_second"])
    best = max(("group_1", "group_2"), key=lambda n: results[n]["per_second"])
    labels = {
        "naive_4": "naive: one transaction per command, pool of 4",
        "naive_16": "naive: one transaction per command, pool of 16",
        "group_1": "group commit, 1 writer connection",
        "group_2": "group commit, 2 writer connections",
    }
    for name in VARIANTS:
        r = results[name]
        is_best = name == best
        section.rows.append(
            Row(
                "command",
                labels[name],
                r["per_second"],
                "commands/s",
                naive if name.startswith("group") else None,
                "best naive" if name.startswith("group") else "",
                "≥ 2x naive" if is_best else "",
                (r["per_second"] >= 2 * naive) if is_best else None,
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"
                + (f", {r['mean_batch']:.1f} commands/commit" if name.startswith("group") else ""),
            )
        )
    section.notes = [
        f"{clients} clients in one process, for the same time per variant; each command "
        "appends one session-held event to one of the client's own streams at the version "
        "it last saw (optimistic concurrency checked every time). After each variant the "
        "store is checked: events and outbox rows == commands acknowledged.",
        "Group commit (bench/group_commit.py) queues appends while a commit is in "
        "flight and writes the queue in one transaction: heads in one query, events and "
        "outbox in one statement, one fsync. A stale version fails only its own append; a "
        "race with a writer outside the committer falls back to one transaction per append.",
        "Measured at the store, not through HTTP: through HTTP the API process (one uvicorn "
        "worker: FastAPI, pydantic, auth) saturates a core before the database does. The "
        "committer is not wired into the API: a command there also writes non-event rows in "
        "its transaction (intake's encrypted person and idempotency key; routing's capacity "
        "ledger) that would need to join the shared transaction.",
    ]
    section.details = results
    section.seconds = time.monotonic() - started
    console.print(
        "command: "
        + ", ".join(f"{n} {results[n]['per_second']:,.0f}/s" for n in VARIANTS)
        + f" (best group / best naive {results[best]['per_second'] / naive:.2f}x)"
    )
    return section
