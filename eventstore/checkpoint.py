"""Taking checkpoints: what the stores hold now, checked and appended to the anchor.

A checkpoint adds, per store, every event that reached a stream since the anchor last
saw it, but only where the stream still extends what the anchor holds (same hash at the
last checkpointed version, and a chain that holds after it). A stream that was cut
short, rewritten or deleted is refused, never blessed: the anchor keeps its old record,
so the tampering stays detectable however many checkpoints follow.

The cost is one index-only pass over each store's heads plus a read of the new events
(in a repeatable-read snapshot, so heads and events agree), and one signed line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any
from uuid import UUID

from psycopg import AsyncConnection, sql

from eventstore.anchor import (
    AnchorPaths,
    AnchorState,
    Entry,
    append_line,
    locked_anchor_async,
    read_new,
    signed_line,
    signing_key,
)
from eventstore.chain import Link, check_chain
from eventstore.sealing import load_seal_key
from eventstore.store import EventStore


@dataclass
class CheckpointResult:
    """What one checkpoint added (events per store) and which streams it refused."""

    taken_at: str
    added: dict[str, int] = field(default_factory=dict)
    refused: list[tuple[str, UUID]] = field(default_factory=list)
    written: bool = False


async def store_heads(
    conn: AsyncConnection[Any], store: EventStore, after_position: int = 0
) -> tuple[dict[UUID, tuple[int, bytes]], int]:
    """Version and hash of the last event of every stream with an event stored after
    ``after_position`` (0: every stream, one pass over the index), and the highest
    position seen."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT DISTINCT ON (stream_id) stream_id, version, hash, "
            "max(position) OVER () FROM {}.events WHERE position > %s "
            "ORDER BY stream_id, version DESC"
        ).format(sql.Identifier(store.schema)),
        (after_position,),
    )
    rows = await cur.fetchall()
    return {r[0]: (r[1], bytes(r[2])) for r in rows}, max((r[3] for r in rows), default=0)


async def links_from(
    conn: AsyncConnection[Any], store: EventStore, starts: dict[UUID, int]
) -> dict[UUID, list[Link]]:
    """The chain links (no content) of each stream in ``starts`` from the given version
    on, in order. Content is not re-hashed here: the anchor records each row's stored
    hash, so an edit in place stays visible to ``verify`` whenever it happened."""
    result: dict[UUID, list[Link]] = {s: [] for s in starts}
    if not starts:
        return result
    cur = await conn.execute(
        sql.SQL(
            "SELECT stream_id, version, event_id, position, prev_hash, hash, chain_format, seal "
            "FROM {}.events JOIN unnest(%s::uuid[], %s::int[]) AS f(sid, since) "
            "ON stream_id = f.sid WHERE version >= f.since ORDER BY stream_id, version"
        ).format(sql.Identifier(store.schema)),
        (list(starts), list(starts.values())),
    )
    for r in await cur.fetchall():
        sealed = None if r[7] is None else bytes(r[7])
        result[r[0]].append(Link(r[0], r[1], r[2], r[3], bytes(r[4]), bytes(r[5]), r[6], sealed))
    return result


MAX_ENTRIES = 20_000
"""Events per checkpoint line at most (about 3 MB); a larger backlog takes several."""

FULL_SCAN_EVERY = 30
"""Checkpoints between two passes over every stream head. The others look only at
streams with events stored after the highest position the previous one saw; an event
whose transaction committed late with a lower position (and nothing after it in its
stream) waits for the next full pass, so its window is at most this many intervals."""


def extension(
    store: str,
    known: tuple[int, bytes] | None,
    events: Sequence[Link],
    seal_key: bytes | None = None,
    sealed_from: int | None = None,
) -> list[Link] | None:
    """The events that extend the checkpointed head ``known`` (``events`` read from its
    version on, or the whole stream when there is none), or None when the stream no
    longer extends it, or an event in it lacks a seal that is due: then it was
    tampered with, and the checkpoint must refuse it."""
    head: Link | None = None
    new = list(events)
    if known is not None:
        if not events or events[0].version != known[0] or events[0].hash != known[1]:
            return None
        head, new = events[0], new[1:]
    broken = check_chain(
        store, new, after=head, recompute=False, seal_key=seal_key, sealed_from=sealed_from
    )
    return None if broken else new


