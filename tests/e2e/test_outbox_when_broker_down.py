"""While the broker is down, partners still refer; the outbox keeps every event until it is back.

A dedicated broker (started and stopped by the test) and a fresh database: the API runs
in-process, referrals are stored with their outbox rows, the broker comes back on the same
port with an empty log, and the relay publishes every waiting event exactly once, in
stream-version order per referral, as CloudEvents.
"""

from __future__ import annotations

import asyncio
import socket
import time
import warnings
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from bus.relay import OutboxRelay
from bus.topics import Topics
from directory.loader import parse
from eventstore.records import StoredEvent, new_event
from infra.embedded import EmbeddedBroker
from referralnet.bootstrap import create_schemas, create_topics
from referralnet.gateway import create_app
from referralnet.registration import register
from schemas.envelope import REQUIRED_HEADERS, from_kafka
from schemas.events.contact import SessionHeld
from schemas.registry import dataschema_uri
from services.intake.store import STORE as INTAKE
from services.outcomes.store import STORE as OUTCOMES
from services.routing.store import STORE as ROUTING
from tests.conftest import Stack, alliance_yaml, referral_body

pytestmark = pytest.mark.infra

REFERRALS = 6
SESSIONS = 3
STORES = (INTAKE, ROUTING, OUTCOMES)


async def _register(database_url: str, suffix: str) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await register(conn, parse(alliance_yaml(suffix)))


async def _append_sessions(database_url: str, referral_ids: list[UUID]) -> None:
    """Outcomes' stream per referral, appended one command at a time (versions 1..3)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for rid in referral_ids:
            for version in range(SESSIONS):
                held = datetime(2026, 1, 8, 10, tzinfo=UTC) + timedelta(days=version)
                model = SessionHeld(
                    referral_id=rid,
                    session_id=uuid4(),
                    kind="short-conversation",  # type: ignore[arg-type]
                    duration_minutes=20 + version,
                    mode="phone",  # type: ignore[arg-type]
                    held_at=held,
                )
                event = new_event(model, actor="lw-x", occurred_at=held, correlation_id=rid)
                await OUTCOMES.append(conn, rid, version, [event])


async def _stored(database_url: str) -> tuple[list[tuple[str, StoredEvent]], dict[str, int]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        events = [
            (store.source, e)
            for store in STORES
            async for batch in store.read_all(conn)
            for e in batch
        ]
        backlog = {store.schema: await store.outbox_backlog(conn) for store in STORES}
    return events, backlog


async def _relay_until_empty(database_url: str, bootstrap: str, topic: str) -> int:
    """Run one relay per store (as ``referralnet.workers.relay`` does) until every outbox
    is empty; return how many events they published."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, request_timeout_ms=10_000
    )
    await producer.start()
    stop = asyncio.Event()
    relays = [OutboxRelay(store, database_url, producer, topic) for store in STORES]
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while sum([await s.outbox_backlog(conn) for s in STORES]) > 0:
                for task in tasks:
                    if task.done():
                        task.result()  # a relay that died: raise its error here
                assert loop.time() < deadline, "the outbox was not drained within 30 s"
                await asyncio.sleep(0.05)  # polling the outbox with a deadline
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await producer.stop()
    return sum(r.published for r in relays)


