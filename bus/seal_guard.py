"""Nothing goes onto the bus that ``verify --all`` would call tampered.

A database administrator can insert an event the services never wrote (the append-only
trigger does not block INSERT under ``session_replication_role = replica``), with a
perfect hash chain. ``verify`` finds it by its missing or wrong seal
(``eventstore.sealing``); the publishers (``republish`` and the outbox relay) ask this
guard about every event before sending it, with the same rule (``eventstore.chain``):

- the event's hash recomputes, it links to the event before it in its stream, and
- given the services' seal key, its seal holds, and a seal is there where one is due
  (after a sealed event of the stream; from the store's first sealed position on).

A refused event is not published, and neither is any later event of its stream (its
consumers could not apply them without it, and the chain after a forgery vouches for
nothing). Each refusal is one line naming store, stream and version; nothing forged
reaches any topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql

from eventstore.chain import Finding, Link, check_chain
from eventstore.records import StoredEvent

StreamRef = tuple[str, UUID]
"""(store schema, stream id)."""


def link_of(event: StoredEvent) -> Link:
    """What the guard remembers of an event it let through (no content)."""
    return Link(
        event.stream_id, event.version, event.event_id, event.position, event.prev_hash,
        event.hash, event.chain_format, event.seal,
    )  # fmt: skip


def _unknown_before(event: StoredEvent) -> Link:
    """A stand-in for a predecessor the caller did not read (``republish --since``): the
    event is then judged on its own hash and seal, not on its link."""
    return Link(
        event.stream_id, event.version - 1, event.event_id, event.position - 1,
        b"", event.prev_hash, event.chain_format, None,
    )  # fmt: skip


@dataclass
class SealGuard:
    """Judges a store's events in stream order, remembering each stream's last event.

    ``key``: the services' seal key (None: seals are not checked, only the chain).
    ``sealed_from``: per store schema, the position from which every event must be sealed.
    """

    key: bytes | None = None
    sealed_from: Mapping[str, int] = field(default_factory=dict)
    _last: dict[StreamRef, Link] = field(default_factory=dict)
    refused: dict[StreamRef, Finding] = field(default_factory=dict)
    positions: dict[str, list[tuple[int, Finding]]] = field(default_factory=dict)
    """Per store: (position, finding) of every event refused, held-back ones included."""
    held_back: dict[StreamRef, int] = field(default_factory=dict)
    """Later events of refused streams, not published either."""

    def remember(self, store: str, link: Link) -> None:
        """The event before the next one of its stream (read from the store, trusted as
        far as ``verify`` vouches for it)."""
        self._last[(store, link.stream_id)] = link

    def admit(self, store: str, event: StoredEvent) -> bool:
        """Whether ``event`` may be published; a refusal is kept in ``refused``."""
        ref = (store, event.stream_id)
        if ref in self.refused:
            self.held_back[ref] = self.held_back.get(ref, 0) + 1
            first = self.refused[ref]
            behind = Finding(store, event.stream_id, event.version, first.kind,
                             f"follows v{first.version}, refused: {first.problem}")  # fmt: skip
            self.positions.setdefault(store, []).append((event.position, behind))
            return False
        before = self._last.get(ref)
        if before is None and event.version > 1:
            before = _unknown_before(event)
        found = check_chain(
            store,
            [event],
            after=before,
            seal_key=self.key,
            sealed_from=self.sealed_from.get(store),
        )
        if found:
            self.refused[ref] = found[0]
            self.positions.setdefault(store, []).append((event.position, found[0]))
            return False
        self._last[ref] = link_of(event)
        return True

    def lines(self) -> list[str]:
        """One line per refused stream, naming the store, stream, version and why."""
        out = []
        for ref, finding in self.refused.items():
            later = self.held_back.get(ref, 0)
            tail = f" ({later} later event(s) of the stream held back)" if later else ""
            out.append(f"refused to publish {finding.line()}{tail}")
        return out


REFUSED_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    event_position bigint PRIMARY KEY,
    stream_id      uuid    NOT NULL,
    version        integer NOT NULL,
    kind           text    NOT NULL,
    problem        text    NOT NULL,
    refused_by     text    NOT NULL,
    refused_at     timestamptz NOT NULL DEFAULT now()
);
"""
REFUSED_TABLE = "refused_events"
"""Per store schema: the events a publisher refused (``status`` reports them)."""


async def record_refusals(
    conn: AsyncConnection[Any],
    schema: str,
    refused: Sequence[tuple[int, Finding]],
    by: str,
) -> None:
    """Keep each refusal (event position, finding) for ``status`` and take the event
    out of the outbox, so the relay neither sends it nor stalls on it."""
    if not refused:
        return
    table = sql.Identifier(schema, REFUSED_TABLE)
    await conn.execute(sql.SQL(REFUSED_DDL).format(table=table))
    await conn.execute(
        sql.SQL(
            "INSERT INTO {} (event_position, stream_id, version, kind, problem, refused_by) "
            "SELECT * FROM unnest(%s::int8[], %s::uuid[], %s::int4[], %s::text[], %s::text[], "
            "%s::text[]) ON CONFLICT DO NOTHING"
        ).format(table),
        (
            [p for p, _ in refused],
            [f.stream_id for _, f in refused],
            [f.version for _, f in refused],
            [f.kind for _, f in refused],
            [f.problem for _, f in refused],
            [by] * len(refused),
        ),
    )
    await conn.execute(
        sql.SQL("DELETE FROM {} WHERE event_position = ANY(%s)").format(
            sql.Identifier(schema, "outbox")
        ),
        ([p for p, _ in refused],),
    )


async def refusal_counts(conn: AsyncConnection[Any], schemas: Sequence[str]) -> dict[str, int]:
    """Refused events per store schema (stores without refusals left out)."""
    counts: dict[str, int] = {}
    for schema in schemas:
        cur = await conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".{REFUSED_TABLE}',)
        )
        row = await cur.fetchone()
        if not row or not row[0]:
            continue
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, REFUSED_TABLE))
        )
        row = await cur.fetchone()
        if row and row[0]:
            counts[schema] = int(row[0])
    return counts
