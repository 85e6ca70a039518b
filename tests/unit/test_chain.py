"""The chain (format 2) covers every stored column; checkpoints name what changed."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventstore import chain
from eventstore.records import CHAIN_FORMAT, GENESIS_HASH, NewEvent, StoredEvent, hash_of
from eventstore.rows import ROW_COLUMNS, chained_rows
from eventstore.sealing import seal

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def stream(n: int = 4) -> list[StoredEvent]:
    stream_id = uuid.uuid4()
    events = [
        NewEvent(
            type="session-held",
            schema_version=2,
            data={"minutes": 30 + i, "mode": "phone"},
            actor="lw-1",
            occurred_at=T0 + timedelta(days=i),
            correlation_id=stream_id,
            causation_id=uuid.uuid4() if i else None,
        )
        for i in range(n)
    ]
    rows, _ = chained_rows(stream_id, 0, GENESIS_HASH, events, range(10, 10 + n))
    stored = []
    for row, new in zip(rows, events, strict=True):
        columns: dict[str, Any] = dict(zip(ROW_COLUMNS, row, strict=True))
        stored.append(StoredEvent(**{**columns, "data": new.data}))  # as read back
    return stored


CHANGES: dict[str, Any] = {
    "position": 99,
    "event_id": uuid.uuid4(),
    "type": "session-held-x",
    "schema_version": 1,
    "occurred_at": T0 + timedelta(microseconds=1),
    "recorded_at": T0,
    "actor": "lw-2",
    "correlation_id": uuid.uuid4(),
    "causation_id": uuid.uuid4(),
    "data": {"minutes": 600, "mode": "phone"},
    "chain_format": 1,
    "stream_id": uuid.uuid4(),
    "version": 7,
}


def test_every_stored_column_is_covered() -> None:
    covered = set(ROW_COLUMNS) - {"prev_hash", "hash", "seal"}  # the chain's own
    assert covered == set(CHANGES)
    event = stream(2)[1]
    assert event.chain_format == CHAIN_FORMAT and hash_of(event) == event.hash
    for column, value in CHANGES.items():
        edited = dataclasses.replace(event, **{column: value})
        assert hash_of(edited) != event.hash, f"{column} is not covered by the chain"


def test_a_removed_causation_is_not_the_same_as_none() -> None:
    event = stream(2)[1]
    assert hash_of(dataclasses.replace(event, causation_id=None)) != event.hash


def test_intact_stream_has_no_findings_and_extends_a_prefix_checkpoint() -> None:
    events = stream()
    assert chain.check_chain("s", events) == []
    prefix = [(e.event_id, e.hash) for e in events[:2]]
    assert chain.check_against("s", events[0].stream_id, events, prefix) == []


def _at(event: StoredEvent, version: int) -> StoredEvent:
    return dataclasses.replace(event, version=version)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda ev: ev[:2], chain.DELETED_LAST),
        (lambda ev: [], chain.DELETED_STREAM),
        (lambda ev: [ev[0], ev[2], ev[3]], chain.DELETED),
        (lambda ev: [_at(ev[1], 1), _at(ev[0], 2), *ev[2:]], chain.BROKEN_LINK),
        (lambda ev: [_at(ev[1], 1), _at(ev[0], 2), *ev[2:]], chain.REORDERED),
        (lambda ev: [ev[0], dataclasses.replace(ev[1], actor="x"), *ev[2:]], chain.EDITED),
    ],
)
def test_unrecomputed_tampering_is_named(change: Any, kind: str) -> None:
    events = stream()
    checkpointed = [(e.event_id, e.hash) for e in events]
    tampered = change(events)
    found = chain.check_chain("s", tampered) + chain.check_against(
        "s", events[0].stream_id, tampered, checkpointed
    )
    assert kind in {f.kind for f in found}


def test_a_downgraded_format_is_named() -> None:
    events = stream()
    events[2] = dataclasses.replace(events[2], chain_format=1)
    assert chain.check_chain("s", events)[0].kind == chain.DOWNGRADED
    events[2] = dataclasses.replace(events[2], chain_format=7)
    assert chain.check_chain("s", events)[0].kind == chain.DOWNGRADED


def test_finding_line_is_one_line_without_content() -> None:
    f = chain.Finding("outcomes", uuid.uuid4(), 3, chain.DELETED_LAST, "versions 3..4 gone")
    assert "\n" not in f.line() and f.line().startswith(f"outcomes {f.stream_id} v3: deleted-last")


def test_seals_must_hold_and_are_due_after_the_first() -> None:
    key = b"k" * 32
    events = [dataclasses.replace(e, seal=seal(key, e.hash)) for e in stream()]
    assert chain.check_chain("s", events, seal_key=key) == []
    unsealed = [*events[:3], dataclasses.replace(events[3], seal=None)]
    assert chain.check_chain("s", unsealed, seal_key=key)[0].kind == chain.FORGED
    wrong = [*events[:3], dataclasses.replace(events[3], seal=seal(b"x" * 32, events[3].hash))]
    assert chain.check_chain("s", wrong, seal_key=key)[0].kind == chain.FORGED
    never_sealed = [dataclasses.replace(e, seal=None) for e in events]
    assert chain.check_chain("s", never_sealed, seal_key=key) == []  # before sealing began
    due = chain.check_chain("s", never_sealed, seal_key=key, sealed_from=events[2].position)
    assert (due[0].version, due[0].kind) == (3, chain.FORGED)
    assert chain.check_chain("s", unsealed) == []  # no key: seals are not judged
