"""Each thing a DBA can do to a store passes the chain or not, but never verification.

On a real PostgreSQL (embedded 18 and external 15), through a real DBA path: the
append-only trigger is bypassed with ``session_replication_role = replica`` (or
switched off with ``ALTER TABLE ... DISABLE TRIGGER``). Every stream verifies before
the tampering; after it, verification names the kind.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bench.tamper import TAMPERINGS, Tampering, as_dba, forge_append, run_tamper_phase
from eventstore.anchor import AnchorPaths
from eventstore.chain import EDITED, FORGED
from eventstore.checkpoint import Checkpointer
from eventstore.records import GENESIS_HASH, NewEvent
from eventstore.rows import chained_rows
from eventstore.store import EventStore
from referralnet.ops.verify import verify_stores
from tests.store.test_event_store import event

pytestmark = pytest.mark.infra


def anchor_paths(tmp_path: Path, sealed: bool = False) -> AnchorPaths:
    """The anchor under ``tmp_path``; ``sealed``: seals are checked with its seal key."""
    return AnchorPaths(
        tmp_path / "keys" / "checkpoint.key",
        tmp_path / "keys" / "checkpoint.pub",
        tmp_path / "anchors" / "checkpoints.jsonl",
        tmp_path / "keys" / "seal.key" if sealed else None,
    )


@pytest.fixture(autouse=True)
def sealing_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's appends are sealed with the key under ``tmp_path``, as a service's
    under its REFERRALNET_HOME would be."""
    monkeypatch.setenv("REFERRALNET_HOME", str(tmp_path))
    monkeypatch.delenv("REFERRALNET_SEAL_KEY_FILE", raising=False)
    return tmp_path


async def _streams(
    conn: psycopg.AsyncConnection[Any], store: EventStore, count: int
) -> list[uuid.UUID]:
    ids = []
    for _ in range(count):
        stream_id = uuid.uuid4()
        events: list[NewEvent] = [event(n, minutes=30 + n) for n in range(1, 5)]
        await store.append(conn, stream_id, 0, events[:2])  # two appends: two batches
        await store.append(conn, stream_id, 2, events[2:])
        ids.append(stream_id)
    return ids


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=[t.name for t in TAMPERINGS])
async def test_tampering_is_detected_and_named(
    conn: psycopg.AsyncConnection[Any], store: EventStore, tmp_path: Path, tampering: Tampering
) -> None:
    paths = anchor_paths(tmp_path, sealed=True)
    target, bystander = await _streams(conn, store, 2)
    await Checkpointer(paths, [store]).checkpoint(conn)
    before = await verify_stores(conn, paths, [store])
    assert before.clean, before.lines()
    assert before.checkpointed_events == before.events == 8

    await as_dba(conn)
    await tampering.apply(conn, store, target)
    await conn.execute("RESET session_replication_role")

    after = await verify_stores(conn, paths, [store])
    assert not after.clean
    kinds = {f.kind for f in after.findings if f.stream_id == target}
    assert tampering.expected in kinds, after.lines()
    assert not [f for f in after.findings if f.stream_id == bystander]
    # A checkpoint taken after the tampering blesses nothing of it: a changed head is
    # refused, and an edit behind an unchanged head adds nothing either.
    taken = await Checkpointer(paths, [store]).checkpoint(conn)
    assert not taken.written
    assert tampering.expected in {
        f.kind for f in (await verify_stores(conn, paths, [store])).findings
    }


async def test_disabling_the_trigger_is_another_way_in_and_is_caught_too(
    conn: psycopg.AsyncConnection[Any], store: EventStore, tmp_path: Path
) -> None:
    paths = anchor_paths(tmp_path, sealed=True)
    (target,) = await _streams(conn, store, 1)
    await Checkpointer(paths, [store]).checkpoint(conn)
    table = sql.SQL("{}.events").format(sql.Identifier(store.schema))
    await conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER append_only").format(table))
    await conn.execute(
        sql.SQL("UPDATE {} SET actor = 'someone-else' WHERE stream_id = %s AND version = 3").format(
            table
        ),
        (target,),
    )
    await conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER append_only").format(table))
    after = await verify_stores(conn, paths, [store])
    assert [(f.version, f.kind) for f in after.findings] == [(3, EDITED)]


