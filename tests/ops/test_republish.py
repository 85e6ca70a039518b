"""``referralnet republish``: the embedded broker restarts empty; the stores refill it.

Runs on its own system: restarting the broker under the session-wide one would pull
the rug from under other tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from infra.processes import free_port
from referralnet.ops.log import partition_counts, read_range, topic_highwaters
from referralnet.ops.replay import replay_view
from referralnet.settings import Settings
from referralnet.system import RunningSystem, running_system
from tests.conftest import alliance_yaml, referral_body, register_alliance, wait_until
from tests.ops.conftest import (
    accepted_referral,
    add_session,
    caught_up,
    checksums,
    journeys,
    query,
    run_cli,
    view_of,
)

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    home = tmp_path_factory.mktemp("republish")
    settings = replace(Settings(), home=home, kafka_bootstrap_servers=None, database_url=None)
    with running_system(settings, pick_free_port=True) as running:
        yield running


async def _touch_topic(bootstrap: str, topic: str) -> None:
    """What any client does on a broker that lost its log: ask for the topic, which
    auto-creates it with the broker's default partition count."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.partitions_for(topic)
    finally:
        await producer.stop()


def test_republish_after_the_broker_lost_its_log_restores_every_view(
    own_system: RunningSystem,
) -> None:
    system = own_system
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix), suffix)
    journeys(alliance, 6, sessions=2)
    caught_up(system)
    orgs = list(alliance.ids.values())
    before = checksums(system, orgs)
    events_before = sum(
        asyncio.run(
            topic_highwaters(system.bootstrap_servers, [system.topics.referral_events])
        ).values()
    )

    assert system.broker is not None
    system.broker.restart()
    # The running workers' own metadata requests may already have auto-created it; a
    # client touching it makes sure it is there with the broker's own partition count.
    asyncio.run(_touch_topic(system.bootstrap_servers, system.topics.referral_events))
    assert partition_counts(system.bootstrap_servers, [system.topics.referral_events]) == {
        system.topics.referral_events: 4
    }, "Tansu auto-creates a topic with 4 partitions"
    # A worker that restarts now sees that topic: the outcomes runner used to assign the
    # 4 partitions it saw and never read 4 and 5 once republish made it 6 again (CI stall).
    log_path = system.settings.home / "logs" / "outcomes.log"
    assignments = log_path.read_text().count("runner_assigned")
    system.supervisor.kill("outcomes")
    wait_until(lambda: log_path.read_text().count("runner_assigned") > assignments, timeout=60)

    started = time.monotonic()
    result = run_cli(system, "republish")
    republish_seconds = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert "republished" in result.output
    waited = caught_up(system, wait_seconds=90)
    print(
        f"\nrepublish of {events_before} events: {republish_seconds:.2f}s; "
        f"every consumer caught up {waited:.2f}s later"
    )

    counts = partition_counts(system.bootstrap_servers)
    assert counts[system.topics.referral_events] == system.topics.partitions
    assert all(counts[system.topics.org(o)] == system.topics.org_partitions for o in orgs)
    assert (
        sum(
            asyncio.run(
                topic_highwaters(system.bootstrap_servers, [system.topics.referral_events])
            ).values()
        )
        == events_before
    ), "every stored event once on the bus again"
    assert checksums(system, orgs) == before

    # The partner topics were refilled too: a view rebuilt from its topic is the same.
    rebuilt = asyncio.run(
        replay_view(
            system.database_url, system.bootstrap_servers, system.topics, alliance.ids["referrer"]
        )
    )
    assert rebuilt.matches and rebuilt.checksum == before[alliance.ids["referrer"]]

    # Nothing missing now: a second run sends nothing and resets nobody.
    again = run_cli(system, "republish")
    assert again.exit_code == 0, again.output
    assert "nothing was missing" in again.output

    # And the network works as before.
    referrer = alliance.client("referrer")
    created = referrer.post("/referrals", json=referral_body(area=f"area-{suffix}"))
    assert created.status_code == 201, created.text
    rid = created.json()["referral_id"]
    wait_until(lambda: (v := view_of(referrer, rid)) and v["status"] == "routed", timeout=60)


