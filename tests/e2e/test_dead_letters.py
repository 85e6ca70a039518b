"""Poison events on ``referral-events`` go to ``dead-letters``, each consumer goes on.

The poison is produced with ``confluent_kafka`` (librdkafka), which shares no code with
the kafka-python/aiokafka clients the system uses, onto every partition, so whichever
partition a later good referral lands on, its consumers had to get past poison first.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition

from bus import dead_letters as dlq
from referralnet.system import RunningSystem
from schemas.envelope import CloudEvent, to_kafka
from schemas.registry import dataschema_uri
from services.distributor.projection import DistributorProjection
from services.outcomes.projection import CaseProjection
from services.routing.projection import RoutingProjection
from tests.conftest import Alliance, referral_body, wait_until

pytestmark = pytest.mark.infra

# Generous: after another test's kill -9 of a worker, the embedded broker has been seen to
# stall one producer for up to its request timeout (40 s) before it recovers.
SLOW_BROKER = 90.0

CONSUMERS = {
    "routing": RoutingProjection,
    "distributor": DistributorProjection,
    "outcomes": CaseProjection,
}


def _created(data: dict[str, Any] | None = None, event_type: str = "referral-created") -> Any:
    rid = uuid.uuid4()
    body: dict[str, Any] = {
        "referral_id": str(rid),
        "person_ref": "p_poison",
        "referrer_org": "gp-poison",
        "referrer_kind": "gp-practice",
        "needs": ["stress"],
        "urgency": "routine",
        "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": True},
        "area": "nowhere",
        "age_band": "35-49",
        "referred_at": "2026-01-05T10:00:00+00:00",
    }
    body.update(data or {})
    return to_kafka(
        CloudEvent(
            id=uuid.uuid4(),
            source="/services/intake",
            type=event_type,
            subject=str(rid),
            time=datetime(2026, 1, 5, 10, tzinfo=UTC),
            dataschema=dataschema_uri(event_type, 1),
            data=body,
            streamversion=1,
            correlationid=rid,
            causationid=None,
            actor="gp-poison",
        )
    )


def _poison() -> dict[str, tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """(key, value, headers) of each kind of poison, by name."""
    key, _, headers = _created()
    non_json = (key, b"{'referral_id': not json at all", headers)
    key, value, headers = _created()
    no_type = (key, value, [(k, v) for k, v in headers if k != "ce_type"])
    unknown_type = _created(event_type="referral-teleported")
    bad_data = _created({"needs": [], "age_band": "ancient"})
    key, _, headers = _created()
    tombstone = (key, None, headers)
    return {
        "non-json": non_json,
        "no-ce-type": no_type,
        "unknown-type": unknown_type,
        "bad-data": bad_data,
        "tombstone": tombstone,
    }


EXPECTED_REASON = {
    "non-json": "value: is not valid JSON",
    "no-ce-type": "ce_type: required header is missing",
    "unknown-type": "unknown event type 'referral-teleported'",
    "bad-data": "needs: List should have at least 1 item",
    "tombstone": "value: is missing (a tombstone)",
}
TYPE_OF = {
    "non-json": None,  # the envelope fails before the type is looked at
    "no-ce-type": None,
    "unknown-type": "referral-teleported",
    "bad-data": "referral-created",
    "tombstone": None,
}


def _dead_lettered_by(kind: str) -> set[str]:
    """Consumers that read the record far enough to judge it: all of them, unless its
    type parses and a consumer declares it is not interested in that type."""
    event_type = TYPE_OF[kind]
    result = set()
    for name, projection in CONSUMERS.items():
        interested = getattr(projection, "interested_in", None)
        if event_type is None or interested is None or event_type in interested:
            result.add(name)
    return result


def _produce_poison(bootstrap: str, topic: str, partitions: int) -> dict[tuple[int, int], str]:
    """Every kind of poison on every partition; returns (partition, offset) → kind."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    placed: dict[tuple[int, int], str] = {}
    errors: list[str] = []

    def delivered(kind: str) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{kind}: {err}")
            else:
                placed[(msg.partition(), msg.offset())] = kind

        return report

    for partition in range(partitions):
        for kind, (key, value, headers) in _poison().items():
            producer.produce(
                topic,
                key=key,
                value=value,
                headers=list(headers),
                partition=partition,
                on_delivery=delivered(kind),
            )
    assert producer.flush(30) == 0, "poison not delivered within 30 s"
    assert not errors, errors
    return placed


