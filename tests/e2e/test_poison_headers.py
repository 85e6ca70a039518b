"""Issue 11, reproduction 2 on the real stack: no header value crashes a consumer.

A real record is copied, with a header made null, empty, non-UTF-8 or missing, by
``confluent_kafka`` (an independent client) onto a partner topic and onto
``referral-events``. Every worker keeps running (no restart), each copy reaches
``dead-letters`` with its reason, nothing is forwarded with a header the distributor did
not validate, and later events still reach the views.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition

from bus import dead_letters as dlq
from referralnet.system import RunningSystem
from tests.conftest import Alliance, referral_body, wait_until
from tests.e2e.test_dead_letters import _read_dead_letters

pytestmark = pytest.mark.infra

SLOW = 90.0
RawHeaders = list[tuple[str, str | bytes | None]]

BREAKAGES: dict[str, tuple[str, bytes | None, str]] = {
    # name: (header, new value or None for null, the reason's start)
    "null-actor": ("ce_actor", None, "ce_actor: is null"),
    "empty-actor": ("ce_actor", b"", "ce_actor: is empty"),
    "null-type": ("ce_type", None, "ce_type: is null"),
    "non-utf8-source": ("ce_source", b"\xff\xfe/services", "ce_source: is not valid UTF-8"),
    "null-causation": ("ce_causationid", None, "ce_causationid: is null"),
}


def _first_record(bootstrap: str, topic: str, subject: str) -> tuple[int, Any]:
    """(partition, message) of the first record of ``subject`` on ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"poison-copy-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([CTopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        deadline = time.monotonic() + SLOW
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            if msg.key() == subject.encode():
                return int(msg.partition() or 0), msg
        raise AssertionError(f"no record of {subject} on {topic}")
    finally:
        consumer.close()


def _recorder(placed: dict[tuple[int, int], str], name: str) -> Any:
    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            placed[(msg.partition(), msg.offset())] = name

    return delivered


def _broken_copies(
    bootstrap: str, topic: str, partition: int, original: Any
) -> dict[tuple[int, int], str]:
    """Each breakage of ``original`` produced onto its partition; (partition, offset) → name."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    headers: RawHeaders = list(original.headers() or [])
    placed: dict[tuple[int, int], str] = {}
    for name, (header, value, _) in BREAKAGES.items():
        broken: RawHeaders = [(k, v) for k, v in headers if k != header] + [(header, value)]
        producer.produce(
            topic,
            key=original.key(),
            value=original.value(),
            headers=broken,
            partition=partition,
            on_delivery=_recorder(placed, name),
        )
    assert producer.flush(30) == 0
    assert len(placed) == len(BREAKAGES)
    return placed


def _view(client: httpx.Client, rid: str) -> dict[str, Any] | None:
    response = client.get(f"/referrals/{rid}", params={"person": "false"})
    return response.json()["view"] if response.status_code == 200 else None


def _restarts(system: RunningSystem) -> dict[str, int]:
    return {name: child.restarts for name, child in system.supervisor.children.items()}


def test_broken_header_copies_are_dead_lettered_and_no_worker_restarts(
    system: RunningSystem, alliance: Alliance
) -> None:
    referrer, lw = alliance.client("referrer"), alliance.client("link_worker")
    created = referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}"))
    assert created.status_code == 201, created.text
    rid = created.json()["referral_id"]
    wait_until(lambda: (v := _view(lw, rid)) and v["status"] == "routed", timeout=SLOW)
    before = _restarts(system)

    bootstrap, topics = system.bootstrap_servers, system.topics
    partner_topic = topics.org(alliance.ids["link_worker"])
    placed: dict[str, dict[tuple[int, int], str]] = {}
    for topic in (partner_topic, topics.referral_events):
        partition, original = _first_record(bootstrap, topic, rid)
        placed[topic] = _broken_copies(bootstrap, topic, partition, original)

    # Later events still apply, on both topics.
    accepted = lw.post(f"/referrals/{rid}/accept", json={"accepted_at": "2026-01-06T09:00:00Z"})
    assert accepted.status_code == 200, accepted.text
    session = lw.post(
        f"/referrals/{rid}/sessions",
        json={
            "kind": "short-conversation",
            "minutes": 25,
            "mode": "phone",
            "held_at": "2026-01-07T09:00:00Z",
        },
    )
    assert session.status_code == 201, session.text
    for client in (lw, referrer):
        wait_until(lambda c=client: (v := _view(c, rid)) and v["sessions"] == 1, timeout=SLOW)

    # On the partner topic one consumer reads each copy; on referral-events three do.
    for topic, readers in ((partner_topic, 1), (topics.referral_events, 3)):
        letters = _read_dead_letters(
            bootstrap,
            topics.dead_letters,
            readers * len(BREAKAGES),
            topic,
            set(placed[topic]),
        )
        assert len(letters) == readers * len(BREAKAGES), (topic, len(letters))
        for letter in letters:
            origin = (int(letter[dlq.SOURCE_PARTITION]), int(letter[dlq.SOURCE_OFFSET]))
            _, _, reason = BREAKAGES[placed[topic][origin]]
            assert letter[dlq.REASON].decode().startswith(reason), letter[dlq.REASON]
    assert _restarts(system) == before  # no worker died on any of them

    # Nothing was forwarded with a header the distributor did not validate.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(partner_topic, timeout=10).topics[partner_topic]
        consumer.assign(
            [CTopicPartition(partner_topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        )
        deadline, idle = time.monotonic() + 20, 0
        while time.monotonic() < deadline and idle < 20:
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                idle += 1
                continue
            idle = 0
            if msg.key() != rid.encode():
                continue
            headers = dict(msg.headers() or [])
            if (msg.partition(), msg.offset()) in placed[partner_topic]:
                continue
            assert headers.get("ce_actor") not in (None, b"", b"None"), headers
    finally:
        consumer.close()
