"""replay and scaling: rebuild every partner's view from N stored events.

N events of whole journeys are stored in intake, routing and outcomes with the bulk
path (timed: that is the seeding rate). Then, on the same rows, in the same order
(merged across the three stores by ``recorded_at``, one server-side cursor):

- **scan**: the raw baseline, rows fetched and decoded to dicts, nothing else;
- **rebuild**: each row becomes its bus event (``bus.relay.to_cloudevent``), the
  distributor's policy (``services.distributor.policy.deliveries``, entitlements kept in
  memory) decides which organisations get which copy, and every copy goes through the
  view worker's own path, ``bus.tracking.apply_batches`` with ``views.projection.
  ViewProjection`` (set-based: a handful of statements per batch, in one pipeline),
  into fresh view schemas (Kafka encoding and decoding included, as the records would
  arrive from ``org.<id>`` topics). Events/s counts stored events; a stored event
  reaches about three views.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from bench.common import BenchStack, Row, Section, console, progress, rate
from bench.distribution import MemoryDistributor
from bench.workload import ALLIANCE_YAML, COMMISSIONER, ORGS, seed_stores
from bus.relay import to_cloudevent
from bus.tracking import Record, apply_batch
from directory.loader import parse
from eventstore.records import StoredEvent
from eventstore.store import EVENT_COLUMNS
from referralnet.bootstrap import create_schemas
from referralnet.registration import register
from schemas.envelope import to_kafka
from services.intake.store import STORE as INTAKE
from services.outcomes.store import STORE as OUTCOMES
from services.routing.store import STORE as ROUTING
from views.projection import ViewProjection
from views.schema import create_view, schema_name

STORES = {s.schema: s for s in (INTAKE, ROUTING, OUTCOMES)}
SECRET = b"bench-pseudonym-secret"
BATCH = 2000
WORKERS = 3

MERGED = (
    "SELECT * FROM ("
    + " UNION ALL ".join(
        f"SELECT '{name}' AS store, {EVENT_COLUMNS} FROM {name}.events" for name in STORES
    )
    + ") e ORDER BY recorded_at, store, position"
)


async def _prepare(url: str) -> None:
    await create_schemas(url)
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await register(conn, parse(ALLIANCE_YAML, "bench-alliance.yaml"))


async def scan(url: str, on_progress: Callable[[int], None]) -> tuple[int, float]:
    """Raw baseline: every row of the merged history, decoded to a dict."""
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(url) as conn:
        started = time.perf_counter()
        n = 0
        async with conn.cursor(name="bench_scan", row_factory=dict_row) as cur:
            cur.itersize = 5000
            await cur.execute(MERGED)
            async for _row in cur:
                n += 1
                if n % 20000 == 0:
                    on_progress(n)
        seconds = time.perf_counter() - started
        await conn.rollback()
    return n, seconds


class _ViewWriter:
    """Applies the batches of some organisations' views on its own connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue: asyncio.Queue[tuple[ViewProjection, str, list[Record]] | None] = asyncio.Queue(
            maxsize=4
        )
        self.applied = 0
        self.duplicates = 0

    async def run(self) -> None:
        conn: AsyncConnection[Any]
        async with await AsyncConnection.connect(self.url, autocommit=True) as conn:
            while (item := await self.queue.get()) is not None:
                projection, topic, records = item
                result = await apply_batch(conn, projection, topic, 0, records)
                if result.seek_to is not None or result.dead:
                    raise AssertionError(f"{topic}: {result}")
                self.applied += result.applied
                self.duplicates += result.duplicates


async def rebuild(url: str, suffix: str, on_progress: Callable[[int], None]) -> dict[str, Any]:
    """Rebuild every organisation's view into ``view_<org><suffix>``; return counts."""
    projections = {o: ViewProjection(o, schema_name(o, suffix)) for o in ORGS}
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for p in projections.values():
            await create_view(conn, p.schema)
    writers = [_ViewWriter(url) for _ in range(WORKERS)]
    owner = {o: writers[i % WORKERS] for i, o in enumerate(ORGS)}
    tasks = [asyncio.create_task(w.run()) for w in writers]
    pending: dict[str, list[Record]] = defaultdict(list)
    offsets: dict[str, int] = defaultdict(int)
    distributor = MemoryDistributor([COMMISSIONER], SECRET)
    n = copies = 0

    async def flush(org: str) -> None:
        records = pending.pop(org, [])
        if records:
            await owner[org].queue.put((projections[org], f"org.{org}", records))

    started = time.perf_counter()
    async with await AsyncConnection.connect(url) as conn:
        async with conn.cursor(name="bench_rebuild") as cur:
            cur.itersize = 5000
            await cur.execute(MERGED)
            async for row in cur:
                event = to_cloudevent(STORES[row[0]], StoredEvent(*row[1:13], *row[13:]))
                for org, copy in distributor.copies(event):
                    key, value, headers = to_kafka(copy)
                    pending[org].append(Record(f"org.{org}", 0, offsets[org], key, value, headers))
                    offsets[org] += 1
                    copies += 1
                    if len(pending[org]) >= BATCH:
                        await flush(org)
                n += 1
                if n % 20000 == 0:
                    on_progress(n)
        await conn.rollback()
    for org in list(pending):
        await flush(org)
    for w in writers:
        await w.queue.put(None)
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    applied = sum(w.applied for w in writers)
    if applied != copies:
        raise AssertionError(f"{copies} copies delivered but {applied} applied")
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for p in projections.values():
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(p.schema)))
    return {"events": n, "copies": copies, "seconds": seconds}