def _consume_everything(bootstrap: str, topic: str, at_least: int) -> list[Any]:
    """Every record of ``topic``: read until each partition's position is its high
    watermark (end offsets are wrong on Tansu, the fetch high watermark is right)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    try:
        parts = consumer.partitions_for_topic(topic)
        assert parts, f"{topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
            done = all(
                consumer.highwater(tp) is not None
                and consumer.position(tp) >= consumer.highwater(tp)
                for tp in tps
            )
            if done and len(records) >= at_least:
                return records
        raise AssertionError(f"read {len(records)} of at least {at_least} records in 30 s")
    finally:
        consumer.close()


def test_referrals_wait_in_the_outbox_and_arrive_once_in_order(
    stack: Stack, tmp_path: Path
) -> None:
    suffix = uuid4().hex[:8]
    database_url = stack.database.create_database(f"outage_{suffix}")
    broker = EmbeddedBroker(tmp_path)
    bootstrap = broker.start()
    topics = Topics()
    try:
        broker.stop()
        host, port = bootstrap.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError):  # really down: nothing listens there
            socket.create_connection((host, int(port)), timeout=2).close()

        # Partners keep working: the API stores referrals with their outbox rows.
        asyncio.run(create_schemas(database_url))
        tokens = asyncio.run(_register(database_url, suffix))
        referrer = f"gp-{suffix}"
        referral_ids: list[UUID] = []
        with warnings.catch_warnings():  # starlette's note about httpx, not ours
            warnings.simplefilter("ignore", UserWarning)
            from fastapi.testclient import TestClient
        with TestClient(create_app(database_url, tmp_path, pool_size=4)) as api:
            auth = {"Authorization": f"Bearer {tokens[referrer]}"}
            for _ in range(REFERRALS):
                response = api.post(
                    "/referrals", json=referral_body(area=f"area-{suffix}"), headers=auth
                )
                assert response.status_code == 201, response.text
                referral_ids.append(UUID(response.json()["referral_id"]))
        asyncio.run(_append_sessions(database_url, referral_ids))
        stored, backlog = asyncio.run(_stored(database_url))
        assert backlog == {"intake": REFERRALS, "routing": 0, "outcomes": REFERRALS * SESSIONS}
        assert len(stored) == REFERRALS * (1 + SESSIONS)

        # The broker returns on the same port, empty (memory storage); topics are made.
        assert broker.start() == bootstrap
        org_ids = [o.id for o in parse(alliance_yaml(suffix)).organisations]
        create_topics(bootstrap, topics, org_ids)

        published = asyncio.run(_relay_until_empty(database_url, bootstrap, topics.referral_events))
        assert published == len(stored)
        _, backlog = asyncio.run(_stored(database_url))
        assert backlog == {"intake": 0, "routing": 0, "outcomes": 0}

        records = _consume_everything(bootstrap, topics.referral_events, len(stored))
    finally:
        broker.stop()

    # Exactly once: every stored event, no other, none twice.
    by_id = {e.event_id: (source, e) for source, e in stored}
    seen_ids = [UUID(dict(r.headers)["ce_id"].decode()) for r in records]
    assert len(seen_ids) == len(set(seen_ids)) == len(stored)
    assert set(seen_ids) == set(by_id)

    versions: dict[tuple[bytes, str], list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        headers = dict(r.headers)
        assert set(REQUIRED_HEADERS) <= set(headers), f"missing headers on offset {r.offset}"
        event = from_kafka(r.key, r.value, r.headers)  # a valid CloudEvent, binary mode
        source, original = by_id[event.id]
        assert headers["ce_specversion"] == b"1.0"
        assert headers["content-type"] == b"application/json"
        assert r.key == headers["ce_subject"] == str(original.stream_id).encode()
        assert event.source == source
        assert event.type == original.type
        assert event.dataschema == dataschema_uri(original.type, original.schema_version)
        assert event.streamversion == original.version
        assert event.correlationid == original.correlation_id
        assert event.actor == original.actor
        assert event.time == original.occurred_at
        assert event.data == original.data
        versions[(r.key, source)].append(event.streamversion)
        partitions[r.key].add(r.partition)

    # Per referral: one partition, and each service's stream in version order.
    assert all(len(p) == 1 for p in partitions.values())
    assert len(partitions) == REFERRALS
    for (key, source), seen in versions.items():
        expected = [1] if source == INTAKE.source else list(range(1, SESSIONS + 1))
        assert seen == expected, f"{key!r} from {source}: versions {seen}"
