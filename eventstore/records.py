"""The two shapes an event has in a store: about to be appended, and appended.

Kept apart from the SQL so that domain code can build ``NewEvent`` values without
importing psycopg, and so the hash chain can be computed (and re-checked by
``journey --verify``) from plain values.

Two chain formats exist; each event records its own in ``chain_format``:

- format 1 (events written before 2026-11): covers stream, version, event id, type,
  schema version, occurred_at, actor and data;
- format 2 (``CHAIN_FORMAT``, every event written since): covers every stored column,
  i.e. format 1's plus position, recorded_at, correlation id, causation id and the
  format number itself, so a DBA cannot edit any of them, or downgrade an event to
  format 1, without the hash changing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

GENESIS_HASH = bytes(32)
CHAIN_FORMAT = 2
"""The format every new event is chained with (see the module docstring)."""


@dataclass(frozen=True)
class NewEvent:
    """An event a command decided on, not yet stored (no version, no hash yet)."""

    type: str
    schema_version: int
    data: dict[str, Any]
    actor: str
    occurred_at: datetime
    correlation_id: UUID
    causation_id: UUID | None = None
    event_id: UUID = field(default_factory=uuid4)


@dataclass(frozen=True)
class StoredEvent:
    """An event as the system of record holds it: versioned within its stream, chained."""

    position: int
    stream_id: UUID
    version: int
    event_id: UUID
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    correlation_id: UUID
    causation_id: UUID | None
    data: dict[str, Any]
    prev_hash: bytes
    hash: bytes
    chain_format: int = CHAIN_FORMAT
    seal: bytes | None = None
    """MAC of ``hash`` with the services' seal key (``eventstore.sealing``)."""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""What ``json.dumps`` with these options builds on every call; built once (bulk appends)."""


def _jsonb_numbers(value: Any) -> Any:
    """Spell numbers as jsonb gives them back: an integral float (3.0, 1e16, -0.0) may
    return as an int, so it is hashed as one on both sides of the round trip."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _jsonb_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonb_numbers(v) for v in value]
    return value


def canonical_json(data: dict[str, Any]) -> str:
    """One spelling per value, so a hash over it survives a jsonb round trip."""
    return _CANONICAL.encode(_jsonb_numbers(data))


def link_hash_v1(
    prev_hash: bytes,
    stream_id: UUID,
    version: int,
    event: NewEvent | StoredEvent,
    data_json: str | None = None,
) -> bytes:
    """Format 1 hash of ``event`` at ``version`` of ``stream_id``, chained to ``prev_hash``.

    Kept so that events stored before format 2 still verify; new events use
    ``link_hash``.
    """
    return chain_hash_json(
        prev_hash,
        stream_id=stream_id,
        version=version,
        event_id=event.event_id,
        type=event.type,
        schema_version=event.schema_version,
        occurred_at=event.occurred_at,
        actor=event.actor,
        data_json=canonical_json(event.data) if data_json is None else data_json,
    )


def chain_hash_json(
    prev_hash: bytes,
    *,
    stream_id: UUID,
    version: int,
    event_id: UUID,
    type: str,
    schema_version: int,
    occurred_at: datetime,
    actor: str,
    data_json: str,
) -> bytes:
    """The chain hash over already-canonical data. ``occurred_at`` is hashed as epoch
    microseconds because its text form depends on the session time zone."""
    micros = round(occurred_at.timestamp() * 1_000_000)
    content = "\x1f".join(
        (
            str(stream_id),
            str(version),
            str(event_id),
            type,
            str(schema_version),
            str(micros),
            actor,
            data_json,
        )
    )
    return hashlib.sha256(prev_hash + content.encode()).digest()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Exact epoch microseconds (a float timestamp can be off by one at this scale)."""
    return (moment - _EPOCH) // _MICROSECOND


def link_hash(
    prev_hash: bytes,
    *,
    position: int,
    stream_id: UUID,
    version: int,
    event: NewEvent | StoredEvent,
    recorded_at: datetime,
    data_json: str | None = None,
) -> bytes:
    """Format 2 hash of ``event`` stored at ``position`` as ``version`` of ``stream_id``.

    Covers every stored column but the chain's own two (``prev_hash`` is chained in,
    ``hash`` is the result). Editing, deleting, inserting or reordering any event of a
    stream changes every hash after it; checkpoints of the heads (``eventstore.anchor``)
    are what make a recomputed chain detectable. Pass ``data_json`` when the caller
    already holds ``canonical_json(event.data)`` (appends store that very text).
    """
    return chain_link(
        prev_hash,
        position,
        str(stream_id),
        version,
        event,
        micros(recorded_at),
        canonical_json(event.data) if data_json is None else data_json,
    )


def chain_link(
    prev_hash: bytes,
    position: int,
    stream: str,
    version: int,
    event: NewEvent | StoredEvent,
    recorded_micros: int,
    data_json: str,
) -> bytes:
    """``link_hash`` with the per-append parts already spelled (appends hash many events
    of one stream recorded at one moment). Numbers, UUIDs and times cannot contain the
    separator; the two free-text columns are length-prefixed so that no value can move
    a field boundary; the data comes last."""
    kind, actor, causation = event.type, event.actor, event.causation_id
    content = (
        f"rn-chain/{CHAIN_FORMAT}\x1f{position}\x1f{stream}\x1f{version}\x1f{event.event_id}"
        f"\x1f{len(kind)}:{kind}\x1f{event.schema_version}\x1f{micros(event.occurred_at)}"
        f"\x1f{recorded_micros}\x1f{len(actor)}:{actor}\x1f{event.correlation_id}"
        f"\x1f{'~' if causation is None else causation}\x1f{data_json}"
    )
    return hashlib.sha256(prev_hash + content.encode()).digest()


def hash_of(event: StoredEvent) -> bytes:
    """Recompute a stored event's hash from its content and recorded predecessor, by the
    rule of the chain format it records (an unknown format never matches)."""
    if event.chain_format == 1:
        return link_hash_v1(event.prev_hash, event.stream_id, event.version, event)
    if event.chain_format == CHAIN_FORMAT:
        return link_hash(
            event.prev_hash,
            position=event.position,
            stream_id=event.stream_id,
            version=event.version,
            event=event,
            recorded_at=event.recorded_at,
        )
    return b""


def new_event(
    model: Any,
    *,
    actor: str,
    occurred_at: datetime,
    correlation_id: UUID,
    causation_id: UUID | None = None,
) -> NewEvent:
    """Turn a validated schema model into an event to append (type and version from it)."""
    from schemas.registry import encode

    event_type, version, data = encode(model)
    return NewEvent(
        type=event_type,
        schema_version=version,
        data=data,
        actor=actor,
        occurred_at=occurred_at,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