class Checkpointer:
    """Writes checkpoints of ``stores`` to the anchor at ``paths``, keeping the folded
    anchor's heads in memory between calls (it reads only lines written since)."""

    def __init__(self, paths: AnchorPaths, stores: Sequence[EventStore]) -> None:
        self.paths = paths
        self.stores = list(stores)
        self._key = signing_key(paths)
        self._public = self._key.public_key()
        self.state = AnchorState(keep_events=False)
        self._checkpoints = 0
        self._seen: dict[str, int] = {}  # highest position the last pass saw, per store
        self._seal_key: bytes | None = None
        self._sealed_from: dict[str, int] = {}  # first sealed position taken in, per store

    async def checkpoint(self, conn: AsyncConnection[Any]) -> CheckpointResult:
        """Add what is new in every store to the anchor: one line per ``MAX_ENTRIES``
        events (none when nothing is new), all from one snapshot of the stores."""
        async with locked_anchor_async(self.paths) as handle:
            read_new(self.state, handle, self._public)
            result = CheckpointResult(datetime.now(UTC).isoformat())
            full = self._checkpoints % FULL_SCAN_EVERY == 0
            self._checkpoints += 1
            if self._seal_key is None and self.paths.seal_key is not None:
                self._seal_key = load_seal_key(self.paths.seal_key)
            self._sealed_from = dict(self.state.sealed_from)
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                pending: dict[str, list[Entry]] = {}
                for store in self.stores:
                    result.added[store.schema] = 0
                    async for entries in self._new_entries(conn, store, result, full):
                        if not entries:
                            continue
                        pending.setdefault(store.schema, []).extend(entries)
                        result.added[store.schema] += len(entries)
                        if sum(len(e) for e in pending.values()) >= MAX_ENTRIES:
                            self._write(handle, result, pending)
                            pending = {}
                if pending:
                    self._write(handle, result, pending)
            return result

    def _write(
        self, handle: IO[bytes], result: CheckpointResult, new: dict[str, list[Entry]]
    ) -> None:
        totals = {}
        for store, entries in new.items():
            heads = self.state.heads.get(store, {})
            fresh = {s for s, _, _, _ in entries} - set(heads)
            totals[store] = (len(heads) + len(fresh), self.state.events(store) + len(entries))
        sealed = {s: self._sealed_from[s] for s in new if s in self._sealed_from}
        line = signed_line(self._key, self.state, result.taken_at, new, totals, sealed)
        append_line(handle, self.state, line, self._public)
        result.written = True

    async def _new_entries(
        self, conn: AsyncConnection[Any], store: EventStore, result: CheckpointResult, full: bool
    ) -> AsyncIterator[list[Entry]]:
        """The new events of ``store``'s streams that still extend the anchor, read in
        slices of about ``MAX_ENTRIES`` (memory stays bounded on a large backlog)."""
        known = self.state.heads.get(store.schema, {})
        after = 0 if full else self._seen.get(store.schema, 0)
        heads, highest = await store_heads(conn, store, after)
        self._seen[store.schema] = max(highest, after)
        if full:  # only a full pass can tell that a stream is gone
            result.refused += [(store.schema, s) for s in known if s not in heads]
        starts: dict[UUID, int] = {}
        backlog = 0
        for stream_id, head in heads.items():
            seen = known.get(stream_id)
            if seen == head:
                continue  # unchanged since the last checkpoint
            starts[stream_id] = seen[0] if seen else 1
            backlog += max(1, head[0] - (seen[0] if seen else 0))
            if backlog >= MAX_ENTRIES:
                yield self._extensions(store, await links_from(conn, store, starts), result)
                starts, backlog = {}, 0
        if starts:
            yield self._extensions(store, await links_from(conn, store, starts), result)

    def _extensions(
        self, store: EventStore, streams: dict[UUID, list[Link]], result: CheckpointResult
    ) -> list[Entry]:
        known = self.state.heads.get(store.schema, {})
        entries: list[Entry] = []
        for stream_id, events in streams.items():
            added = extension(
                store.schema,
                known.get(stream_id),
                events,
                self._seal_key,
                self._sealed_from.get(store.schema),
            )
            if added is None:
                result.refused.append((store.schema, stream_id))
                continue
            entries += [(e.stream_id, e.version, e.event_id, e.hash) for e in added]
            sealed = [e.position for e in added if e.seal is not None]
            if sealed and self._seal_key is not None:
                first = min(sealed, default=0)
                self._sealed_from[store.schema] = min(
                    first, self._sealed_from.get(store.schema, first)
                )
        return entries