async def test_events_after_the_checkpoint_are_vouched_for_by_the_chain_only(
    conn: psycopg.AsyncConnection[Any], store: EventStore, tmp_path: Path
) -> None:
    paths = anchor_paths(tmp_path, sealed=True)
    (stream_id,) = await _streams(conn, store, 1)
    await Checkpointer(paths, [store]).checkpoint(conn)
    await store.append(conn, stream_id, 4, [event(5)])
    checked = await verify_stores(conn, paths, [store])
    assert checked.clean and (checked.events, checked.after_checkpoint) == (5, 1)
    taken = await Checkpointer(paths, [store]).checkpoint(conn)
    assert taken.written and taken.added == {store.schema: 1}
    assert (await verify_stores(conn, paths, [store])).after_checkpoint == 0
    nothing = await Checkpointer(paths, [store]).checkpoint(conn)
    assert not nothing.written


def test_tamper_phase_detects_every_tampering(database_url: str, tmp_path: Path) -> None:
    result = run_tamper_phase(database_url, tmp_path)
    assert (result.detected, result.total) == (len(TAMPERINGS), len(TAMPERINGS)), result.details
    assert result.line == f"tamperings detected {len(TAMPERINGS)}/{len(TAMPERINGS)}"
    with psycopg.connect(database_url) as conn:  # the scratch store is gone
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tamper_%'"
        ).fetchone()
        assert left == (0,)


async def test_a_large_backlog_is_checkpointed_in_several_signed_lines(
    conn: psycopg.AsyncConnection[Any],
    store: EventStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("eventstore.checkpoint.MAX_ENTRIES", 3)
    paths = anchor_paths(tmp_path, sealed=True)
    await _streams(conn, store, 3)
    taken = await Checkpointer(paths, [store]).checkpoint(conn)
    assert taken.added == {store.schema: 12}
    checked = await verify_stores(conn, paths, [store])
    assert checked.clean and checked.checkpoints >= 3 and checked.checkpointed_events == 12


async def test_without_the_public_key_the_checkpoints_cannot_vouch(
    conn: psycopg.AsyncConnection[Any], store: EventStore, tmp_path: Path
) -> None:
    paths = anchor_paths(tmp_path, sealed=True)
    await _streams(conn, store, 1)
    await Checkpointer(paths, [store]).checkpoint(conn)
    paths.public_key.unlink()
    checked = await verify_stores(conn, paths, [store])
    assert not checked.clean and checked.anchor_problem
    assert checked.lines()[0].startswith("anchor: no checkpoint public key")


async def test_a_late_committer_below_the_watermark_is_picked_up_by_the_next_full_pass(
    conn: psycopg.AsyncConnection[Any],
    store: EventStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("eventstore.checkpoint.FULL_SCAN_EVERY", 3)
    paths = anchor_paths(tmp_path, sealed=True)
    checkpointer = Checkpointer(paths, [store])
    late_position = (await store.next_positions(conn, 1))[0]  # taken, committed later
    (stream_id,) = await _streams(conn, store, 1)
    assert (await checkpointer.checkpoint(conn)).added == {store.schema: 4}  # full pass
    await store.append(conn, stream_id, 4, [event(5)])
    assert (await checkpointer.checkpoint(conn)).added == {store.schema: 1}  # incremental
    late = uuid.uuid4()
    rows, _ = chained_rows(late, 0, GENESIS_HASH, [event(6)], [late_position])
    await store.insert_rows(conn, rows)
    assert (await checkpointer.checkpoint(conn)).added == {store.schema: 0}  # below it
    assert (await checkpointer.checkpoint(conn)).added == {store.schema: 1}  # full pass
    assert (await verify_stores(conn, paths, [store])).after_checkpoint == 0


async def test_a_forged_append_is_caught_with_no_checkpoint_at_all(
    conn: psycopg.AsyncConnection[Any], store: EventStore, tmp_path: Path
) -> None:
    """The window a checkpoint leaves open is closed for forgeries: the seal is due."""
    paths = anchor_paths(tmp_path, sealed=True)
    target, fresh = await _streams(conn, store, 2)
    await as_dba(conn)
    await forge_append(conn, store, target)
    assert fresh != target
    checked = await verify_stores(conn, paths, [store])
    assert checked.checkpoints == 0
    assert [(f.stream_id, f.version, f.kind) for f in checked.findings] == [(target, 5, FORGED)]
