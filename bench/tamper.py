"""tamper: what a database administrator can do to a store, and proof each is detected.

Each ``Tampering`` is one thing a DBA can do past the append-only trigger (with
``session_replication_role = replica``, which also switches off the foreign keys):
edit a payload or the metadata in place, edit and recompute the chain, delete the last
events or a whole stream, insert a forged event, delete and renumber, reorder, append a
perfectly chained forged event after the last checkpoint (caught by its missing seal). The
rewrites are done as a DBA who knows the chain's rule would: every hash after the
change recomputed with ``eventstore.records.link_hash``, positions kept in order.

``run_tamper_phase`` (``make chaos``) copies streams of a running system's stores into
a scratch store of the same database, checkpoints the copy into a scratch anchor,
checks it verifies, applies every tampering to its own stream, and counts how many
``referralnet verify`` names by kind. The running stores are never touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from eventstore import chain
from eventstore.anchor import AnchorPaths
from eventstore.checkpoint import Checkpointer
from eventstore.records import CHAIN_FORMAT, GENESIS_HASH, NewEvent, StoredEvent, link_hash
from eventstore.rows import ROW_COLUMNS, chained_rows
from eventstore.sealing import load_seal_key, seal_key_path
from eventstore.store import EventStore
from referralnet.lag import STORES
from referralnet.ops.verify import verify_stores

Apply = Callable[[AsyncConnection[Any], EventStore, UUID], Awaitable[None]]


@dataclass(frozen=True)
class Tampering:
    """One DBA action on one stream (of at least three events) and the finding kind
    verification must report for it."""

    name: str
    expected: str
    apply: Apply


async def as_dba(conn: AsyncConnection[Any]) -> None:
    """What a DBA does to get past the trigger (and the outbox's foreign key)."""
    await conn.execute("SET session_replication_role = replica")


async def read(conn: AsyncConnection[Any], store: EventStore, stream_id: UUID) -> list[StoredEvent]:
    return await store.read_stream(conn, stream_id)


async def rewrite(
    conn: AsyncConnection[Any], store: EventStore, stream_id: UUID, events: Sequence[StoredEvent]
) -> None:
    """Replace the stream by ``events`` re-chained from version 1: versions renumbered,
    the old positions reused in order (fresh ones if there are more events), every hash
    recomputed. What verification can then catch only by comparing with a checkpoint."""
    before = await read(conn, store, stream_id)
    positions = sorted(e.position for e in before)[: len(events)]
    if len(events) > len(positions):
        positions += await store.next_positions(conn, len(events) - len(positions))
        positions.sort()
    prev, rows = GENESIS_HASH, []
    for version, (event, position) in enumerate(zip(events, positions, strict=True), start=1):
        digest = link_hash(
            prev,
            position=position,
            stream_id=stream_id,
            version=version,
            event=event,
            recorded_at=event.recorded_at,
        )
        rows.append(
            dataclasses.replace(
                event,
                version=version,
                position=position,
                prev_hash=prev,
                hash=digest,
                chain_format=CHAIN_FORMAT,
                seal=None,  # the DBA has no seal key
            )
        )
        prev = digest
    s = sql.Identifier(store.schema)
    await conn.execute(
        sql.SQL("DELETE FROM {}.events WHERE stream_id = %s").format(s), (stream_id,)
    )
    await insert(conn, store, rows)


async def insert(
    conn: AsyncConnection[Any], store: EventStore, rows: Sequence[StoredEvent]
) -> None:
    """Insert stored events verbatim (positions included), as a DBA's INSERT would."""
    statement = sql.SQL("INSERT INTO {}.events ({}) OVERRIDING SYSTEM VALUE VALUES ({})").format(
        sql.Identifier(store.schema),
        sql.SQL(", ").join(sql.Identifier(c) for c in ROW_COLUMNS),
        sql.SQL(", ").join(sql.Placeholder() for _ in ROW_COLUMNS),
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            statement,
            [
                tuple(
                    Jsonb(v) if c == "data" else v
                    for c, v in zip(ROW_COLUMNS, _row(e), strict=True)
                )
                for e in rows
            ],
        )


def _row(e: StoredEvent) -> tuple[Any, ...]:
    return tuple(getattr(e, column) for column in ROW_COLUMNS)


async def _update(
    conn: AsyncConnection[Any], store: EventStore, stream_id: UUID, assignment: str, version: int
) -> None:
    await conn.execute(
        sql.SQL(
            "UPDATE {}.events SET " + assignment + " WHERE stream_id = %s AND version = %s"
        ).format(sql.Identifier(store.schema)),
        (stream_id, version),
    )


async def edit_payload(conn: AsyncConnection[Any], store: EventStore, stream_id: UUID) -> None:
    """A 600-minute session where there was none: the data changed, nothing else."""
    await _update(conn, store, stream_id, "data = data || jsonb_build_object('minutes', 600)", 2)


async def edit_metadata(conn: AsyncConnection[Any], store: EventStore, stream_id: UUID) -> None:
    """Correlation id, causation id and recorded_at rewritten (format 1 did not cover them)."""
    await _update(
        conn,
        store,
        stream_id,
        "correlation_id = gen_random_uuid(), causation_id = gen_random_uuid(), "
        "recorded_at = recorded_at - interval '1 day'",
        1,
    )


async def edit_and_recompute(
    conn: AsyncConnection[Any], store: EventStore, stream_id: UUID
) -> None:
    events = await read(conn, store, stream_id)
    events[1] = dataclasses.replace(events[1], data={**events[1].data, "minutes": 600})
    await rewrite(conn, store, stream_id, events)


async def delete_last(conn: AsyncConnection[Any], store: EventStore, stream_id: UUID) -> None:
    """The last event (say, ``referral-closed``) gone, nothing else touched."""
    await conn.execute(
        sql.SQL(
            "DELETE FROM {s}.events WHERE stream_id = %s AND version = "
            "(SELECT max(version) FROM {s}.events WHERE stream_id = %s)"
        ).format(s=sql.Identifier(store.schema)),
        (stream_id, stream_id),
    )


async def delete_last_two(conn: AsyncConnection[Any], store: EventStore, stream_id: UUID) -> None:
    await delete_last(conn, store, stream_id)
    await delete_last(conn, store, stream_id)


async def delete_stream(conn: AsyncConnection[Any], store: EventStore, stream_id: UUID) -> None:
    await conn.execute(
        sql.SQL("DELETE FROM {}.events WHERE stream_id = %s").format(sql.Identifier(store.schema)),
        (stream_id,),
    )


async def insert_forged(conn: AsyncConnection[Any], store: EventStore, stream_id: UUID) -> None:
    """A forged event (a copy of version 2 with a new id and 600 minutes) put in as
    version 2, the rest renumbered and the chain recomputed."""
    events = await read(conn, store, stream_id)
    forged = dataclasses.replace(
        events[1], event_id=uuid.uuid4(), data={**events[1].data, "minutes": 600}
    )
    await rewrite(conn, store, stream_id, [events[0], forged, *events[1:]])


async def delete_and_renumber(
    conn: AsyncConnection[Any], store: EventStore, stream_id: UUID
) -> None:
    events = await read(conn, store, stream_id)
    await rewrite(conn, store, stream_id, [events[0], *events[2:]])


async def forge_append(conn: AsyncConnection[Any], store: EventStore, stream_id: UUID) -> None:
    """A forged 600-minute session appended as the stream's next version with a perfect
    chain, as ``republish`` would then spread it: only the missing seal gives it away
    before the next checkpoint, and the next checkpoint refuses it."""
    events = await read(conn, store, stream_id)
    last = events[-1]
    (position,) = await store.next_positions(conn, 1)
    forged = dataclasses.replace(
        last,
        event_id=uuid.uuid4(),
        version=last.version + 1,
        position=position,
        data={**last.data, "minutes": 600},
        recorded_at=datetime.now(UTC),
        prev_hash=last.hash,
        seal=None,
    )
    digest = link_hash(
        last.hash,
        position=position,
        stream_id=stream_id,
        version=forged.version,
        event=forged,
        recorded_at=forged.recorded_at,
    )
    await insert(conn, store, [dataclasses.replace(forged, hash=digest)])


async def reorder(conn: AsyncConnection[Any], store: EventStore, stream_id: UUID) -> None:
    """Versions 1 and 2 swapped, the chain recomputed over the new order."""
    events = await read(conn, store, stream_id)
    await rewrite(conn, store, stream_id, [events[1], events[0], *events[2:]])


TAMPERINGS = (
    Tampering("edited payload", chain.EDITED, edit_payload),
    Tampering("edited correlation/causation/recorded_at", chain.EDITED, edit_metadata),
    Tampering("edited, chain recomputed", chain.RECOMPUTED, edit_and_recompute),
    Tampering("deleted last event", chain.DELETED_LAST, delete_last),
    Tampering("deleted last two events", chain.DELETED_LAST, delete_last_two),
    Tampering("deleted stream", chain.DELETED_STREAM, delete_stream),
    Tampering("inserted forged event", chain.INSERTED, insert_forged),
    Tampering("deleted and renumbered", chain.DELETED, delete_and_renumber),
    Tampering("reordered versions", chain.REORDERED, reorder),
    Tampering("forged event appended after the checkpoint", chain.FORGED, forge_append),
)


@dataclass
class TamperResult:
    """How many tamperings verification named by their kind, of how many applied."""

    detected: int = 0
    total: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        return f"tamperings detected {self.detected}/{self.total}"


async def _copy_streams(conn: AsyncConnection[Any], scratch: EventStore, count: int) -> list[UUID]:
    """Up to ``count`` streams of 3+ events from one running store, copied verbatim."""
    for source in (STORES[2], STORES[1], STORES[0]):  # outcomes has the longest streams
        exists = await conn.execute("SELECT to_regclass(%s)", (f'"{source.schema}".events',))
        if (await exists.fetchone() or (None,))[0] is None:
            continue
        cur = await conn.execute(
            sql.SQL(
                "SELECT stream_id FROM {}.events GROUP BY stream_id HAVING count(*) >= 3 "
                "ORDER BY stream_id LIMIT %s"
            ).format(sql.Identifier(source.schema)),
            (count,),
        )
        ids = [r[0] for r in await cur.fetchall()]
        if not ids:
            continue
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in ROW_COLUMNS)
        await conn.execute(
            sql.SQL(
                "INSERT INTO {}.events ({c}) OVERRIDING SYSTEM VALUE SELECT {c} FROM {}.events "
                "WHERE stream_id = ANY(%s)"
            ).format(sql.Identifier(scratch.schema), sql.Identifier(source.schema), c=columns),
            (ids,),
        )
        return ids
    return []


