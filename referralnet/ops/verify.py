"""``referralnet verify``: check every store against its chain and the signed anchor.

``verify --all`` reads every event of every service's store once (stream by stream,
through a server-side cursor), checks each stream's hash chain, compares it with what
the anchor's checkpoints recorded, and lists the checkpointed streams that are gone.
``verify --checkpoint`` appends a signed checkpoint of the stores to the anchor. The
running stack checkpoints by itself through ``checkpoint_periodically``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from eventstore.anchor import AnchorError, AnchorPaths, AnchorState, read_anchor
from eventstore.chain import DOWNGRADED, Finding, check_against, check_chain
from eventstore.checkpoint import Checkpointer, CheckpointResult
from eventstore.records import StoredEvent
from eventstore.sealing import load_seal_key
from eventstore.store import EVENT_COLUMNS, EventStore, stored_event
from referralnet.lag import STORES
from services.privacy.audit import AUDIT

CHECKED: tuple[EventStore, ...] = (*STORES, AUDIT)
"""Every store the chains, seals and checkpoints cover: the services' and the access log."""

log = structlog.get_logger(__name__)

ANCHOR = "anchor"
"""The kind of a finding about the anchor itself (unreadable, bad signature, gap)."""


@dataclass
class Verification:
    """What a verification checked and found. ``clean`` is what the exit code says."""

    findings: list[Finding] = field(default_factory=list)
    anchor_problem: str | None = None
    streams: int = 0
    events: int = 0
    checkpointed_events: int = 0
    checkpoints: int = 0
    last_checkpoint: str | None = None

    @property
    def clean(self) -> bool:
        return not self.findings and self.anchor_problem is None

    @property
    def after_checkpoint(self) -> int:
        """Events only the chain vouches for: appended since the last checkpoint."""
        return max(0, self.events - self.checkpointed_events)

    def lines(self) -> list[str]:
        """One line per finding (the anchor's own problem first)."""
        head = [f"{ANCHOR}: {self.anchor_problem}"] if self.anchor_problem else []
        return head + [f.line() for f in self.findings]

    def as_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "findings": [
                {
                    "store": f.store,
                    "stream_id": str(f.stream_id),
                    "version": f.version,
                    "kind": f.kind,
                    "problem": f.problem,
                }
                for f in self.findings
            ],
            "anchor_problem": self.anchor_problem,
            "streams": self.streams,
            "events": self.events,
            "checkpointed_events": self.checkpointed_events,
            "events_after_last_checkpoint": self.after_checkpoint,
            "checkpoints": self.checkpoints,
            "last_checkpoint": self.last_checkpoint,
        }


def load_anchor(paths: AnchorPaths, result: Verification) -> AnchorState:
    """The folded anchor (empty when none was written, or when it cannot be trusted; the
    reason then goes into ``result.anchor_problem``)."""
    try:
        state = read_anchor(paths)
    except AnchorError as exc:
        result.anchor_problem = str(exc)
        return AnchorState()
    if state is None:
        return AnchorState()
    result.checkpoints, result.last_checkpoint = state.lines, state.last_taken_at
    return state


@dataclass(frozen=True)
class Seals:
    """What seal checks need: the services' key, and per store where sealing began."""

    key: bytes | None = None
    sealed_from: dict[str, int] = field(default_factory=dict)
    key_path: Path | None = None
    """Where the key was looked for (None: seals are not checked at all)."""


def seals_for(paths: AnchorPaths | None, anchor: AnchorState) -> Seals:
    where = paths.seal_key if paths else None
    return Seals(load_seal_key(where) if where else None, dict(anchor.sealed_from), where)


def check_stream(
    store: str,
    stream_id: UUID,
    events: Sequence[StoredEvent],
    anchor: AnchorState,
    result: Verification,
    seals: Seals | None = None,
) -> None:
    """Chain, seal and checkpoint checks of one stream, added to ``result``."""
    seals = seals or Seals()
    if seals.key is None and seals.key_path and any(e.seal is not None for e in events):
        missing = f"no seal key at {seals.key_path}: seals cannot be checked"
        result.anchor_problem = result.anchor_problem or missing
    checkpointed = anchor.stream(store, stream_id)
    result.streams += 1 if events else 0
    result.events += len(events)
    result.checkpointed_events += min(len(events), len(checkpointed))
    found = check_chain(
        store, events, seal_key=seals.key, sealed_from=seals.sealed_from.get(store)
    ) + check_against(store, stream_id, events, checkpointed)
    seen = set()
    for f in found:  # the chain and the checkpoint may name the same break
        if (f.version, f.kind) not in seen:
            seen.add((f.version, f.kind))
            result.findings.append(f)


async def verify_referral(
    conn: AsyncConnection[Any], referral_id: UUID, paths: AnchorPaths | None
) -> Verification:
    """One referral's stream in every store (``journey --verify``)."""
    result = Verification()
    anchor = load_anchor(paths, result) if paths else AnchorState()
    seals = seals_for(paths, anchor)
    for store in STORES:
        events = await store.read_stream(conn, referral_id)
        check_stream(store.schema, referral_id, events, anchor, result, seals)
    return result


