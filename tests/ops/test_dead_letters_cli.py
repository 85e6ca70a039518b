"""``referralnet dead-letters``: list poison events and re-drive one after a fix.

The poison is produced with ``confluent_kafka`` (librdkafka), a client that shares no
code with the kafka-python/aiokafka clients of the system.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer

from referralnet.system import RunningSystem
from schemas.envelope import CloudEvent, to_kafka
from schemas.registry import dataschema_uri
from tests.conftest import Alliance, referral_body, wait_until
from tests.ops.conftest import query, run_cli, view_of
from views.schema import schema_name

pytestmark = pytest.mark.infra

Kafka = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def _event(event_type: str, source: str, rid: uuid.UUID, data: dict[str, Any], actor: str) -> Kafka:
    key, value, headers = to_kafka(
        CloudEvent(
            id=uuid.uuid4(),
            source=source,
            type=event_type,
            subject=str(rid),
            time=datetime(2026, 1, 7, 10, tzinfo=UTC),
            dataschema=dataschema_uri(event_type, 1),
            data=data,
            streamversion=1,
            correlationid=rid,
            causationid=None,
            actor=actor,
        )
    )
    return key, value, list(headers)


def _created(alliance: Alliance, rid: uuid.UUID) -> Kafka:
    referrer = alliance.ids["referrer"]
    return _event(
        "referral-created",
        "/services/intake",
        rid,
        {
            "referral_id": str(rid),
            "person_ref": "p_dead_letter_test",
            "referrer_org": referrer,
            "referrer_kind": "gp-practice",
            "needs": ["stress"],
            "urgency": "routine",
            "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": True},
            "area": f"nowhere-{alliance.suffix}",
            "age_band": "35-49",
            "referred_at": "2026-01-05T10:00:00+00:00",
        },
        referrer,
    )


def _attended(alliance: Alliance, rid: uuid.UUID) -> Kafka:
    provider = alliance.ids["provider"]
    return _event(
        "activity-attended",
        "/services/outcomes",
        rid,
        {
            "referral_id": str(rid),
            "activity_id": f"walk-{alliance.suffix}",
            "provider_org": provider,
            "attended_at": "2026-01-07T10:00:00+00:00",
            "attended": True,
        },
        provider,
    )


def _produce(bootstrap: str, topic: str, records: list[tuple[Kafka, int | None]]) -> list[int]:
    """Produce with confluent_kafka; return each record's partition, in order."""
    # murmur2_random: the Java partitioner, which aiokafka uses too, so a referral's
    # records land on the partition its other events are on.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "partitioner": "murmur2_random"}
    )
    placed: dict[int, int] = {}
    errors: list[str] = []
    for i, ((key, value, headers), partition) in enumerate(records):

        def report(err: Any, msg: Any, i: int = i) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                placed[i] = msg.partition()

        ce_headers: list[tuple[str, str | bytes | None]] = list(headers)
        producer.produce(
            topic,
            key=key,
            value=value,
            headers=ce_headers,
            on_delivery=report,
            partition=-1 if partition is None else partition,  # -1: the partitioner's choice
        )
    assert producer.flush(30) == 0 and not errors, errors
    return [placed[i] for i in range(len(records))]


def _letters(system: RunningSystem) -> list[dict[str, Any]]:
    result = run_cli(system, "dead-letters", "--json")
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def test_poison_is_listed_and_the_view_keeps_consuming(
    system: RunningSystem, alliance: Alliance
) -> None:
    org = alliance.ids["referrer"]
    topic = system.topics.org(org)
    key, value, headers = _created(alliance, uuid.uuid4())
    poison: list[Kafka] = [
        (key, b"{not json", headers),
        (key, value, [(k, v) for k, v in headers if k != "ce_type"]),
        (key, value, [(k, b"referral-teleported" if k == "ce_type" else v) for k, v in headers]),
    ]
    parts = range(system.topics.partitions_of(topic))
    _produce(system.bootstrap_servers, topic, [(p, n) for n in parts for p in poison])

    referrer = alliance.client("referrer")
    created = referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}"))
    assert created.status_code == 201, created.text
    rid = created.json()["referral_id"]
    wait_until(lambda: view_of(referrer, rid), timeout=60)

    mine = wait_until(
        lambda: (
            len(found := [d for d in _letters(system) if d["source_topic"] == topic])
            >= 3 * len(parts)
            and found
        ),
        timeout=60,
    )
    assert len(mine) == 3 * len(parts), "each poison record dead-lettered once"
    assert {d["consumer"] for d in mine} == {f"view.{org}"}
    assert {d["source_partition"] for d in mine} == set(parts)
    assert all(d["reason"] and d["source_offset"] >= 0 for d in mine)
    assert {d["type"] for d in mine} >= {"referral-teleported"}
    table = run_cli(system, "dead-letters")
    assert table.exit_code == 0 and mine[0]["id"] in table.output


