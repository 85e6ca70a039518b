"""Rebuild one organisation's view from its topic into a fresh schema, then swap it in.

The live view keeps serving (and its worker keeps consuming) while the replay schema
``view_<org>__replay`` is built with the very projection and ``apply_batch`` the worker
uses. The swap is one transaction: it locks the live view's positions table (the worker
cannot start a batch), applies whatever the live view consumed since, compares the two
checksums and renames the schemas. The worker's position rows live in the schema that
is swapped in, so it carries on from the replayed positions: no gap, no double count.
Views have no side effects (they emit nothing), so replaying sends nothing anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg import AsyncConnection, sql

from bus.dead_letters import TABLE, ensure_columns
from bus.offsets import OffsetProbe
from bus.topics import Topics
from bus.tracking import apply_batches, record_of, stored_positions
from referralnet.ops import log
from referralnet.ops.checksum import combine, digests_in_transaction
from views.projection import ViewProjection
from views.schema import VIEW_TABLES, create_view, schema_name

Progress = Callable[[int, int], None]
"""Called with (events read, events to read); the total grows if the log does."""

REPLAY_SUFFIX = "__replay"
OLD_SUFFIX = "__old"


class UnknownView(LookupError):
    """No registered organisation has that id (so there is no view to rebuild)."""


class LogBehindView(RuntimeError):
    """The topic holds fewer records than the live view consumed: the broker lost its log."""


class ViewDiffers(RuntimeError):
    """The rebuilt view does not say what the live view says; the live view was kept.

    ``rows`` is, per table, (rows only in the live view, rows only in the rebuilt one);
    timeline rows are events.
    """

    def __init__(self, org_id: str, schema: str, rows: dict[str, tuple[int, int]]) -> None:
        self.org_id, self.schema, self.rows = org_id, schema, rows
        differing = {t: n for t, n in rows.items() if n != (0, 0)}
        events = differing.get("timeline", (0, 0))
        detail = ", ".join(
            f"{t}: {live} only live, {rebuilt} only rebuilt"
            for t, (live, rebuilt) in differing.items()
        )
        super().__init__(
            f"view {schema}: the rebuild differs from the live view ({events[0]} events only "
            f"in the live view, {events[1]} only in the rebuild; {detail}); kept the live "
            "view (the log may have lost events: run `referralnet republish`, or give --force "
            "to swap anyway)"
        )


@dataclass(frozen=True)
class ReplayResult:
    """What one replay did and the checksums that prove the result."""

    org_id: str
    schema: str
    events: int
    applied: int
    duplicates: int
    dead: int
    applied_at_swap: int
    seconds: float
    checksum: str
    live_checksum: str

    @property
    def matches(self) -> bool:
        """The rebuilt view says exactly what the live view said."""
        return self.checksum == self.live_checksum

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def view_orgs(conn: AsyncConnection[Any]) -> list[str]:
    """Every organisation that has (or will have) a view."""
    cur = await conn.execute("SELECT id FROM directory.organisations ORDER BY id")
    return [r[0] for r in await cur.fetchall()]


async def resolve(conn: AsyncConnection[Any], name: str) -> str:
    """The org id for ``name`` (an org id or its ``view_<org>`` schema name)."""
    for org in await view_orgs(conn):
        if name in (org, schema_name(org)):
            return org
    raise UnknownView(f"no view {name!r}: not a registered organisation (see GET /directory)")


async def drop_schema(database_url: str, schema: str) -> None:
    """Drop a half-built schema on a fresh connection (the old one may be mid-transaction)."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