def test_dead_letters_survive_the_broker_losing_its_log(own_system: RunningSystem) -> None:
    """Dead letters are kept in PostgreSQL; the topic only carried notices of them."""
    from tests.ops.test_dead_letters_cli import _created, _produce

    system = own_system
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix), suffix)
    topic = system.topics.org(alliance.ids["referrer"])
    key, _, headers = _created(alliance, uuid.uuid4())
    _produce(system.bootstrap_servers, topic, [((key, b"{not json", headers), None)] * 3)

    def listed() -> list[tuple[object, ...]]:
        result = run_cli(system, "dead-letters", "--json")
        assert result.exit_code == 0, result.output
        return [
            (d["id"], d["reason"], d["source_offset"], d["consumer"])
            for d in json.loads(result.stdout)
            if d["source_topic"] == topic
        ]

    before = wait_until(lambda: len(found := listed()) == 3 and found, timeout=60)
    assert system.broker is not None
    system.broker.restart()
    assert partition_counts(system.bootstrap_servers, [system.topics.dead_letters]) == {}

    assert listed() == before, "the same letters, from PostgreSQL"
    status = run_cli(system, "status", "--json")
    assert json.loads(status.stdout)["dead_letters"] >= 3
    refilled = run_cli(system, "republish")
    assert refilled.exit_code == 0, refilled.output
    assert listed() == before


def _positions(system: RunningSystem) -> list[tuple[object, ...]]:
    return query(
        system,
        "SELECT 'routing', topic, partition, next_offset FROM routing.positions "
        "UNION ALL SELECT 'distributor', topic, partition, next_offset FROM distributor.positions "
        "UNION ALL SELECT 'outcomes', topic, partition, next_offset FROM outcomes.positions "
        "ORDER BY 1, 2, 3",
    )


def test_republish_with_the_broker_unreachable_changes_nothing(
    own_system: RunningSystem,
) -> None:
    system = own_system
    caught_up(system, wait_seconds=90)  # nothing moving, so any change would be ours
    before = _positions(system)
    result = run_cli(system, "republish", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "broker unreachable" in lines[0], result.output
    assert "nothing was changed" in " ".join(result.output.split())
    assert _positions(system) == before


def _events_on_the_bus(system: RunningSystem) -> Counter[str]:
    async def read() -> Counter[str]:
        topic = system.topics.referral_events
        highwater = await topic_highwaters(system.bootstrap_servers, [topic])
        ids: Counter[str] = Counter()
        async for _, messages in read_range(system.bootstrap_servers, {}, highwater):
            for m in messages:
                ids.update(bytes(v).decode() for k, v in m.headers or () if k == "ce_id")
        return ids

    return asyncio.run(read())


def _stored_ids(system: RunningSystem) -> set[str]:
    rows = query(
        system,
        "SELECT event_id::text FROM intake.events UNION ALL "
        "SELECT event_id::text FROM routing.events UNION ALL "
        "SELECT event_id::text FROM outcomes.events",
    )
    return {str(r[0]) for r in rows}


def test_republish_during_traffic_on_an_intact_broker_sends_nothing_twice(
    own_system: RunningSystem,
) -> None:
    """The relays are fenced while republish looks: what they were about to send is
    sent once, by one of them (before: 19-46 events went out twice)."""
    system = own_system
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix), suffix)
    caught_up(system)
    stop = threading.Event()
    errors: list[str] = []

    def traffic() -> None:
        try:
            rid, service = accepted_referral(alliance)
            n = 0
            while not stop.is_set():  # sessions: the quickest command, so the most events
                add_session(service, rid, minutes=10 + n % 50, day=8 + n % 20)
                n += 1
        except Exception as exc:  # reported below, never swallowed
            errors.append(repr(exc))

    drivers = [threading.Thread(target=traffic, daemon=True) for _ in range(4)]
    for driver in drivers:
        driver.start()
    try:
        runs = []
        for _ in range(6):
            result = run_cli(system, "republish")
            assert result.exit_code == 0, result.output
            runs.append(result.output)
    finally:
        stop.set()
        for driver in drivers:
            driver.join(timeout=120)
    assert not errors, errors
    caught_up(system, wait_seconds=90)
    on_bus = _events_on_the_bus(system)
    twice = {i: n for i, n in on_bus.items() if n > 1}
    assert not twice, f"{len(twice)} events published more than once"
    assert set(on_bus) == _stored_ids(system), "every stored event on the bus, once"
    assert all("positions reset" not in out for out in runs), "an intact log resets nobody"