def test_retry_re_drives_a_dead_letter_after_the_fix(
    system: RunningSystem, alliance: Alliance
) -> None:
    rid = uuid.uuid4()
    events = system.topics.referral_events
    # Attendance arrives before its referral exists: the distributor cannot route it.
    _produce(system.bootstrap_servers, events, [(_attended(alliance, rid), None)])
    letter = wait_until(
        lambda: next(
            (
                d
                for d in _letters(system)
                if d["subject"] == str(rid) and d["consumer"] == "distributor"
            ),
            None,
        ),
        timeout=60,
    )
    assert letter["type"] == "activity-attended" and "never created" in letter["reason"]

    # The fix: the referral turns up. Its referrer's view has it, without the attendance.
    _produce(system.bootstrap_servers, events, [(_created(alliance, rid), None)])
    view = schema_name(alliance.ids["referrer"])
    row = f"SELECT attendances FROM {view}.referrals WHERE referral_id = %s"
    wait_until(lambda: query(system, row, (rid,)), timeout=60)
    assert query(system, row, (rid,)) == [(0,)]

    retried = run_cli(system, "dead-letters", "retry", letter["id"])
    assert retried.exit_code == 0, retried.output
    assert "re-drove" in retried.output
    wait_until(lambda: query(system, row, (rid,)) == [(1,)], timeout=60)
    # No longer pending; `--all` still shows it, with where it was re-driven to.
    assert letter["id"] not in [d["id"] for d in _letters(system)]
    everything = run_cli(system, "dead-letters", "--all", "--json")
    assert everything.exit_code == 0, everything.output
    again = next(d for d in json.loads(everything.stdout) if d["id"] == letter["id"])
    assert again["retried_to"].startswith(f"{events}[")
    provider_view = schema_name(alliance.ids["provider"])
    assert query(
        system, f"SELECT count(*) FROM {provider_view}.timeline WHERE referral_id = %s", (rid,)
    )


def test_retry_of_an_unknown_dead_letter_exits_2(system: RunningSystem) -> None:
    result = run_cli(system, "dead-letters", "retry", "5:999999")
    assert result.exit_code == 2
    assert "no dead letter" in result.output