def _read_dead_letters(
    bootstrap: str, topic: str, wanted: int, source_topic: str, placed: set[tuple[int, int]]
) -> list[dict[str, bytes]]:
    """Dead letters of ``placed`` records, read from the beginning of ``topic`` until
    ``wanted`` have been seen and a little longer (to catch any extra copy)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        consumer.assign([CTopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        found: list[dict[str, bytes]] = []
        deadline, settle = time.monotonic() + SLOW_BROKER, None
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                if settle is not None and time.monotonic() > settle:
                    return found
                continue
            if msg.error():
                raise KafkaException(msg.error())
            raw = msg.headers() or []
            items = raw.items() if isinstance(raw, dict) else raw
            headers = {k: v.encode() if isinstance(v, str) else v or b"" for k, v in items}
            if headers.get(dlq.SOURCE_TOPIC) != source_topic.encode():
                continue
            origin = (int(headers[dlq.SOURCE_PARTITION]), int(headers[dlq.SOURCE_OFFSET]))
            if origin in placed:
                found.append({**headers, "_value": msg.value() or b"", "_key": msg.key() or b""})
                if len(found) >= wanted and settle is None:
                    settle = time.monotonic() + 2.0
        raise AssertionError(f"{len(found)} of {wanted} dead letters arrived in {SLOW_BROKER} s")
    finally:
        consumer.close()


def _view(client: httpx.Client, rid: str) -> dict[str, Any] | None:
    response = client.get(f"/referrals/{rid}", params={"person": "false"})
    return response.json()["view"] if response.status_code == 200 else None


def test_poison_is_dead_lettered_per_consumer_and_good_events_still_flow(
    system: RunningSystem, alliance: Alliance
) -> None:
    topics = system.topics
    placed = _produce_poison(system.bootstrap_servers, topics.referral_events, topics.partitions)
    assert len(placed) == topics.partitions * len(EXPECTED_REASON)

    # Good referrals after the poison, on whichever partitions they hash to.
    referrer = alliance.client("referrer")
    area = f"area-{alliance.suffix}"
    rids = []
    for _ in range(3):
        created = referrer.post("/referrals", json=referral_body(area=area, needs=["stress"]))
        assert created.status_code == 201, created.text
        rids.append(created.json()["referral_id"])
    for rid in rids:  # routing routed it and the distributor delivered it to the views
        view = wait_until(
            lambda r=rid: (v := _view(referrer, r)) and v["status"] == "routed" and v,
            timeout=SLOW_BROKER,
        )
        assert view["service_org"] == alliance.ids["link_worker"]
    lw = alliance.client("link_worker")
    for rid in rids:  # outcomes, too, went on: it knows the case, so casework is accepted
        answer = lw.post(f"/referrals/{rid}/accept", json={"accepted_at": "2026-01-06T09:00:00Z"})
        assert answer.status_code == 200, answer.text
        session = lw.post(
            f"/referrals/{rid}/sessions",
            json={
                "kind": "short-conversation",
                "minutes": 15,
                "mode": "phone",
                "held_at": "2026-01-07T09:00:00Z",
            },
        )
        assert session.status_code == 201, session.text

    expected = Counter(
        {
            (origin, consumer): 1
            for origin, kind in placed.items()
            for consumer in _dead_lettered_by(kind)
        }
    )
    letters = _read_dead_letters(
        system.bootstrap_servers,
        topics.dead_letters,
        sum(expected.values()),
        topics.referral_events,
        set(placed),
    )
    got = Counter(
        (
            (int(d[dlq.SOURCE_PARTITION]), int(d[dlq.SOURCE_OFFSET])),
            d[dlq.CONSUMER].decode(),
        )
        for d in letters
    )
    assert got == expected  # once per consumer that judged it, no more, no fewer

    poison = {kind: value for kind, value in _poison().items()}
    for letter in letters:
        origin = (int(letter[dlq.SOURCE_PARTITION]), int(letter[dlq.SOURCE_OFFSET]))
        kind = placed[origin]
        reason = letter[dlq.REASON].decode()
        assert reason.startswith(EXPECTED_REASON[kind]) or EXPECTED_REASON[kind] in reason, (
            kind,
            reason,
        )
        if kind == "bad-data":
            assert "age_band" in reason  # every problem named, not just the first
        # The dead letter carries the record as it was: value and original headers.
        if kind == "non-json":
            assert letter["_value"].startswith(b"{'referral_id': not json")
        if kind == "tombstone":
            assert letter["_value"] == b""
        _, _, headers = poison[kind]
        for name, _ in headers:
            assert name in letter, f"{kind}: header {name} not kept in the dead letter"
        assert letter[dlq.SOURCE_TOPIC] == topics.referral_events.encode()
