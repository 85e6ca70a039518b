"""The stream rule on a real PostgreSQL: held records, conflicts, parked streams, holes.

Each case is a batch sequence a consumer can meet on the bus (a forged far-ahead
version, versions swapped in flight, a record a client hands over with a null header,
offsets that skip) and what it must leave behind: every real event applied once, in its
stream's order, and the rest dead-lettered or held with a reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from bus import tracking
from bus.held import held_summary
from bus.tracking import ORG_SEQUENCE, Record, apply_batch
from tests.bus.test_tracking import (
    PARTITION,
    TOPIC,
    CountingProjection,
    applied_version,
    apply,
    dead_letters,
    position,
    record,
    session_event,
)

pytestmark = pytest.mark.infra


async def held_versions(conn: psycopg.AsyncConnection[Any], p: CountingProjection) -> list[int]:
    cur = await conn.execute(
        sql.SQL("SELECT version FROM {}.held ORDER BY version").format(sql.Identifier(p.schema))
    )
    return [r[0] for r in await cur.fetchall()]


async def test_a_forged_far_ahead_version_is_held_and_real_events_apply(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Reproduction 1: stream at 1, a forged 6 arrives, then the real 2, 3, 4."""
    rid = uuid4()
    v1, forged = session_event(rid, 1), session_event(rid, 6, minutes=600)
    real = [session_event(rid, v) for v in (2, 3, 4)]
    await apply(conn, projection, [record(v1, 0)])
    result, published = await apply(conn, projection, [record(forged, 1)])
    assert (result.applied, result.held, result.dead) == (0, 1, 0) and published == []
    assert await position(conn, projection) == 2  # held, not blocking the partition
    summary = await held_summary(conn, projection.schema)
    assert (summary.count, summary.streams) == (1, 1) and summary.oldest_held_at is not None

    result, published = await apply(
        conn, projection, [record(e, 2 + i) for i, e in enumerate(real)]
    )
    assert result.applied == 3 and [o.event.id for o in published] == [e.id for e in real]
    assert projection.applied == [v1.id, *(e.id for e in real)]
    assert await applied_version(conn, projection, rid) == 4
    assert await held_versions(conn, projection) == [6]  # never shown, still held


