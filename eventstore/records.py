"""The two shapes an event has in a store: about to be appended, and appended.

Kept apart from the SQL so that domain code can build ``NewEvent`` values without
importing psycopg, and so the hash chain can be computed (and re-checked by
``journey --verify``) from plain values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

GENESIS_HASH = bytes(32)


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


def link_hash(
    prev_hash: bytes,
    stream_id: UUID,
    version: int,
    event: NewEvent | StoredEvent,
    data_json: str | None = None,
) -> bytes:
    """Hash of ``event`` at ``version`` of ``stream_id``, chained to ``prev_hash``.

    Editing, deleting or reordering any event of a stream changes every hash after it,
    which is what ``journey --verify`` detects. Pass ``data_json`` when the caller already
    holds ``canonical_json(event.data)`` (bulk appends store that very text).
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


def hash_of(event: StoredEvent) -> bytes:
    """Recompute a stored event's hash from its content and recorded predecessor."""
    return link_hash(event.prev_hash, event.stream_id, event.version, event)


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
