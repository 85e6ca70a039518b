"""``referralnet republish``: the embedded broker restarts empty; the stores refill it.

Runs on its own system: restarting the broker under the session-wide one would pull
the rug from under other tests.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaProducer

from infra.settings import Settings
from referralnet.ops.log import partition_counts, topic_highwaters
from referralnet.ops.replay import replay_view
from referralnet.system import RunningSystem, running_system
from tests.conftest import alliance_yaml, referral_body, register_alliance, wait_until
from tests.ops.conftest import caught_up, checksums, journeys, run_cli, view_of

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
    assert partition_counts(system.bootstrap_servers, [system.topics.referral_events]) == {}
    asyncio.run(_touch_topic(system.bootstrap_servers, system.topics.referral_events))

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

    def listed() -> list[dict[str, object]]:
        result = run_cli(system, "dead-letters", "--json")
        assert result.exit_code == 0, result.output
        return [d for d in json.loads(result.stdout) if d["source_topic"] == topic]

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
