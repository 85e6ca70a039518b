"""What a stream's hash chain, and a checkpoint of it, say about tampering.

Pure functions over ``StoredEvent`` lists (no I/O), shared by ``journey --verify``,
``verify --all``, the checkpoint writer (which must not bless a tampered stream) and the
tamper benchmark. A chain alone proves that no event was changed *without recomputing
the hashes after it*; comparing with a checkpoint (``eventstore.anchor``) is what proves
that nothing up to the checkpoint was changed at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from eventstore.records import CHAIN_FORMAT, GENESIS_HASH, StoredEvent, hash_of
from eventstore.sealing import seal_holds

EDITED = "edited"
"""An event's content no longer matches its own hash."""
RECOMPUTED = "recomputed-chain"
"""The chain holds, but differs from the checkpoint: an edit with the hashes recomputed."""
DELETED_LAST = "deleted-last"
"""Checkpointed versions at the end of a stream are gone."""
DELETED_STREAM = "deleted-stream"
"""A checkpointed stream is gone altogether."""
DELETED = "deleted"
"""A version inside a stream is gone (a gap, or later versions renumbered down)."""
INSERTED = "inserted"
"""An event the checkpoint never saw sits among checkpointed versions."""
REORDERED = "reordered"
"""Checkpointed events sit at other versions, or positions disagree with versions."""
BROKEN_LINK = "broken-link"
"""An event does not link to its predecessor (something was removed, moved or added)."""
DOWNGRADED = "downgraded"
"""An event claims an older chain format than one before it, or an unknown one."""
FORGED = "forged"
"""An event without a valid seal where seals are due: not written by the services."""

KINDS = (
    EDITED,
    RECOMPUTED,
    DELETED_LAST,
    DELETED_STREAM,
    DELETED,
    INSERTED,
    REORDERED,
    BROKEN_LINK,
    DOWNGRADED,
    FORGED,
)


@dataclass(frozen=True)
class Finding:
    """One sign of tampering: where (store, stream, version) and which kind."""

    store: str
    stream_id: UUID
    version: int
    kind: str
    problem: str

    def line(self) -> str:
        """One line for a terminal or a log (no event content, so no personal data)."""
        return f"{self.store} {self.stream_id} v{self.version}: {self.kind}: {self.problem}"


class Linked(Protocol):
    """What the chain's structure needs of an event (``StoredEvent`` has it all; the
    checkpoint writer reads only these columns)."""

    @property
    def stream_id(self) -> UUID: ...
    @property
    def version(self) -> int: ...
    @property
    def event_id(self) -> UUID: ...
    @property
    def position(self) -> int: ...
    @property
    def prev_hash(self) -> bytes: ...
    @property
    def hash(self) -> bytes: ...
    @property
    def chain_format(self) -> int: ...
    @property
    def seal(self) -> bytes | None: ...


@dataclass(frozen=True)
class Link:
    """An event reduced to its place in the chain (no content)."""

    stream_id: UUID
    version: int
    event_id: UUID
    position: int
    prev_hash: bytes
    hash: bytes
    chain_format: int
    seal: bytes | None


Checkpointed = Sequence[tuple[UUID, bytes]]
"""A stream as a checkpoint saw it: (event id, hash) of versions 1..n in order."""


