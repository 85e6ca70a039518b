"""``journey --verify`` and ``verify --all`` catch what a DBA can do to the running stores.

The whole system runs (``system``); the relay worker signs checkpoints into the anchor
under REFERRALNET_HOME by itself. Each tampering of ``bench.tamper`` is done to the
outcomes stream of its own referral (two sessions and a close) through a real DBA path
(``session_replication_role = replica``); every referral verifies before, each is named
by its kind after, and every stream is put back as it was so the shared system stays
intact (and verifies clean again).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from bench.tamper import TAMPERINGS, as_dba, insert
from eventstore.anchor import AnchorPaths, read_anchor
from eventstore.records import StoredEvent
from referralnet.system import RunningSystem
from services.outcomes.store import STORE as OUTCOMES
from tests.conftest import Alliance, wait_until
from tests.ops.conftest import accepted_referral, add_session, query, run_cli, view_of

pytestmark = pytest.mark.infra


@contextmanager
def tampering(system: RunningSystem) -> Iterator[psycopg.Connection]:
    """A connection the append-only trigger does not stop (as a rogue DBA's would be)."""
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        yield conn


def _closed_referral_with_two_sessions(alliance: Alliance) -> str:
    rid, service = accepted_referral(alliance)
    add_session(service, rid, minutes=40, day=8)
    add_session(service, rid, minutes=25, day=9)
    closed = service.post(
        f"/referrals/{rid}/close", json={"reason": "completed", "closed_at": "2026-01-10T09:00:00Z"}
    )
    assert closed.status_code == 201, closed.text
    # Published (the view has it all), so the outbox no longer points at these rows.
    wait_until(
        lambda: (v := view_of(service, rid)) and v["sessions"] == 2 and v["status"] == "closed",
        timeout=60,
    )
    return rid


def _verify(system: RunningSystem, rid: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(system, "journey", rid, "--verify", "--json")
    return result.exit_code, json.loads(result.stdout)


def _anchored(system: RunningSystem, rid: str, events: int) -> bool:
    state = read_anchor(AnchorPaths.under(system.settings.home))
    return state is not None and len(state.stream("outcomes", uuid.UUID(rid))) == events


def test_intact_journey_verifies_against_automatic_checkpoints(
    system: RunningSystem, alliance: Alliance
) -> None:
    rid = _closed_referral_with_two_sessions(alliance)
    # Nobody asked for a checkpoint: the relay worker signs one within a second or so.
    wait_until(lambda: _anchored(system, rid, 3), timeout=30)
    # Every service sealed what it appended (the key never reaches the database).
    for schema in ("intake", "routing", "outcomes"):
        unsealed = query(
            system,
            f"SELECT count(*) FROM {schema}.events WHERE stream_id = %s AND seal IS NULL",
            (rid,),
        )
        assert unsealed == [(0,)], schema
    result = run_cli(system, "journey", rid, "--verify")
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    code, body = _verify(system, rid)
    assert code == 0 and body["verified"] is True
    assert {"referral-created", "referral-routed", "session-held", "referral-closed"} <= {
        s["type"] for s in body["steps"]
    }


async def _stream(url: str, rid: str) -> list[StoredEvent]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await OUTCOMES.read_stream(conn, uuid.UUID(rid))


async def _apply(url: str, pairs: list[tuple[Any, str]]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await as_dba(conn)
        for t, rid in pairs:
            await t.apply(conn, OUTCOMES, uuid.UUID(rid))


async def _restore(url: str, originals: dict[str, list[StoredEvent]]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await as_dba(conn)
        for rid, events in originals.items():
            await conn.execute("DELETE FROM outcomes.events WHERE stream_id = %s", (rid,))
            await insert(conn, OUTCOMES, events)


def test_every_dba_tampering_is_named_by_journey_and_verify_all(
    system: RunningSystem, alliance: Alliance
) -> None:
    rids = [_closed_referral_with_two_sessions(alliance) for _ in TAMPERINGS]
    taken = run_cli(system, "verify", "--checkpoint")
    assert taken.exit_code == 0, taken.output
    for rid in rids:
        assert _anchored(system, rid, 3)
        assert _verify(system, rid)[0] == 0
    clean = run_cli(system, "verify", "--all")
    assert clean.exit_code == 0 and "verified" in clean.output, clean.output

    url = system.database_url
    originals = {rid: asyncio.run(_stream(url, rid)) for rid in rids}
    asyncio.run(_apply(url, list(zip(TAMPERINGS, rids, strict=True))))
    try:
        for t, rid in zip(TAMPERINGS, rids, strict=True):
            code, body = _verify(system, rid)
            assert code == 1 and body["verified"] is False, (t.name, body)
            kinds = {b["kind"] for b in body["breaks"] if b["service"] == "outcomes"}
            assert t.expected in kinds, (t.name, body["breaks"])
        text = run_cli(system, "journey", rids[0], "--verify")
        assert text.exit_code == 1 and "TAMPERED" in text.output
        everything = run_cli(system, "verify", "--all")
        assert everything.exit_code == 1, everything.output
        for t, rid in zip(TAMPERINGS, rids, strict=True):
            assert f"outcomes {rid}" in everything.output and t.expected in everything.output
        as_json = json.loads(run_cli(system, "verify", "--all", "--json").stdout)
        found = {(f["stream_id"], f["kind"]) for f in as_json["verification"]["findings"]}
        for t, rid in zip(TAMPERINGS, rids, strict=True):
            assert (rid, t.expected) in found
        # A checkpoint now refuses the rewritten streams instead of blessing them.
        refused = run_cli(system, "verify", "--checkpoint")
        assert refused.exit_code == 1 and "refused" in refused.output
    finally:  # put the shared system's store back as it was
        asyncio.run(_restore(url, originals))
    for rid in rids:
        assert _verify(system, rid)[0] == 0
    assert run_cli(system, "verify", "--all").exit_code == 0


def test_a_referral_deleted_from_every_store_is_still_reported(
    system: RunningSystem, alliance: Alliance
) -> None:
    rid = _closed_referral_with_two_sessions(alliance)
    assert run_cli(system, "verify", "--checkpoint").exit_code == 0
    removed: dict[str, list[tuple[Any, ...]]] = {}
    with tampering(system) as conn:
        for schema in ("intake", "routing", "outcomes"):
            removed[schema] = conn.execute(
                f"DELETE FROM {schema}.events WHERE stream_id = %s RETURNING *", (rid,)
            ).fetchall()
        try:
            code, body = _verify(system, rid)
            assert code == 1 and body["steps"] == []
            assert {b["service"] for b in body["breaks"]} == {"intake", "routing", "outcomes"}
            assert {b["kind"] for b in body["breaks"]} == {"deleted-stream"}
        finally:
            for schema, rows in removed.items():
                for row in rows:
                    conn.execute(
                        f"INSERT INTO {schema}.events OVERRIDING SYSTEM VALUE VALUES "
                        f"({', '.join(['%s'] * len(row))})",
                        tuple(
                            psycopg.types.json.Jsonb(v) if isinstance(v, dict) else v for v in row
                        ),
                    )
    assert _verify(system, rid)[0] == 0


def test_bad_arguments_exit_2(system: RunningSystem) -> None:
    unknown = run_cli(system, "journey", str(uuid.uuid4()), "--verify")
    assert unknown.exit_code == 2 and "no referral" in unknown.output
    malformed = run_cli(system, "journey", "not-a-uuid")
    assert malformed.exit_code == 2 and "not a referral id" in malformed.output
    neither = run_cli(system, "verify")
    assert neither.exit_code == 2 and "--all" in neither.output
    assert len(neither.output.strip().splitlines()) == 1