def measure(stack: BenchStack, events: int) -> dict[str, Any]:
    """Seed ``events`` into a fresh database, then scan and rebuild; rates of each."""
    with stack.fresh_database(f"replay{events}") as url:
        asyncio.run(_prepare(url))
        with progress(f"storing {events:,} events") as bar:
            task = bar.add_task("seed", total=events)
            started = time.perf_counter()
            stored = asyncio.run(
                seed_stores(url, events, on_progress=lambda n: bar.update(task, completed=n))
            )
            seed_seconds = time.perf_counter() - started
        with progress(f"raw scan of {stored:,} rows") as bar:
            task = bar.add_task("scan", total=stored)
            n, scan_seconds = asyncio.run(scan(url, lambda k: bar.update(task, completed=k)))
        with progress("rebuilding every view") as bar:
            task = bar.add_task("rebuild", total=stored)
            rebuilt = asyncio.run(rebuild(url, "__bench", lambda k: bar.update(task, completed=k)))
    result: dict[str, Any] = {
        "events": stored,
        "seed_seconds": seed_seconds,
        "seed_per_s": rate(stored, seed_seconds),
        "scan_seconds": scan_seconds,
        "scan_per_s": rate(n, scan_seconds),
    }
    result["rebuild_seconds"] = rebuilt["seconds"]
    result["rebuild_per_s"] = rate(rebuilt["events"], rebuilt["seconds"])
    result["rebuild_view_applies_per_s"] = rate(rebuilt["copies"], rebuilt["seconds"])
    result["copies"] = rebuilt["copies"]
    console.print(
        f"replay {stored:,}: seed {result['seed_per_s']:,.0f}/s, "
        f"scan {result['scan_per_s']:,.0f}/s, rebuild {result['rebuild_per_s']:,.0f}/s"
    )
    return result


def run(stack: BenchStack, events: int, scaling: list[int]) -> list[Section]:
    """The replay section (at ``events``) and the scaling section (at each size)."""
    replay = Section(
        "replay",
        f"python -m bench replay --replay-events {events}",
        {"events": events, "batch": BATCH, "writer_connections": WORKERS},
    )
    scale = Section(
        "scaling",
        f"python -m bench replay --replay-events {events} --scaling {','.join(map(str, scaling))}",
        {"sizes": scaling},
    )
    started = time.monotonic()
    sizes = sorted(set(scaling) | {events})
    by_size = {size: measure(stack, size) for size in sizes}
    main = by_size[events]
    best = main["rebuild_per_s"]
    replay.rows = [
        Row(
            "replay",
            f"rebuild all views, {main['events']:,} stored events",
            best,
            "events/s",
            main["scan_per_s"],
            "raw server-side cursor scan → dicts",
            "≥ 0.5x scan (stretch 1x)",
            best >= 0.5 * main["scan_per_s"],
            f"{main['copies']:,} view rows applied ({main['rebuild_view_applies_per_s']:,.0f}/s)",
        ),
        Row("replay", "raw scan, same rows", main["scan_per_s"], "rows/s"),
        Row("replay", "storing them (append_many, 3 stores)", main["seed_per_s"], "events/s"),
    ]
    smallest = by_size[sizes[0]]
    for size in sizes:
        r = by_size[size]
        scale.rows.append(
            Row(
                "scaling",
                f"{r['events']:,} events: store / scan / rebuild seconds",
                r["rebuild_seconds"],
                "s (rebuild)",
                smallest["rebuild_seconds"] * r["events"] / smallest["events"],
                f"linear from {smallest['events']:,}",
                note=(
                    f"store {r['seed_seconds']:.1f} s ({r['seed_per_s']:,.0f}/s), scan "
                    f"{r['scan_seconds']:.1f} s ({r['scan_per_s']:,.0f}/s), rebuild "
                    f"{r['rebuild_seconds']:.1f} s ({r['rebuild_per_s']:,.0f}/s)"
                ),
            )
        )
    replay.notes = [
        "Input: N events of 12-event journeys in intake, routing and outcomes (stored with "
        "append_many). Scan: the same merged, ordered query through a server-side cursor, "
        "rows to dicts. Rebuild: every row becomes its bus event, the distributor's policy "
        "(services.distributor.policy.deliveries) picks the copies (~3 per event: referrer, "
        "link worker, commissioner, provider), and every copy goes through the view "
        "worker's apply_batches + ViewProjection (Kafka encoding and decoding included) into "
        "fresh schemas, 3 connections, 2,000 records per transaction.",
        "The projection is set-based: a batch is folded in memory into rows per table and "
        "one change per referral, written by about seven unnest statements in one "
        "pipeline; an earlier per-event projection (2-3 statements per copy) reached "
        "~400 events/s here.",
        "What limits it now (py-spy of the 1M rebuild, 25 Hz for 20 s): Python per copy, "
        "not SQL. Envelope decode and encode (from_kafka, to_kafka), pydantic validation of "
        "each copy, the distributor policy and psycopg's pure-Python array dumper for the "
        "unnest parameters each take 8-15% of samples; waiting on PostgreSQL about 19%. "
        "The rebuild also grows faster than linearly (see scaling: 1.64x at 1M), not "
        "profiled; the view tables' indexes and the dedup table grow with the history.",
    ]
    scale.notes = [
        "Each size in a fresh database. Linear growth means the rates stay flat as the "
        "size grows; the ratio column compares each rebuild time with the smallest size "
        "scaled linearly (1.00x = exactly linear).",
    ]
    replay.details = main
    scale.details = {str(k): v for k, v in by_size.items()}
    replay.seconds = scale.seconds = time.monotonic() - started
    return [replay, scale]