class _Replayer:
    """One replay's consumer, positions and counters."""

    def __init__(
        self,
        conn: AsyncConnection[Any],
        projection: ViewProjection,
        reader: AIOKafkaConsumer,
        probe: OffsetProbe,
    ) -> None:
        self.conn = conn
        self.projection = projection
        self.reader = reader
        # Offsets need not be contiguous (transaction markers, compaction): the probe lets
        # apply_batches move past a hole instead of seeking back to it forever.
        self.probe = probe
        self.positions: dict[TopicPartition, int] = {}
        self.events = self.applied = self.duplicates = self.dead = 0

    async def read_until(
        self,
        targets: dict[TopicPartition, int],
        progress: Callable[[], None],
        stall_seconds: float = 30.0,
    ) -> int:
        """Apply records until every partition reaches its target; return how many."""
        before = self.events
        due = {tp for tp, end in targets.items() if self.positions.get(tp, 0) < end}
        self.reader.resume(*due)
        last = time.monotonic()
        while due:
            batches = await self.reader.getmany(*due, timeout_ms=200, max_records=5000)
            fetched = {tp: m for tp, m in batches.items() if m}
            if fetched:
                last = time.monotonic()
                await self._apply(fetched)
            for tp in list(due):
                if self.positions.get(tp, 0) >= targets[tp]:
                    due.discard(tp)
            progress()
            if due and time.monotonic() - last > stall_seconds:
                raise TimeoutError(f"the log stopped short of what the view consumed: {due}")
        return self.events - before

    async def _apply(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        """One fetch, every partition of the topic, in one transaction."""
        topic = next(iter(fetched)).topic
        batches = {
            tp.partition: [record_of(m) for m in messages] for tp, messages in fetched.items()
        }
        results = await apply_batches(self.conn, self.projection, topic, batches, probe=self.probe)
        for partition, result in results.items():
            tp = TopicPartition(topic, partition)
            if result.seek_to is not None:
                self.reader.seek(tp, result.seek_to)
                continue
            self.events += len(batches[partition])
            self.applied += result.applied
            self.duplicates += result.duplicates
            self.dead += result.dead
            self.positions[tp] = batches[partition][-1].offset + 1


async def replay_view(
    database_url: str,
    bootstrap_servers: str,
    topics: Topics,
    org_id: str,
    progress: Progress | None = None,
    lock_timeout: float = 30.0,
    force: bool = False,
) -> ReplayResult:
    """Rebuild ``org_id``'s view from ``org.<org_id>`` and swap it in (see module doc).

    Any failure or interruption (Ctrl-C) drops the half-built schema; the live view is
    only ever changed by the swap transaction, which either commits whole or not at all.
    A rebuild whose checksum differs from the live view's is not swapped in (raises
    ``ViewDiffers``, the live view untouched) unless ``force``: a log that lost events
    would otherwise make the loss permanent.
    """
    started = time.monotonic()
    live = schema_name(org_id)
    replay = schema_name(org_id, REPLAY_SUFFIX)
    old = schema_name(org_id, OLD_SUFFIX)
    topic = topics.org(org_id)
    projection = ViewProjection(org_id, replay)
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await create_view(conn, live)  # what the worker would do for a brand-new partner
        for leftover in (replay, old):  # a crash may have left these behind
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(leftover))
            )
        await create_view(conn, replay)
    try:
        return await _build_and_swap(
            database_url, bootstrap_servers, projection, topic, live, old, started, progress,
            lock_timeout, force,
        )  # fmt: skip
    except BaseException:
        await drop_schema(database_url, replay)
        raise