def _retry_json(system: RunningSystem, *args: str) -> dict[str, Any]:
    result = run_cli(system, "dead-letters", "retry", *args, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_bulk_retry_re_drives_each_letter_once_even_when_asked_twice(
    system: RunningSystem, alliance: Alliance
) -> None:
    """Many letters, one command; again, and concurrently: nothing is sent twice."""
    count = 100
    rids = [uuid.uuid4() for _ in range(count)]
    events = system.topics.referral_events
    _produce(system.bootstrap_servers, events, [(_attended(alliance, r), None) for r in rids])
    wanted = {str(r) for r in rids}

    def mine() -> list[dict[str, Any]]:
        return [
            d for d in _letters(system) if d["subject"] in wanted and d["consumer"] == "distributor"
        ]

    letters = wait_until(lambda: len(found := mine()) == count and found, timeout=90)
    _produce(system.bootstrap_servers, events, [(_created(alliance, r), None) for r in rids])
    view = schema_name(alliance.ids["referrer"])
    attendances = f"SELECT attendances FROM {view}.referrals WHERE referral_id = ANY(%s)"
    wait_until(lambda: len(query(system, attendances, (rids,))) == count, timeout=90)
    assert {r[0] for r in query(system, attendances, (rids,))} == {0}

    # Two operators at once: each letter goes to exactly one of them.
    ids = tuple(d["id"] for d in letters)
    first, second = asyncio.run(_two_retries(system, ids))
    sent = [d.id for d in first.retried] + [d.id for d in second.retried]
    assert sorted(sent) == sorted(ids), "every letter re-driven, none twice"
    print(
        f"\nbulk retry of {count} letters: {max(first.seconds, second.seconds):.2f}s "
        f"(two concurrent runs: {len(first.retried)} + {len(second.retried)})"
    )
    wait_until(lambda: {r[0] for r in query(system, attendances, (rids,))} == {1}, timeout=90)

    # Asking again (by reason, by id) sends nothing: the letters are no longer pending.
    again = _retry_json(system, "--reason", "which was never created")
    assert not wanted & {d["subject"] for d in again["retried"]}
    one = _retry_json(system, letters[0]["id"])
    assert one["retried"] == [] and [d["id"] for d in one["already_retried"]] == [letters[0]["id"]]
    assert one["already_retried"][0]["retried_to"].startswith(f"{events}[")
    assert not wanted & {d["subject"] for d in mine()}, "none pending any more"


async def _two_retries(system: RunningSystem, ids: tuple[str, ...]) -> tuple[Any, Any]:
    from referralnet.ops.dead_letters import Selection, retry

    both = await asyncio.gather(
        retry(system.database_url, system.bootstrap_servers, Selection(ids=ids)),
        retry(system.database_url, system.bootstrap_servers, Selection(ids=ids)),
    )
    return both[0], both[1]


def test_retry_without_a_selection_or_with_two_exits_2(system: RunningSystem) -> None:
    bad = run_cli(system, "dead-letters", "retry")
    assert bad.exit_code == 2 and "--all" in bad.output
    both = run_cli(system, "dead-letters", "retry", "--all", "--reason", "x")
    assert both.exit_code == 2
    malformed = run_cli(system, "dead-letters", "retry", "no-colon")
    assert malformed.exit_code == 2 and "not a dead-letter id" in malformed.output


def test_retrying_a_still_poison_record_parks_it_once_per_consumer_that_parked_it(
    system: RunningSystem, alliance: Alliance
) -> None:
    """Every consumer group of ``referral-events`` parks the same malformed record: the
    retry sends it once, to those consumers only, and each parks it once again (three
    letters stay three, not nine)."""
    rid = uuid.uuid4()
    events = system.topics.referral_events
    key, _value, headers = _created(alliance, rid)
    _produce(system.bootstrap_servers, events, [((key, b"{not json", headers), None)])

    def pending() -> list[dict[str, Any]]:
        return [d for d in _letters(system) if d["subject"] == str(rid)]

    first = wait_until(lambda: len(found := pending()) >= 3 and found, timeout=60)
    consumers = {d["consumer"] for d in first}
    assert len(first) == len(consumers) == 3, first

    retried = _retry_json(system, *(d["id"] for d in first))
    assert sorted(d["id"] for d in retried["retried"]) == sorted(d["id"] for d in first)
    destinations = {d["retried_to"] for d in retried["retried"]}
    assert len(destinations) == 1, f"one record sent, not one per letter: {destinations}"
    topic_partition, _, offset = destinations.pop().partition("@")
    partition = int(topic_partition.rsplit("[", 1)[1].rstrip("]"))

    def past_the_copy(letter: dict[str, Any]) -> bool:
        schema = letter["id"].rpartition(":")[0]
        rows = query(
            system,
            f'SELECT next_offset FROM "{schema}".positions '
            "WHERE consumer = %s AND topic = %s AND partition = %s",
            (letter["consumer"], events, partition),
        )
        return bool(rows) and rows[0][0] > int(offset)

    wait_until(lambda: all(past_the_copy(d) for d in first), timeout=60)
    again = pending()
    assert sorted(d["consumer"] for d in again) == sorted(consumers), again
    assert not {d["id"] for d in again} & {d["id"] for d in first}