async def test_version_4_before_3_waits_and_3_is_not_dropped(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    rid = uuid4()
    e1, e2, e3, e4 = (session_event(rid, v) for v in (1, 2, 3, 4))
    await apply(conn, projection, [record(e1, 0), record(e2, 1)])
    result, _ = await apply(conn, projection, [record(e4, 2)])
    assert (result.applied, result.held) == (0, 1)
    result, published = await apply(conn, projection, [record(e3, 3)])
    assert result.applied == 2 and [o.event.id for o in published] == [e3.id, e4.id]
    assert projection.applied == [e1.id, e2.id, e3.id, e4.id]
    assert await held_versions(conn, projection) == []
    assert (await held_summary(conn, projection.schema)).count == 0


async def test_exact_duplicates_are_ignored_and_conflicting_ones_dead_lettered(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    rid = uuid4()
    e1, e2 = session_event(rid, 1), session_event(rid, 2)
    await apply(conn, projection, [record(e1, 0), record(e2, 1)])
    other = session_event(rid, 2, minutes=45)  # same version, other event
    result, published = await apply(conn, projection, [record(e2, 2), record(other, 3)])
    assert (result.applied, result.duplicates, result.dead) == (0, 1, 1) and published == []
    (letter,) = await dead_letters(conn, projection)
    assert letter["reason"].startswith(f"conflicting duplicate: version 2 of stream {rid}")
    assert projection.applied == [e1.id, e2.id]


async def test_two_claims_for_a_future_version_are_both_dead_and_the_stream_parks(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Nothing silently wins: the forged and the real 3 both go to dead letters; 4 waits
    behind the missing 3 until the real one is re-driven."""
    rid = uuid4()
    e1, e3, e4 = session_event(rid, 1), session_event(rid, 3), session_event(rid, 4)
    forged3 = session_event(rid, 3, minutes=600)
    await apply(conn, projection, [record(e1, 0), record(forged3, 1)])
    result, _ = await apply(conn, projection, [record(e3, 2), record(e4, 3)])
    assert (result.dead, result.held, result.applied) == (2, 1, 0)
    reasons = [d["reason"] for d in await dead_letters(conn, projection)]
    assert len(reasons) == 2 and all(r.startswith("conflicting duplicate") for r in reasons)
    e2 = session_event(rid, 2)
    result, _ = await apply(conn, projection, [record(e2, 4)])
    assert result.applied == 1 and await held_versions(conn, projection) == [4]  # parked
    retried = record(e3, 5)  # ops re-drives the real one
    retried = Record(TOPIC, PARTITION, 5, retried.key, retried.value, [*retried.headers])
    result, published = await apply(conn, projection, [retried])
    assert result.applied == 2 and [o.event.id for o in published] == [e3.id, e4.id]
    assert projection.applied == [e1.id, e2.id, e3.id, e4.id]


async def test_a_rejected_event_parks_its_stream_until_it_is_re_driven(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    rid = uuid4()
    e1, e2, e3 = (session_event(rid, v) for v in (1, 2, 3))
    projection.reject.add(e2.id)
    result, published = await apply(conn, projection, [record(e1, 0), record(e2, 1), record(e3, 2)])
    assert (result.applied, result.dead, result.held) == (1, 1, 1)
    assert [o.event.id for o in published] == [e1.id]
    assert await applied_version(conn, projection, rid) == 1
    assert await held_versions(conn, projection) == [3]
    projection.reject.clear()
    result, published = await apply(conn, projection, [record(e2, 3)])  # re-driven
    assert [o.event.id for o in published] == [e2.id, e3.id]
    assert await applied_version(conn, projection, rid) == 3


async def test_held_records_survive_a_rolled_back_batch(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Held rows are written in the batch's transaction: no commit, no hold."""
    rid = uuid4()
    e1, e3 = session_event(rid, 1), session_event(rid, 3)
    projection.explode.add(e1.id)
    with pytest.raises(RuntimeError):
        await apply(conn, projection, [record(e1, 0), record(e3, 1)])
    assert await held_versions(conn, projection) == []
    projection.explode.clear()
    result, _ = await apply(conn, projection, [record(e1, 0), record(e3, 1)])
    assert (result.applied, result.held) == (1, 1)
    assert await held_versions(conn, projection) == [3]


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("ce_actor", None, "ce_actor: is null"),
        ("ce_actor", b"", "ce_actor: is empty"),
        ("ce_source", b"\xff\xfe", "ce_source: is not valid UTF-8"),
        ("ce_id", None, "ce_id: is null"),
        ("ce_causationid", None, "ce_causationid: is null"),
        ("ce_streamversion", b"4294967296", "ce_streamversion: 4294967296 is beyond"),
    ],
)
async def test_a_header_the_codec_refuses_is_dead_lettered_and_later_records_apply(
    conn: psycopg.AsyncConnection[Any],
    projection: CountingProjection,
    header: str,
    value: bytes | None,
    reason: str,
) -> None:
    """Reproduction 2: no header value crashes the consumer (a null one did)."""
    rid = uuid4()
    e1, e2 = session_event(rid, 1), session_event(rid, 2)
    bad = record(e1, 0)
    headers = [(k, v) for k, v in bad.headers if k != header] + [(header, value)]
    poison = Record(TOPIC, PARTITION, 0, bad.key, bad.value, headers)
    result, _ = await apply(conn, projection, [poison, record(e1, 1), record(e2, 2)])
    assert (result.dead, result.applied) == (1, 2)
    (letter,) = await dead_letters(conn, projection)
    assert letter["reason"].startswith(reason)
    assert header in dict(letter["headers"])
    assert await position(conn, projection) == 3


async def test_a_position_on_a_missing_offset_moves_on_to_the_next_record(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Reproduction 3: offsets 0, 1, 2, 4 and a stored position of 3."""
    events = [session_event(uuid4(), 1) for _ in range(4)]
    await apply(
        conn, projection, [record(e, o) for e, o in zip(events[:3], (0, 1, 2), strict=True)]
    )
    assert await position(conn, projection) == 3
    asked: list[tuple[str, int, int]] = []

    log = {o: record(e, o) for e, o in zip(events, (0, 1, 2, 4), strict=True)}

    class Broker:
        def __init__(self, next_record: int | None, highwater: int) -> None:
            self.next_record, self.end = next_record, highwater

        async def __call__(self, topic: str, partition: int, offset: int) -> int | None:
            asked.append((topic, partition, offset))
            return offset if self.next_record is None else self.next_record

        async def highwater(self, topic: str, partition: int) -> int | None:
            return self.end

        async def record_at(self, topic: str, partition: int, offset: int) -> Record | None:
            return log.get(offset)  # the same log the position was read from

    probe = Broker(4, 5)  # the first record at or after 3 is at 4
    result = await apply_batch(
        conn, projection, TOPIC, PARTITION, [record(events[3], 4)], probe=probe
    )
    assert asked == [(TOPIC, PARTITION, 3)]
    assert (result.applied, result.seek_to) == (1, None)
    assert await position(conn, projection) == 5

    ran_ahead = Broker(None, 10)  # the record at the stored position exists: seek back
    later = record(session_event(uuid4(), 1), 9)
    result = await apply_batch(conn, projection, TOPIC, PARTITION, [later], probe=ran_ahead)
    assert (result.seek_to, result.applied) == (5, 0)


async def test_a_broker_that_lost_its_log_is_read_again_from_its_start(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Records below the stored position are new when the log ends before it."""
    await apply(conn, projection, [record(session_event(uuid4(), 1), o) for o in range(5)])
    assert await position(conn, projection) == 5

    class FreshBroker:
        async def __call__(self, topic: str, partition: int, offset: int) -> int | None:
            return None

        async def highwater(self, topic: str, partition: int) -> int | None:
            return 2  # two new records since the broker restarted

        async def record_at(self, topic: str, partition: int, offset: int) -> Record | None:
            return None  # nothing at 4 any more

    new = [session_event(uuid4(), 1) for _ in range(2)]
    batch = [record(e, o) for o, e in enumerate(new)]
    result = await apply_batch(conn, projection, TOPIC, PARTITION, batch, probe=FreshBroker())
    assert (result.seek_to, result.duplicates) == (0, 0)
    assert await position(conn, projection) == 0
    result = await apply_batch(conn, projection, TOPIC, PARTITION, batch, probe=FreshBroker())
    assert result.applied == 2 and projection.applied[-2:] == [e.id for e in new]
    assert await position(conn, projection) == 2


async def test_a_partner_topic_is_applied_in_ce_orgsequence_order(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Stream versions on a partner topic have holes by design (filtering); the
    distributor's per-topic number has none, so gaps there are real and held."""
    projection.ordering = ORG_SEQUENCE
    rid = uuid4()
    # Outcomes versions 1, 4, 7 (the partner sees only these), numbered 1, 2, 3.
    e1, e2, e3 = (
        replace(session_event(rid, v), orgsequence=n) for v, n in ((1, 1), (4, 2), (7, 3))
    )
    result, _ = await apply(conn, projection, [record(e1, 0), record(e3, 1)])
    assert (result.applied, result.held) == (1, 1)
    unnumbered = record(session_event(rid, 9), 2)
    result, published = await apply(conn, projection, [unnumbered, record(e2, 3)])
    assert [o.event.id for o in published] == [e2.id, e3.id]
    assert projection.applied == [e1.id, e2.id, e3.id]
    (letter,) = await dead_letters(conn, projection)
    assert letter["reason"].startswith("ce_orgsequence: is required on a partner topic")


async def test_a_stream_applied_before_digests_were_kept_goes_on_from_its_head(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Versions applied by an older consumer have no digest: a re-delivery of one is
    taken for a duplicate; new versions are kept at their own index."""
    rid = uuid4()
    await conn.execute(
        sql.SQL("INSERT INTO {}.applied (stream_id, source, version) VALUES (%s, %s, 2)").format(
            sql.Identifier(projection.schema)
        ),
        (str(rid), "/services/outcomes"),
    )
    old, e3 = session_event(rid, 1), session_event(rid, 3)
    result, _ = await apply(conn, projection, [record(old, 0), record(e3, 1)])
    assert (result.duplicates, result.applied) == (1, 1)
    other3 = session_event(rid, 3, minutes=50)
    result, _ = await apply(conn, projection, [record(e3, 2), record(other3, 3)])
    assert (result.duplicates, result.dead, result.applied) == (1, 1, 0)
    cur = await conn.execute(
        sql.SQL("SELECT cardinality(digests), digests[1] FROM {}.applied").format(
            sql.Identifier(projection.schema)
        )
    )
    assert await cur.fetchone() == (3, None)


async def test_a_stale_position_inside_a_refilled_log_is_no_re_delivery(
    conn: psycopg.AsyncConnection[Any], projection: CountingProjection
) -> None:
    """Issue 11: a position of the old log (5) that lies *below* the end of the new one
    (8 records: the broker restarted and was refilled before the consumer looked) must
    not make the new log's records 0-4 pass for re-deliveries: the record before the
    position is not the one the position was read after, so the log is read again."""
    old = [session_event(uuid4(), 1) for _ in range(5)]
    await apply(conn, projection, [record(e, o) for o, e in enumerate(old)])
    assert await position(conn, projection) == 5
    new = [record(session_event(uuid4(), 1), o) for o in range(8)]

    class RefilledBroker:
        async def __call__(self, topic: str, partition: int, offset: int) -> int | None:
            return offset

        async def highwater(self, topic: str, partition: int) -> int | None:
            return len(new)

        async def record_at(self, topic: str, partition: int, offset: int) -> Record | None:
            return new[offset] if offset < len(new) else None

    result = await apply_batch(conn, projection, TOPIC, PARTITION, new, probe=RefilledBroker())
    assert (result.seek_to, result.applied, result.duplicates) == (0, 0, 0)
    assert await position(conn, projection) == 0
    result = await apply_batch(conn, projection, TOPIC, PARTITION, new, probe=RefilledBroker())
    assert result.applied == 8, "every record of the new log applied"
    assert await position(conn, projection) == 8

    # A fetch that ran ahead in a replaced log (nothing below the position in the batch)
    # is caught the same way, by asking the broker for the record before the position.
    newer = [record(session_event(uuid4(), 1), o) for o in range(12)]

    class AgainRefilled(RefilledBroker):
        async def record_at(self, topic: str, partition: int, offset: int) -> Record | None:
            return newer[offset]

    result = await apply_batch(conn, projection, TOPIC, PARTITION, newer[9:], probe=AgainRefilled())
    assert (result.seek_to, result.applied) == (0, 0)
    losses = await conn.execute(
        sql.SQL("SELECT count(*) FROM {}.log_losses").format(sql.Identifier(projection.schema))
    )
    assert (await losses.fetchone()) == (1,)  # noted for status and republish


def test_a_wide_hole_is_taken_only_once_it_persists(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log being refilled looked holed from offset 4 to 67 for a moment (twice in a
    row); skipping lost 63 events. One offset (a transaction marker) is taken at once; a
    wider hole only when the broker still reports it ``HOLE_CONFIRM_SECONDS`` later."""
    where = ("schema", "consumer", TOPIC, PARTITION)
    assert tracking._hole_confirmed(where, 2, 3)
    assert not tracking._hole_confirmed(where, 4, 67)
    assert not tracking._hole_confirmed(where, 4, 67), "not yet: too soon"
    monkeypatch.setattr(tracking, "HOLE_CONFIRM_SECONDS", 0.0)  # as if the time had passed
    assert tracking._hole_confirmed(where, 4, 67)
