"""``referralnet infra plan|apply`` against the embedded Tansu broker.

Tansu speaks CreateTopics, DescribeConfigs and IncrementalAlterConfigs, so topics and
their configs are exercised for real here. It does not implement CreatePartitions and
only part of the ACL calls (no DeleteAcls; CreateAcls is advertised but never answered):
those must be reported as "not supported by this broker", with exit 1, and the rest
still applied. ACLs and partition growth on Apache Kafka are covered by the plan's unit
tests only (docs/deploy.md says so).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from bus.topics import Topics
from directory.loader import parse
from infra.kafka_plan import wanted as wanted_state
from referralnet.bootstrap import create_schemas
from referralnet.registration import register
from tests.conftest import Stack, alliance_yaml
from tests.deploy.conftest import run_cli

pytestmark = pytest.mark.infra


@pytest.fixture
def admin(stack: Stack) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=stack.bootstrap_servers, client_id="test-infra")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def tenant(stack: Stack) -> tuple[dict[str, str], Topics, list[str]]:
    """A database with a registered alliance, and a topic prefix of its own."""
    suffix = uuid.uuid4().hex[:8]
    url = stack.database.create_database(f"infra_{suffix}")
    parsed = parse(alliance_yaml(suffix))

    async def load() -> None:
        await create_schemas(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await register(conn, parsed)

    asyncio.run(load())
    prefix = f"t{suffix}."
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "DATABASE_URL": url,
        "REFERRALNET_TOPIC_PREFIX": prefix,
        "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    }
    return env, Topics(prefix=prefix), [o.id for o in parsed.organisations]


def _configs(admin: KafkaAdminClient, topic: str) -> dict[str, str]:
    found = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
    )
    return {k: str(v["value"]) for k, v in found["topic"][topic].items()}


def _layout(admin: KafkaAdminClient, prefix: str) -> dict[str, tuple[int, int]]:
    names = [n for n in admin.list_topics() if n.startswith(prefix)]
    if not names:  # describe_topics([]) describes every topic of the cluster
        return {}
    return {
        d["name"]: (len(d["partitions"]), len(d["partitions"][0]["replica_nodes"]))
        for d in admin.describe_topics(names)
    }


def test_apply_creates_every_topic_and_says_what_the_broker_cannot_do(
    tenant: tuple[dict[str, str], Topics, list[str]], admin: KafkaAdminClient
) -> None:
    env, topics, orgs = tenant
    planned = run_cli(env, "infra", "plan", "--json")
    assert planned.exit_code == 0, planned.output
    printed = json.loads(planned.output)
    steps = printed["steps"]
    created = {s["text"].split()[2] for s in steps if s["step"] == "CreateTopic"}
    wanted = {topics.referral_events, topics.dead_letters, *(topics.org(o) for o in orgs)}
    assert created == wanted
    grants = len(wanted_state(topics, orgs).grants)
    assert grants == 2 * len(orgs) + 21  # two per partner, 21 for the six services
    assert sum(s["step"] == "CreateGrant" for s in steps) == grants
    assert printed["unsupported"]["acls"].startswith("not supported by this broker")
    assert _layout(admin, topics.prefix) == {}, "plan changed the cluster"

    applied = run_cli(env, "infra", "apply")
    assert applied.exit_code == 1, applied.output  # the ACLs could not be applied
    assert "acls: not supported by this broker (API key 31 not advertised)" in applied.output
    assert f"{grants} step(s) not applied" in applied.output
    assert _layout(admin, topics.prefix) == {
        name: (topics.partitions_of(name), 3) for name in wanted
    }
    for name in wanted:
        configs = _configs(admin, name)
        assert configs["min.insync.replicas"] == "2"
        assert configs["retention.ms"] == "-1"

    again = run_cli(env, "infra", "apply", "--json")
    assert again.exit_code == 1
    report = json.loads(again.output)
    assert report["done"] == [] and report["failed"] == []
    assert set(report["skipped"]) == {"acls"}


def test_apply_aligns_configs_and_leaves_what_it_must_not_change(
    tenant: tuple[dict[str, str], Topics, list[str]], admin: KafkaAdminClient
) -> None:
    env, topics, _ = tenant
    # As a worker's ensure_topics would have made it, with a week's retention set by hand.
    admin.create_topics(
        {
            topics.referral_events: {
                "num_partitions": 2,
                "replication_factor": 1,
                "configs": {"retention.ms": "604800000"},
            }
        }
    )
    dry = run_cli(env, "infra", "apply", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"add partitions to {topics.referral_events}: 2 -> 6" in dry.output
    assert "retention.ms 604800000 -> -1" in dry.output
    assert "replication factor 1, wanted 3" in dry.output
    assert _configs(admin, topics.referral_events)["retention.ms"] == "604800000"

    applied = run_cli(env, "infra", "apply")
    assert applied.exit_code == 1
    assert "partitions: not supported by this broker" in applied.output
    assert f"done: set configs of {topics.referral_events}" in applied.output
    assert _configs(admin, topics.referral_events)["retention.ms"] == "-1"
    assert _configs(admin, topics.referral_events)["min.insync.replicas"] == "2"
    after = run_cli(env, "infra", "plan")
    assert "set configs" not in after.output
    assert "kafka-reassign-partitions.sh" in after.output  # still said, never done


def test_an_unreachable_broker_is_one_line_and_exit_1(
    tenant: tuple[dict[str, str], Topics, list[str]],
) -> None:
    env, _, _ = tenant
    result = run_cli({**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "infra", "plan")
    assert result.exit_code == 1
    assert "cannot reach the broker at 127.0.0.1:1" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        (["--min-insync-replicas", "4"], {}, "exceeds --replication-factor 3"),
        (["--partner-principal", "User:partner"], {}, "must contain {org}"),
        (["--service-principal", "relay"], {}, "SERVICE=TYPE:NAME"),
        ([], {"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    tenant: tuple[dict[str, str], Topics, list[str]],
    args: list[str],
    extra_env: dict[str, str],
    message: str,
) -> None:
    env, _, _ = tenant
    result = run_cli({**env, **extra_env}, "infra", "apply", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
