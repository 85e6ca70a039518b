"""``apply_batch`` on a real PostgreSQL: positions, dedup, gaps and dead letters in one txn.

A small projection counts what it applies (in memory and in its own table), so each test
can say exactly how many times an event took effect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from bus.tracking import (
    STREAM_VERSION,
    BatchResult,
    Outgoing,
    Record,
    Rejected,
    apply_batch,
    keep_start,
    stored_positions,
)
from schemas.envelope import CloudEvent, to_kafka
from schemas.registry import dataschema_uri

pytestmark = pytest.mark.infra

TOPIC = "referral-events"
PARTITION = 3
T0 = datetime(2026, 1, 8, 10, 0, tzinfo=UTC)


def session_event(
    referral: UUID, version: int, *, minutes: int = 30, source: str = "/services/outcomes"
) -> CloudEvent:
    return CloudEvent(
        id=uuid4(),
        source=source,
        type="session-held",
        subject=str(referral),
        time=T0 + timedelta(hours=version),
        dataschema=dataschema_uri("session-held", 2),
        data={
            "referral_id": str(referral),
            "session_id": str(uuid4()),
            "kind": "longer-appointment",
            "duration_minutes": minutes,
            "mode": "in-person",
            "held_at": (T0 + timedelta(hours=version)).isoformat(),
        },
        streamversion=version,
        correlationid=referral,
        causationid=None,
        actor="lw-test",
    )


def record(event: CloudEvent, offset: int) -> Record:
    key, value, headers = to_kafka(event)
    return Record(TOPIC, PARTITION, offset, key, value, headers)


def records(events: Sequence[CloudEvent], first_offset: int = 0) -> list[Record]:
    return [record(e, first_offset + i) for i, e in enumerate(events)]


@dataclass
class CountingProjection:
    """Writes one row per application and remembers every call."""

    schema: str
    consumer: str = "test-consumer"
    interested_in: frozenset[str] | None = None
    may_reject: bool = True
    ordering: str = STREAM_VERSION
    applied: list[UUID] = field(default_factory=list)
    reject: set[UUID] = field(default_factory=set)
    explode: set[UUID] = field(default_factory=set)

    async def apply(
        self, conn: psycopg.AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]:
        await conn.execute(
            sql.SQL("INSERT INTO {}.seen (event_id, minutes) VALUES (%s, %s)").format(
                sql.Identifier(self.schema)
            ),
            (event.id, model.duration_minutes),
        )
        if event.id in self.reject:
            raise Rejected(f"session {model.session_id} cannot be applied here")
        if event.id in self.explode:
            raise RuntimeError("the projection's database went away")
        self.applied.append(event.id)
        return [Outgoing("org.somebody", event)]


async def seen(conn: psycopg.AsyncConnection[Any], p: CountingProjection) -> list[UUID]:
    cur = await conn.execute(
        sql.SQL("SELECT event_id FROM {}.seen ORDER BY event_id").format(sql.Identifier(p.schema))
    )
    return [r[0] for r in await cur.fetchall()]


async def position(conn: psycopg.AsyncConnection[Any], p: CountingProjection) -> int | None:
    return (await stored_positions(conn, p.schema, p.consumer)).get((TOPIC, PARTITION))


async def dead_letters(
    conn: psycopg.AsyncConnection[Any], p: CountingProjection
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        sql.SQL(
            'SELECT topic, partition, "offset", key, value, headers, reason, consumer '
            "FROM {}.dead_letter_outbox ORDER BY id"
        ).format(sql.Identifier(p.schema))
    )
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


async def applied_version(
    conn: psycopg.AsyncConnection[Any], p: CountingProjection, referral: UUID
) -> int | None:
    cur = await conn.execute(
        sql.SQL("SELECT version FROM {}.applied WHERE stream_id = %s").format(
            sql.Identifier(p.schema)
        ),
        (str(referral),),
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def apply(
    conn: psycopg.AsyncConnection[Any], p: CountingProjection, batch: Sequence[Record]
) -> tuple[BatchResult, list[Outgoing]]:
    published: list[Outgoing] = []

    async def publish(outgoing: Sequence[Outgoing]) -> None:
        published.extend(outgoing)

    result = await apply_batch(conn, p, TOPIC, PARTITION, batch, publish)
    return result, published


async def test_applies_in_order_and_advances_the_position(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    rid = uuid4()
    events = [session_event(rid, v) for v in (1, 2, 3)]
    result, published = await apply(conn, projection, records(events))
    assert (result.applied, result.duplicates, result.dead) == (3, 0, 0)
    assert result.next_offset == 3 and result.seek_to is None
    assert projection.applied == [e.id for e in events]
    assert [o.event.id for o in published] == [e.id for e in events]
    assert await position(conn, projection) == 3
    assert await applied_version(conn, projection, rid) == 3

    more = [session_event(rid, 4)]
    result, _ = await apply(conn, projection, records(more, first_offset=3))
    assert result.applied == 1 and await position(conn, projection) == 4


async def test_same_records_delivered_twice_are_applied_once(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    batch = records([session_event(uuid4(), 1), session_event(uuid4(), 1)])
    await apply(conn, projection, batch)
    result, published = await apply(conn, projection, batch)  # e.g. after a crash
    assert (result.applied, result.duplicates) == (0, 2)
    assert published == [] and result.next_offset is None
    assert len(projection.applied) == 2 and len(await seen(conn, projection)) == 2
    assert await position(conn, projection) == 2


async def test_same_event_at_two_offsets_is_applied_once(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """A producer retry or ``republish`` puts the same event at a new offset."""
    rid = uuid4()
    e1, e2 = session_event(rid, 1), session_event(rid, 2)
    batch = [record(e1, 0), record(e2, 1), record(e1, 2), record(e2, 3)]
    result, published = await apply(conn, projection, batch)
    assert (result.applied, result.duplicates, result.dead) == (2, 2, 0)
    assert projection.applied == [e1.id, e2.id]
    assert [o.event.id for o in published] == [e1.id, e2.id]
    assert await position(conn, projection) == 4

    # ... and again in a later batch, further along the partition.
    result, _ = await apply(conn, projection, [record(e1, 4), record(e2, 5)])
    assert (result.applied, result.duplicates) == (0, 2)
    assert await position(conn, projection) == 6
    assert sorted(await seen(conn, projection)) == sorted([e1.id, e2.id])


async def test_streams_are_deduplicated_per_source(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Version 1 from routing is not a duplicate of version 1 from outcomes."""
    rid = uuid4()
    a = session_event(rid, 1, source="/services/outcomes")
    b = session_event(rid, 1, source="/services/routing")
    result, _ = await apply(conn, projection, records([a, b]))
    assert result.applied == 2