async def _synthetic_streams(
    conn: AsyncConnection[Any], store: EventStore, count: int, seal_key: bytes | None
) -> list[UUID]:
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    ids = []
    for _ in range(count):
        stream_id = uuid.uuid4()
        events = [
            NewEvent(
                type="session-held",
                schema_version=2,
                data={"kind": "coaching", "minutes": 30 + n, "mode": "phone"},
                actor="tamper-bench",
                occurred_at=t0 + timedelta(days=n),
                correlation_id=stream_id,
                causation_id=uuid.uuid4() if n else None,
            )
            for n in range(4)
        ]
        positions = await store.next_positions(conn, len(events))
        rows, _ = chained_rows(stream_id, 0, GENESIS_HASH, events, positions, seal_key=seal_key)
        async with conn.transaction():
            await store.insert_rows(conn, rows)
        ids.append(stream_id)
    return ids


async def tamper_phase(database_url: str, home: Path) -> TamperResult:
    """The phase itself (see the module docstring); the scratch schema is dropped after."""
    scratch = EventStore(f"tamper_{uuid.uuid4().hex[:10]}", "/bench/tamper")
    scratch_home = home / "tamper" / scratch.schema
    # The copies keep the running stack's seals, so they are checked with its seal key.
    paths = AnchorPaths(
        scratch_home / "keys" / "checkpoint.key",
        scratch_home / "keys" / "checkpoint.pub",
        scratch_home / "anchors" / "checkpoints.jsonl",
        seal_key_path(home),
    )
    result = TamperResult(total=len(TAMPERINGS))
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await scratch.create(conn)
        try:
            streams = await _copy_streams(conn, scratch, len(TAMPERINGS))
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'position'), "
                f'(SELECT coalesce(max(position), 0) + 1 FROM "{scratch.schema}".events))',
                (f'"{scratch.schema}".events',),
            )
            key = load_seal_key(seal_key_path(home), create=True)
            streams += await _synthetic_streams(conn, scratch, len(TAMPERINGS) - len(streams), key)
            await Checkpointer(paths, [scratch]).checkpoint(conn)
            before = await verify_stores(conn, paths, [scratch])
            if not before.clean:
                result.details += ["not clean before tampering:", *before.lines()]
                return result
            await as_dba(conn)
            for tampering, stream_id in zip(TAMPERINGS, streams, strict=True):
                await tampering.apply(conn, scratch, stream_id)
            after = await verify_stores(conn, paths, [scratch])
            for tampering, stream_id in zip(TAMPERINGS, streams, strict=True):
                found = [f for f in after.findings if f.stream_id == stream_id]
                named = any(f.kind == tampering.expected for f in found)
                result.detected += named
                seen = "; ".join(f.line() for f in found) or "nothing found"
                verdict = "detected" if named else f"MISSED (expected {tampering.expected})"
                result.details.append(f"{tampering.name}: {verdict}: {seen}")
        finally:
            await conn.execute("RESET session_replication_role")
            await conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(scratch.schema))
            )
    return result


def run_tamper_phase(database_url: str, home: Path) -> TamperResult:
    """``tamper_phase`` from synchronous code (``make chaos``): copy, checkpoint, tamper,
    verify; ``result.line`` is what to print ("tamperings detected 10/10")."""
    return asyncio.run(tamper_phase(database_url, home))
