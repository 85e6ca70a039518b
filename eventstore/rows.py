"""Events as rows of the ``events`` table: chained, serialised once, ready to insert.

Shared by the single append, group commit and the ``COPY`` bulk path, so the three
write exactly the same bytes and hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from eventstore.records import NewEvent, canonical_json, link_hash

Row = tuple[Any, ...]
"""One events row: position (0 until assigned), then the columns of ``ROW_COLUMNS``."""

ROW_COLUMNS = (
    "stream_id",
    "version",
    "event_id",
    "type",
    "schema_version",
    "occurred_at",
    "actor",
    "correlation_id",
    "causation_id",
    "data",
    "prev_hash",
    "hash",
)
ROW_TYPES = (
    "uuid",
    "int4",
    "uuid",
    "text",
    "int4",
    "timestamptz",
    "text",
    "uuid",
    "uuid",
    "jsonb",
    "bytea",
    "bytea",
)


def _as_is(text: str) -> str:
    return text


def chained_rows(
    stream_id: UUID, version: int, prev_hash: bytes, events: Sequence[NewEvent]
) -> tuple[list[Row], bytes]:
    """Rows (position left as 0) for ``events`` after ``version``, and the new head hash.

    The data is serialised once: the canonical text is both hashed and stored (jsonb
    accepts it as is), so the chain is verifiable from what the store returns.
    """
    rows: list[Row] = []
    for offset, event in enumerate(events, start=1):
        text = canonical_json(event.data)
        digest = link_hash(prev_hash, stream_id, version + offset, event, text)
        rows.append(
            (
                0,
                stream_id,
                version + offset,
                event.event_id,
                event.type,
                event.schema_version,
                event.occurred_at,
                event.actor,
                event.correlation_id,
                event.causation_id,
                Jsonb(text, dumps=_as_is),
                prev_hash,
                digest,
            )
        )
        prev_hash = digest
    return rows, prev_hash