def check_chain(
    store: str,
    events: Sequence[Linked],
    after: Linked | None = None,
    *,
    recompute: bool = True,
    seal_key: bytes | None = None,
    sealed_from: int | None = None,
) -> list[Finding]:
    """The first break of one stream's own chain (empty when it holds).

    ``events`` are the stream's events ordered by version, from version 1 or from just
    ``after`` an event already trusted. Checks that versions run on without a gap, each
    event links to the one before, each hash recomputes under the event's chain format
    (``recompute``: only ``StoredEvent`` values can), formats never go back, and
    positions grow with versions. Given the ``seal_key``, every seal present must hold,
    and a seal is due on every event after a sealed one in the stream and on every
    event at or after position ``sealed_from`` (where the store's sealing began).
    """
    prev, format_, position, first = GENESIS_HASH, 1, 0, 1
    sealing = after is not None and after.seal is not None
    if after is not None:
        prev, format_, position = after.hash, after.chain_format, after.position
        first = after.version + 1
    for expected, event in enumerate(events, start=first):

        def found(kind: str, problem: str, e: Linked = event) -> list[Finding]:
            return [Finding(store, e.stream_id, e.version, kind, problem)]

        if event.version != expected:
            return found(DELETED, f"version {expected} is missing (deleted?)")
        if event.chain_format < format_ or event.chain_format > CHAIN_FORMAT:
            return found(DOWNGRADED, f"chain format {event.chain_format} after format {format_}")
        if event.prev_hash != prev:
            return found(BROKEN_LINK, "does not link to the previous event (reordered or deleted)")
        if recompute and isinstance(event, StoredEvent) and hash_of(event) != event.hash:
            return found(EDITED, "content does not match its hash (edited)")
        if event.position <= position:
            return found(REORDERED, "stored before the version ahead of it (reordered)")
        if seal_key is not None and event.chain_format == CHAIN_FORMAT:
            if event.seal is not None and not seal_holds(seal_key, event.hash, event.seal):
                return found(FORGED, "its seal does not hold (not written by the services)")
            due = sealing or (sealed_from is not None and event.position >= sealed_from)
            if event.seal is None and due:
                return found(FORGED, "not sealed where seals are due (not written by the services)")
        sealing = sealing or event.seal is not None
        prev, format_, position = event.hash, event.chain_format, event.position
    return []


def check_against(
    store: str, stream_id: UUID, events: Sequence[StoredEvent], checkpointed: Checkpointed
) -> list[Finding]:
    """The first place a stream departs from what a checkpoint recorded of it.

    Versions after the checkpoint are not judged here (only ``check_chain`` covers
    them). The kind is read from the event ids: the same id with another hash is an
    edit; an unknown id is an insertion; a checkpointed id missing is a deletion; known
    ids at other versions are a reordering.
    """
    if not checkpointed:
        return []
    if not events:
        return [
            Finding(
                store,
                stream_id,
                1,
                DELETED_STREAM,
                f"the whole stream ({len(checkpointed)} checkpointed events) is gone",
            )
        ]
    by_version = {e.version: e for e in events}
    for version, (_, digest) in enumerate(checkpointed, start=1):
        event = by_version.get(version)
        if event is not None and event.hash == digest:
            continue
        return [_departure(store, stream_id, version, event, events, checkpointed)]
    return []


def _departure(
    store: str,
    stream_id: UUID,
    version: int,
    event: StoredEvent | None,
    events: Sequence[StoredEvent],
    checkpointed: Checkpointed,
) -> Finding:
    n = len(checkpointed)
    ids_now = {e.event_id for e in events}
    if event is None:
        if all(e.version < version for e in events):
            return Finding(
                store,
                stream_id,
                version,
                DELETED_LAST,
                (f"versions {version}..{n}" if n > version else f"version {n}")
                + " checkpointed and now gone",
            )
        return Finding(store, stream_id, version, DELETED, f"version {version} is missing")
    expected_id = checkpointed[version - 1][0]
    if event.event_id == expected_id:
        if hash_of(event) != event.hash:
            return Finding(
                store, stream_id, version, EDITED, "content does not match its hash (edited)"
            )
        return Finding(
            store,
            stream_id,
            version,
            RECOMPUTED,
            "differs from the checkpoint though its chain holds (edited, hashes recomputed)",
        )
    known = {eid: v for v, (eid, _) in enumerate(checkpointed, start=1)}
    if event.event_id not in known:
        return Finding(
            store,
            stream_id,
            version,
            INSERTED,
            f"event {event.event_id} was never checkpointed but sits at checkpointed "
            f"version {version} (forged insert)",
        )
    if expected_id not in ids_now:
        return Finding(
            store,
            stream_id,
            version,
            DELETED,
            f"checkpointed event {expected_id} is gone and later versions were renumbered",
        )
    return Finding(
        store,
        stream_id,
        version,
        REORDERED,
        f"event {event.event_id} was checkpointed at version {known[event.event_id]}",
    )
