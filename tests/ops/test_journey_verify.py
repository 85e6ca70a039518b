"""``journey --verify`` catches an edited, a deleted and a reordered event in a store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from referralnet.system import RunningSystem
from tests.conftest import Alliance, wait_until
from tests.ops.conftest import accepted_referral, add_session, run_cli, view_of

pytestmark = pytest.mark.infra


@contextmanager
def tampering(system: RunningSystem) -> Iterator[psycopg.Connection]:
    """A connection the append-only trigger does not stop (as a rogue DBA's would be)."""
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        yield conn


def _referral_with_two_sessions(alliance: Alliance) -> str:
    rid, service = accepted_referral(alliance)
    add_session(service, rid, minutes=40, day=8)
    add_session(service, rid, minutes=25, day=9)
    # Published (the view has both), so the outbox no longer points at these rows.
    wait_until(lambda: (v := view_of(service, rid)) and v["sessions"] == 2, timeout=60)
    return rid


def _verify(system: RunningSystem, rid: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(system, "journey", rid, "--verify", "--json")
    return result.exit_code, json.loads(result.stdout)


def test_intact_journey_verifies(system: RunningSystem, alliance: Alliance) -> None:
    rid = _referral_with_two_sessions(alliance)
    result = run_cli(system, "journey", rid, "--verify")
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    code, body = _verify(system, rid)
    assert code == 0 and body["verified"] is True
    assert {"referral-created", "referral-routed", "session-held"} <= {
        s["type"] for s in body["steps"]
    }


def test_edited_deleted_and_reordered_events_are_caught(
    system: RunningSystem, alliance: Alliance
) -> None:
    edited, deleted, swapped = (_referral_with_two_sessions(alliance) for _ in range(3))
    with tampering(system) as conn:
        original = conn.execute(
            "SELECT data FROM outcomes.events WHERE stream_id = %s AND version = 1", (edited,)
        ).fetchone()
        assert original is not None
        conn.execute(
            "UPDATE outcomes.events SET data = jsonb_set(data, '{duration_minutes}', '400') "
            "WHERE stream_id = %s AND version = 1",
            (edited,),
        )
        removed = conn.execute(
            "DELETE FROM outcomes.events WHERE stream_id = %s AND version = 1 RETURNING *",
            (deleted,),
        ).fetchone()
        assert removed is not None
        for old, new in ((1, 101), (2, 1), (101, 2)):
            conn.execute(
                "UPDATE outcomes.events SET version = %s WHERE stream_id = %s AND version = %s",
                (new, swapped, old),
            )
        try:
            for rid, problem in (
                (edited, "edited"),
                (deleted, "version 1 is missing"),
                (swapped, "does not link"),
            ):
                code, body = _verify(system, rid)
                assert code == 1, body
                assert body["verified"] is False
                [found] = body["breaks"]
                assert found["service"] == "outcomes" and found["version"] == 1
                assert problem in found["problem"]
            text = run_cli(system, "journey", edited, "--verify")
            assert text.exit_code == 1 and "TAMPERED" in text.output
        finally:  # put the shared system's store back as it was
            conn.execute(
                "UPDATE outcomes.events SET data = %s WHERE stream_id = %s AND version = 1",
                (psycopg.types.json.Jsonb(original[0]), edited),
            )
            conn.execute(
                "INSERT INTO outcomes.events OVERRIDING SYSTEM VALUE VALUES "
                f"({', '.join(['%s'] * len(removed))})",
                tuple(psycopg.types.json.Jsonb(v) if isinstance(v, dict) else v for v in removed),
            )
            for old, new in ((1, 101), (2, 1), (101, 2)):
                conn.execute(
                    "UPDATE outcomes.events SET version = %s WHERE stream_id = %s AND version = %s",
                    (new, swapped, old),
                )
    for rid in (edited, deleted, swapped):
        assert _verify(system, rid)[0] == 0


def test_unknown_or_malformed_referral_exits_2(system: RunningSystem) -> None:
    unknown = run_cli(system, "journey", str(uuid.uuid4()), "--verify")
    assert unknown.exit_code == 2 and "no referral" in unknown.output
    malformed = run_cli(system, "journey", "not-a-uuid")
    assert malformed.exit_code == 2 and "not a referral id" in malformed.output