async def _build_and_swap(
    database_url: str,
    bootstrap_servers: str,
    projection: ViewProjection,
    topic: str,
    live: str,
    old: str,
    started: float,
    progress: Progress | None,
    lock_timeout: float,
    force: bool,
) -> ReplayResult:
    s_live, s_replay = sql.Identifier(live), sql.Identifier(projection.schema)
    highwater = await log.topic_highwaters(bootstrap_servers, [topic])
    targets = {TopicPartition(t, p): hw for (t, p), hw in highwater.items()}
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        live_positions = await stored_positions(conn, live, projection.consumer)
        short = {k: v for k, v in live_positions.items() if v > highwater.get(k, 0)}
        if short:
            raise LogBehindView(
                f"{topic} holds fewer records than view {live} consumed "
                f"({_describe(short, highwater)}): the broker lost its log; "
                "run `referralnet republish` first"
            )
        reader = log.consumer(bootstrap_servers, "referralnet-replay")
        probe = OffsetProbe(bootstrap_servers)
        await reader.start()
        try:
            reader.assign(list(targets))
            for tp in targets:
                reader.seek(tp, 0)
            rep = _Replayer(conn, projection, reader, probe)
            total = sum(targets.values())

            def report() -> None:
                if progress is not None:
                    progress(rep.events, max(total, rep.events))

            report()
            await rep.read_until(targets, report)
            # The live view moved on meanwhile: come close without holding any lock ...
            ahead = await stored_positions(conn, live, projection.consumer)
            goal = {tp: max(targets[tp], ahead.get((tp.topic, tp.partition), 0)) for tp in targets}
            total = sum(goal.values())
            await rep.read_until(goal, report)
            # ... then lock it, take the last few records, and swap in one transaction.
            async with conn.transaction():
                await conn.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(
                        sql.Literal(f"{int(lock_timeout * 1000)}ms")
                    )
                )
                await conn.execute(
                    sql.SQL("LOCK TABLE {}.positions IN EXCLUSIVE MODE").format(s_live)
                )
                final = await stored_positions(conn, live, projection.consumer)
                goal = {tp: final.get((tp.topic, tp.partition), 0) for tp in targets}
                at_swap = await rep.read_until(goal, report, stall_seconds=lock_timeout)
                live_checksum = combine(await digests_in_transaction(conn, live))
                checksum = combine(await digests_in_transaction(conn, projection.schema))
                if checksum != live_checksum and not force:
                    rows = await row_differences(conn, live, projection.schema)
                    raise ViewDiffers(projection.org_id, live, rows)
                await _keep_dead_letters(conn, live, projection.schema)
                await conn.execute(
                    sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(s_live, sql.Identifier(old))
                )
                await conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(s_replay, s_live))
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(old)))
        finally:
            await reader.stop()
            await probe.close()
    return ReplayResult(
        org_id=projection.org_id,
        schema=live,
        events=rep.events,
        applied=rep.applied,
        duplicates=rep.duplicates,
        dead=rep.dead,
        applied_at_swap=at_swap,
        seconds=time.monotonic() - started,
        checksum=checksum,
        live_checksum=live_checksum,
    )


async def replay_all(
    database_url: str,
    bootstrap_servers: str,
    topics: Topics,
    progress_for: Callable[[str], Progress | None] | None = None,
    force: bool = False,
) -> list[ReplayResult]:
    """``replay --all``: every partner's view, one after the other (for the demo too)."""
    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        orgs = await view_orgs(conn)
    return [
        await replay_view(
            database_url,
            bootstrap_servers,
            topics,
            org,
            progress_for(org) if progress_for is not None else None,
            force=force,
        )
        for org in orgs
    ]


async def row_differences(
    conn: AsyncConnection[Any], live: str, rebuilt: str
) -> dict[str, tuple[int, int]]:
    """Per view table: (rows only in ``live``, rows only in ``rebuilt``), whole rows."""
    result: dict[str, tuple[int, int]] = {}
    for table in VIEW_TABLES:
        a, b = sql.Identifier(live, table), sql.Identifier(rebuilt, table)
        cur = await conn.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM (SELECT t::text FROM {a} t EXCEPT ALL "
                "SELECT t::text FROM {b} t) x), (SELECT count(*) FROM (SELECT t::text FROM {b} t "
                "EXCEPT ALL SELECT t::text FROM {a} t) y)"
            ).format(a=a, b=b)
        )
        row = await cur.fetchone()
        assert row is not None
        result[table] = (int(row[0]), int(row[1]))
    return result


async def _keep_dead_letters(conn: AsyncConnection[Any], live: str, rebuilt: str) -> None:
    """Move the live view's dead letters into the schema being swapped in.

    They are kept for good (``bus.dead_letters``), and the rebuild's own are copies of
    the same poison: the live consumer parked each once already.
    """
    await ensure_columns(conn, live)
    await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(rebuilt, TABLE)))
    await conn.execute(
        sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
            sql.Identifier(live, TABLE), sql.Identifier(rebuilt)
        )
    )


def _describe(short: dict[tuple[str, int], int], highwater: dict[tuple[str, int], int]) -> str:
    return ", ".join(
        f"partition {p}: {highwater.get((t, p), 0)} < {o}" for (t, p), o in sorted(short.items())
    )
