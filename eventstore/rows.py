"""Events as rows of the ``events`` table: chained, serialised once, ready to insert.

Shared by the single append, group commit and the ``COPY`` bulk path, so the three
write exactly the same bytes and hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from eventstore.records import CHAIN_FORMAT, NewEvent, canonical_json, chain_link, micros
from eventstore.sealing import appending_seal_key, seal

Row = tuple[Any, ...]
"""One events row: the columns of ``ROW_COLUMNS``, position first."""

ROW_COLUMNS = (
    "position",
    "stream_id",
    "version",
    "event_id",
    "type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "actor",
    "correlation_id",
    "causation_id",
    "data",
    "prev_hash",
    "hash",
    "chain_format",
    "seal",
)
ROW_TYPES = (
    "int8",
    "uuid",
    "int4",
    "uuid",
    "text",
    "int4",
    "timestamptz",
    "timestamptz",
    "text",
    "uuid",
    "uuid",
    "jsonb",
    "bytea",
    "bytea",
    "int2",
    "bytea",
)


def _as_is(text: str) -> str:
    return text


def chained_rows(
    stream_id: UUID,
    version: int,
    prev_hash: bytes,
    events: Sequence[NewEvent],
    positions: Sequence[int],
    recorded_at: datetime | None = None,
    seal_key: bytes | None = None,
) -> tuple[list[Row], bytes]:
    """Rows for ``events`` after ``version`` at ``positions``, and the new head hash.

    Positions are taken from the identity sequence before the rows are hashed (format 2
    covers them); ``recorded_at`` defaults to now. The data is serialised once: the
    canonical text is both hashed and stored (jsonb accepts it as is), so the chain is
    verifiable from what the store returns. Each row is sealed with ``seal_key``
    (default: this process's, see ``eventstore.sealing``; none without a home).
    """
    key = appending_seal_key() if seal_key is None else seal_key
    recorded = datetime.now(UTC) if recorded_at is None else recorded_at
    stream, recorded_micros = str(stream_id), micros(recorded)
    rows: list[Row] = []
    for offset, (event, position) in enumerate(zip(events, positions, strict=True), start=1):
        text = canonical_json(event.data)
        digest = chain_link(
            prev_hash, position, stream, version + offset, event, recorded_micros, text
        )
        rows.append(
            (
                position,
                stream_id,
                version + offset,
                event.event_id,
                event.type,
                event.schema_version,
                event.occurred_at,
                recorded,
                event.actor,
                event.correlation_id,
                event.causation_id,
                Jsonb(text, dumps=_as_is),
                prev_hash,
                digest,
                CHAIN_FORMAT,
                None if key is None else seal(key, digest),
            )
        )
        prev_hash = digest
    return rows, prev_hash