async def _streams(
    conn: AsyncConnection[Any], store: EventStore
) -> AsyncIterator[tuple[UUID, list[StoredEvent]]]:
    """Every stream of ``store`` with its events, one stream at a time."""
    async with conn.transaction(), conn.cursor(name="verify", row_factory=dict_row) as cur:
        cur.itersize = 5000
        await cur.execute(
            sql.SQL(
                "SELECT " + EVENT_COLUMNS + " FROM {}.events ORDER BY stream_id, version"
            ).format(sql.Identifier(store.schema))
        )
        current: list[StoredEvent] = []
        async for row in cur:
            event = stored_event(row)
            if current and current[0].stream_id != event.stream_id:
                yield current[0].stream_id, current
                current = []
            current.append(event)
        if current:
            yield current[0].stream_id, current


async def _first_sealed(conn: AsyncConnection[Any], store: EventStore) -> int | None:
    cur = await conn.execute(
        sql.SQL("SELECT min(position) FROM {}.events WHERE seal IS NOT NULL").format(
            sql.Identifier(store.schema)
        )
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def _downgraded(conn: AsyncConnection[Any], store: EventStore) -> list[Finding]:
    """Format 1 events stored after the store's first format 2 event: written by nobody
    but someone forging an event under the rule that leaves columns uncovered."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT stream_id, version, chain_format FROM {s}.events WHERE chain_format < 2 "
            "AND position > (SELECT min(position) FROM {s}.events WHERE chain_format >= 2) "
            "ORDER BY position"
        ).format(s=sql.Identifier(store.schema))
    )
    return [
        Finding(store.schema, s, v, DOWNGRADED, f"chain format {f} after the cut-over to 2")
        for s, v, f in await cur.fetchall()
    ]


async def verify_stores(
    conn: AsyncConnection[Any], paths: AnchorPaths, stores: Iterable[EventStore] = CHECKED
) -> Verification:
    """Every stream of every store (``verify --all``)."""
    result = Verification()
    anchor = load_anchor(paths, result)
    seals = seals_for(paths, anchor)
    for store in stores:
        first_sealed = await _first_sealed(conn, store)
        if first_sealed is not None:  # sealing began here, whatever the anchor knows
            known = seals.sealed_from.get(store.schema, first_sealed)
            seals.sealed_from[store.schema] = min(known, first_sealed)
        present: set[UUID] = set()
        async for stream_id, events in _streams(conn, store):
            present.add(stream_id)
            check_stream(store.schema, stream_id, events, anchor, result, seals)
        for stream_id, checkpointed in anchor.streams.get(store.schema, {}).items():
            if stream_id not in present:
                result.findings += check_against(store.schema, stream_id, [], checkpointed)
        result.findings += await _downgraded(conn, store)
    return result


async def checkpoint(
    conn: AsyncConnection[Any], paths: AnchorPaths, stores: Sequence[EventStore] = CHECKED
) -> CheckpointResult:
    """One checkpoint of ``stores`` now (``verify --checkpoint``)."""
    return await Checkpointer(paths, stores).checkpoint(conn)


async def checkpoint_periodically(
    database_url: str,
    home: Path,
    stop: asyncio.Event,
    interval: float = 1.0,
    stores: Sequence[EventStore] = CHECKED,
) -> None:
    """Checkpoint the stores every ``interval`` seconds until ``stop`` is set.

    Meant to run beside the outbox relays (the relay worker gathers it), so the window
    in which only the chain vouches for an event is about one interval. Each checkpoint
    scans every stream head, so on a large store the pause stretches to ten times the
    last checkpoint's duration (at most a tenth of a core). Failures are logged and
    retried on the next tick, never raised: a checkpoint is an audit aid, and must not
    take the relay down with it. Refused (tampered) streams are logged once each.
    """
    checkpointer: Checkpointer | None = None
    reported: set[tuple[str, UUID]] = set()
    conn: AsyncConnection[Any] | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = await AsyncConnection.connect(database_url, autocommit=True)
                if checkpointer is None:  # creates the key on first use
                    checkpointer = Checkpointer(AnchorPaths.under(home), stores)
                started = time.monotonic()
                result = await checkpointer.checkpoint(conn)
                pause = max(interval, 10 * (time.monotonic() - started))
                for store, stream_id in set(result.refused) - reported:
                    reported.add((store, stream_id))
                    log.warning("checkpoint_refused_tampered", store=store, stream=str(stream_id))
            except Exception as exc:  # logged and retried on the next tick
                log.warning("checkpoint_failed", error=str(exc))
                pause = interval
                if conn is not None:
                    await conn.close()
                    conn = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
    finally:
        if conn is not None:
            await conn.close()