def _ids_on_every_topic(system: RunningSystem) -> Counter[str]:
    """``ce_id`` of every record on ``referral-events`` and every partner topic."""

    async def read() -> Counter[str]:
        names = [t for t in partition_counts(system.bootstrap_servers) if t != "__consumer_offsets"]
        highwater = await topic_highwaters(system.bootstrap_servers, names)
        ids: Counter[str] = Counter()
        async for _, messages in read_range(system.bootstrap_servers, {}, highwater):
            for m in messages:
                ids.update(bytes(v).decode() for k, v in m.headers or () if k == "ce_id")
        return ids

    return asyncio.run(read())


async def _forge_session(system: RunningSystem, rid: str) -> str:
    """As a DBA: a 600-minute session appended with a perfect chain but no seal (the DBA
    has no seal key), with an outbox row so the relay finds it too. Its event id."""
    from psycopg import AsyncConnection

    from bench.tamper import as_dba, forge_append
    from services.outcomes.store import STORE as OUTCOMES

    conn: AsyncConnection[Any]
    async with await AsyncConnection.connect(system.database_url, autocommit=True) as conn:
        await as_dba(conn)
        await forge_append(conn, OUTCOMES, uuid.UUID(rid))
        cur = await conn.execute(
            "SELECT position, event_id::text FROM outcomes.events WHERE stream_id = %s "
            "ORDER BY version DESC LIMIT 1",
            (rid,),
        )
        position, event_id = await cur.fetchone() or (0, "")
        await conn.execute("INSERT INTO outcomes.outbox (event_position) VALUES (%s)", (position,))
        await conn.execute("NOTIFY outcomes_outbox")
        return str(event_id)


# Last in the module: the refused event stays in the store (it is the stores' truth that
# a forgery sits there) and would be "stored but not on the bus" for the tests above.
def test_a_dba_forged_event_reaches_no_topic_through_the_relay_or_republish(
    own_system: RunningSystem,
) -> None:
    system = own_system
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix), suffix)
    rid, service = accepted_referral(alliance)
    add_session(service, rid, minutes=40, day=8)
    wait_until(lambda: (v := view_of(service, rid)) and v["sessions"] == 1, timeout=60)

    forged = asyncio.run(_forge_session(system, rid))
    outbox = (
        "SELECT count(*) FROM outcomes.outbox o JOIN outcomes.events e "
        "ON e.position = o.event_position WHERE e.event_id = %s"
    )
    wait_until(lambda: query(system, outbox, (forged,)) == [(0,)], timeout=30)  # the relay saw it

    result = run_cli(system, "republish")
    assert result.exit_code == 1, result.output
    refused = [line for line in result.output.splitlines() if line.startswith("refused")]
    assert len(refused) == 1 and rid in refused[0] and "forged" in refused[0], result.output
    caught_up(system, wait_seconds=90)
    assert forged not in _ids_on_every_topic(system), "the forged event reached a topic"
    assert view_of(service, rid)["sessions"] == 1  # type: ignore[index]
    status = run_cli(system, "status", "--json")
    assert status.exit_code == 1
    assert json.loads(status.stdout)["refused_events"] == {"outcomes": 1}