async def test_records_before_the_position_are_skipped(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    events = [session_event(uuid4(), 1) for _ in range(5)]
    await apply(conn, projection, records(events[:3]))
    projection.applied.clear()
    # A fetch that overlaps what was applied: offsets 1..4, of which 1 and 2 are old.
    result, _ = await apply(conn, projection, records(events[1:], first_offset=1))
    assert (result.applied, result.duplicates) == (2, 2)
    assert projection.applied == [events[3].id, events[4].id]
    assert await position(conn, projection) == 5


async def test_a_gap_asks_for_a_seek_and_applies_nothing(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    await apply(conn, projection, records([session_event(uuid4(), 1)]))
    assert await position(conn, projection) == 1
    later = records([session_event(uuid4(), 1), session_event(uuid4(), 1)], first_offset=5)
    result, published = await apply(conn, projection, later)
    assert result.seek_to == 1
    assert (result.applied, result.next_offset, published) == (0, None, [])
    assert len(projection.applied) == 1 and len(await seen(conn, projection)) == 1
    assert await position(conn, projection) == 1


async def test_malformed_and_invalid_records_are_parked_and_the_good_applied(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    good1, good2 = session_event(uuid4(), 1), session_event(uuid4(), 1)
    bad_json = record(session_event(uuid4(), 1), 1)
    bad_json = Record(TOPIC, PARTITION, 1, bad_json.key, b"{not json", bad_json.headers)
    no_type = record(session_event(uuid4(), 1), 2)
    no_type = Record(
        TOPIC,
        PARTITION,
        2,
        no_type.key,
        no_type.value,
        [(k, v) for k, v in no_type.headers if k != "ce_type"],
    )
    invalid = session_event(uuid4(), 1, minutes=601)  # beyond the schema's 600
    batch = [
        record(good1, 0),
        bad_json,
        no_type,
        record(invalid, 3),
        record(good2, 4),
    ]
    result, published = await apply(conn, projection, batch)

    assert (result.applied, result.dead, result.duplicates) == (2, 3, 0)
    assert projection.applied == [good1.id, good2.id]
    assert [o.event.id for o in published] == [good1.id, good2.id]
    assert sorted(await seen(conn, projection)) == sorted([good1.id, good2.id])
    assert await position(conn, projection) == 5

    parked = await dead_letters(conn, projection)
    assert [d["offset"] for d in parked] == [1, 2, 3]
    assert {d["topic"] for d in parked} == {TOPIC}
    assert {d["partition"] for d in parked} == {PARTITION}
    assert {d["consumer"] for d in parked} == {projection.consumer}
    reasons = [d["reason"] for d in parked]
    assert reasons[0].startswith("value: is not valid JSON")
    assert reasons[1].startswith("ce_type: required header is missing")
    assert "duration_minutes" in reasons[2] and "600" in reasons[2]
    # The parked copy is the record as it was, headers included, ready to publish.
    assert bytes(parked[0]["value"]) == b"{not json"
    assert bytes(parked[2]["key"]) == invalid.subject.encode()
    headers = dict(parked[2]["headers"])
    assert headers["ce_id"] == str(invalid.id)
    assert json.loads(bytes(parked[2]["value"]))["duration_minutes"] == 601


async def test_a_rejected_event_is_parked_and_leaves_nothing_half_applied(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    rid = uuid4()
    ok1, refused, ok2 = session_event(uuid4(), 1), session_event(rid, 1), session_event(uuid4(), 1)
    projection.reject.add(refused.id)
    result, published = await apply(conn, projection, records([ok1, refused, ok2]))

    assert (result.applied, result.dead) == (2, 1)
    assert [o.event.id for o in published] == [ok1.id, ok2.id]
    # The projection's insert for the refused event was rolled back to the savepoint,
    # and so was its stream version: it was never applied.
    assert sorted(await seen(conn, projection)) == sorted([ok1.id, ok2.id])
    assert await applied_version(conn, projection, rid) is None
    (parked,) = await dead_letters(conn, projection)
    assert parked["offset"] == 1
    assert parked["reason"] == f"session {refused.data['session_id']} cannot be applied here"
    assert await position(conn, projection) == 3


async def test_an_unexpected_error_rolls_back_the_whole_batch(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    await apply(conn, projection, records([session_event(uuid4(), 1)]))
    before = await seen(conn, projection)
    bad_json = record(session_event(uuid4(), 1), 2)
    first, boom = session_event(uuid4(), 1), session_event(uuid4(), 1)
    projection.explode.add(boom.id)
    batch = [
        record(first, 1),
        Record(TOPIC, PARTITION, 2, bad_json.key, b"nope", bad_json.headers),
        record(boom, 3),
    ]
    published: list[Outgoing] = []

    async def publish(outgoing: Sequence[Outgoing]) -> None:
        published.extend(outgoing)

    with pytest.raises(RuntimeError, match="went away"):
        await apply_batch(conn, projection, TOPIC, PARTITION, batch, publish)

    assert published == []
    assert await seen(conn, projection) == before  # ``first`` was rolled back too
    assert await position(conn, projection) == 1
    assert await dead_letters(conn, projection) == []
    assert await applied_version(conn, projection, UUID(first.subject)) is None

    # Re-delivered once the cause is gone, the same batch applies in full.
    projection.explode.clear()
    result, published = await apply(conn, projection, batch)
    assert (result.applied, result.dead) == (2, 1)
    assert await position(conn, projection) == 4


async def test_a_failing_publish_rolls_back_position_and_writes(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Outgoing events are acknowledged before the commit; no ack, no commit."""
    event = session_event(uuid4(), 1)

    async def broker_down(outgoing: Sequence[Outgoing]) -> None:
        raise ConnectionError("broker unavailable")

    with pytest.raises(ConnectionError):
        await apply_batch(conn, projection, TOPIC, PARTITION, [record(event, 0)], broker_down)
    assert await seen(conn, projection) == []
    assert await position(conn, projection) in (None, 0)
    result, published = await apply(conn, projection, [record(event, 0)])
    assert result.applied == 1 and [o.event.id for o in published] == [event.id]


async def test_a_failed_first_batch_keeps_its_start_for_out_of_order_redelivery(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """A new consumer's first batch fails; the client then hands over a later record
    first (faust had buffered it). With the start kept, that is a gap, not a start."""
    events = [session_event(uuid4(), 1) for _ in range(3)]

    async def broker_down(outgoing: Sequence[Outgoing]) -> None:
        raise ConnectionError("broker unavailable")

    with pytest.raises(ConnectionError):
        await apply_batch(conn, projection, TOPIC, PARTITION, records(events[:2]), broker_down)
    await keep_start(conn, projection, TOPIC, {PARTITION: 0})
    later, _ = await apply(conn, projection, [record(events[2], 2)])
    assert (later.seek_to, later.applied) == (0, 0)
    assert await seen(conn, projection) == []
    result, _ = await apply(conn, projection, records(events))
    assert result.applied == 3 and await position(conn, projection) == 3


async def test_positions_are_kept_per_consumer_and_partition(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    other = CountingProjection(schema=projection.schema, consumer="another-consumer")
    await apply(conn, projection, records([session_event(uuid4(), 1) for _ in range(3)]))
    e = session_event(uuid4(), 1)
    await apply_batch(conn, projection, TOPIC, 0, [Record(TOPIC, 0, 0, *to_kafka(e))])
    assert await stored_positions(conn, projection.schema, projection.consumer) == {
        (TOPIC, PARTITION): 3,
        (TOPIC, 0): 1,
    }
    assert await stored_positions(conn, other.schema, other.consumer) == {}


@pytest.mark.parametrize("may_reject", [True, False])
async def test_dedup_holds_with_and_without_savepoints(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection, may_reject: bool
) -> None:
    projection.may_reject = may_reject
    rid = uuid4()
    e1, e2 = session_event(rid, 1), session_event(rid, 2)
    result, _ = await apply(conn, projection, [record(e1, 0), record(e2, 1), record(e1, 2)])
    assert (result.applied, result.duplicates) == (2, 1)
    result, _ = await apply(conn, projection, [record(e2, 3)])
    assert (result.applied, result.duplicates) == (0, 1)
    assert projection.applied == [e1.id, e2.id]
    assert await position(conn, projection) == 4


async def test_events_a_consumer_is_not_interested_in_only_move_the_position(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    await apply(conn, projection, records([session_event(uuid4(), 1)]))
    projection.interested_in = frozenset({"referral-created"})
    projection.applied.clear()
    valid, invalid = session_event(uuid4(), 1), session_event(uuid4(), 1, minutes=601)
    result, published = await apply(conn, projection, records([valid, invalid], first_offset=1))
    assert (result.applied, result.dead, published) == (0, 0, [])
    assert projection.applied == [] and await dead_letters(conn, projection) == []
    assert len(await seen(conn, projection)) == 1
    assert await position(conn, projection) == 3

    # Even a batch with nothing of interest is checked against the stored position.
    result, _ = await apply(conn, projection, records([session_event(uuid4(), 1)], first_offset=9))
    assert result.seek_to == 3 and await position(conn, projection) == 3
    result, _ = await apply(conn, projection, records([valid, invalid], first_offset=1))
    assert result.applied == 0 and await position(conn, projection) == 3
