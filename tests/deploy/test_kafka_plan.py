"""Topics and ACLs as code, without a broker: the wanted state, the plan, idempotence."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from bus.topics import Topics
from infra.kafka_access import (
    DISTRIBUTOR_APP_ID,
    ROUTING_APP_ID,
    Grant,
    Operation,
    Pattern,
    Principals,
    Resource,
)
from infra.kafka_plan import (
    Action,
    AddPartitions,
    ClusterState,
    CreateGrant,
    CreateTopic,
    Notice,
    RevokeGrant,
    SetTopicConfigs,
    TopicState,
    Wanted,
    changes,
    plan,
    wanted,
)

TOPICS = Topics()
ORGS = ["gp-a", "lw-b", "icb-c"]
EMPTY = ClusterState({}, frozenset())


def simulate(state: ClusterState, steps: list[Action]) -> ClusterState:
    """What a broker that does everything would hold after ``steps``."""
    topics = dict(state.topics)
    grants = set(state.grants or ())
    for step in steps:
        if isinstance(step, CreateTopic):
            s = step.spec
            topics[s.name] = TopicState(s.partitions, s.replication_factor, dict(s.configs))
        elif isinstance(step, AddPartitions):
            topics[step.topic] = replace(topics[step.topic], partitions=step.wanted)
        elif isinstance(step, SetTopicConfigs):
            configs = dict(topics[step.topic].configs or {})
            configs.update({k: new for k, _, new in step.changes})
            topics[step.topic] = replace(topics[step.topic], configs=configs)
        elif isinstance(step, CreateGrant):
            grants.add(step.grant)
        elif isinstance(step, RevokeGrant):
            grants.discard(step.grant)
    return ClusterState(topics, frozenset(grants))


def test_every_topic_is_replicated_three_times_with_two_in_sync() -> None:
    want = wanted(TOPICS, ORGS)
    assert set(want.topics) == {
        "referral-events",
        "dead-letters",
        "org.gp-a",
        "org.lw-b",
        "org.icb-c",
    }
    for spec in want.topics.values():
        assert spec.replication_factor == 3
        assert spec.configs["min.insync.replicas"] == "2"
        assert spec.partitions == TOPICS.partitions_of(spec.name)


def test_a_partner_may_read_only_its_own_topic_in_its_own_group() -> None:
    want = wanted(TOPICS, ORGS)
    mine = {g for g in want.grants if g.principal == "User:partner.gp-a"}
    assert mine == {
        Grant("User:partner.gp-a", Resource.TOPIC, Pattern.LITERAL, "org.gp-a", Operation.READ),
        Grant("User:partner.gp-a", Resource.GROUP, Pattern.LITERAL, "org.gp-a", Operation.READ),
    }


def test_services_get_exactly_the_operations_their_code_uses() -> None:
    from services.distributor.app import APP_ID as DISTRIBUTOR
    from services.routing.app import APP_ID as ROUTING

    assert (ROUTING, DISTRIBUTOR) == (ROUTING_APP_ID, DISTRIBUTOR_APP_ID)
    want = wanted(TOPICS, ORGS)

    def of(service: str) -> set[str]:
        return {g.describe().split(" ", 1)[1] for g in want.grants if g.principal.endswith(service)}

    assert of("relay") == {"write topic referral-events"}
    assert of("outcomes") == {"read topic referral-events", "write topic dead-letters"}
    assert of("views") == {"read topic org.*", "create topic org.*", "write topic dead-letters"}
    assert of("routing") == {
        "read topic referral-events",
        "read group referralnet-routing",
        "create topic referralnet-routing-*",
        "read topic referralnet-routing-*",
        "write topic dead-letters",
    }
    assert of("distributor") == {
        "read topic referral-events",
        "read group referralnet-distributor",
        "create topic referralnet-distributor-*",
        "read topic referralnet-distributor-*",
        "create topic org.*",
        "write topic org.*",
        "write topic dead-letters",
    }
    assert of("api") == {
        "read topic referral-events",
        "read topic org.*",
        "read topic dead-letters",
    }
    # Nobody but the distributor writes partner topics; nobody but the relay the log.
    writers = {g.principal for g in want.grants if g.operation is Operation.WRITE}
    assert writers == {
        "User:referralnet-relay",
        "User:referralnet-distributor",
        "User:referralnet-routing",
        "User:referralnet-outcomes",
        "User:referralnet-views",
    }
    assert {
        g.principal
        for g in want.grants
        if g.operation is Operation.WRITE and g.name != "dead-letters"
    } == {"User:referralnet-relay", "User:referralnet-distributor"}


def test_a_prefix_moves_every_name_and_grant() -> None:
    want = wanted(Topics(prefix="north."), ["gp-a"])
    assert set(want.topics) == {"north.referral-events", "north.dead-letters", "north.org.gp-a"}
    # Topics and consumer groups alike, the faust apps' groups and internal topics too:
    # two alliances on one cluster share no name.
    assert all(g.name.startswith("north.") for g in want.grants)
    assert {g.name for g in want.grants if g.resource is Resource.GROUP} == {
        "north.referralnet-routing",
        "north.referralnet-distributor",
        "north.org.gp-a",
    }


def test_the_faust_apps_consume_in_the_prefixed_groups_the_grants_name() -> None:
    from services.distributor.app import build as distributor
    from services.routing.app import build as routing

    topics = Topics(prefix="north.")
    groups = {g.name for g in wanted(topics, []).grants if g.resource is Resource.GROUP}
    apps = [
        routing("127.0.0.1:1", "postgresql://nowhere/none", topics),
        distributor("127.0.0.1:1", "postgresql://nowhere/none", topics, b"s" * 32),
    ]
    assert {a.conf.id for a in apps} == groups


def test_an_empty_cluster_gets_every_topic_and_grant_and_then_nothing() -> None:
    want = wanted(TOPICS, ORGS)
    steps = plan(want, EMPTY)
    assert {s.spec.name for s in steps if isinstance(s, CreateTopic)} == set(want.topics)
    assert {s.grant for s in steps if isinstance(s, CreateGrant)} == want.grants
    assert plan(want, simulate(EMPTY, steps)) == []


def test_a_removed_partner_loses_its_grants_but_not_its_topic() -> None:
    before = wanted(TOPICS, ORGS)
    state = simulate(EMPTY, plan(before, EMPTY))
    after = wanted(TOPICS, ["gp-a", "lw-b"])
    steps = plan(after, state)
    revoked = {s.grant for s in steps if isinstance(s, RevokeGrant)}
    assert revoked == {g for g in before.grants if g.principal == "User:partner.icb-c"}
    assert [s for s in steps if isinstance(s, Notice)] == [
        Notice("org.icb-c belongs to no partner in the directory (left as it is)")
    ]
    assert not [s for s in steps if isinstance(s, CreateTopic | CreateGrant)]


def test_grants_of_other_principals_and_other_tenants_are_left_alone() -> None:
    want = wanted(Topics(prefix="north."), ["gp-a"])
    foreign = {
        Grant(
            "User:someone-else", Resource.TOPIC, Pattern.LITERAL, "north.org.gp-a", Operation.READ
        ),
        Grant(
            "User:referralnet-relay", Resource.TOPIC, Pattern.LITERAL, "south.x", Operation.WRITE
        ),
    }
    state = simulate(EMPTY, plan(want, EMPTY))
    state = replace(state, grants=frozenset(set(state.grants or ()) | foreign))
    assert changes(plan(want, state)) == []


def test_what_it_will_not_do_is_said_not_done() -> None:
    want = wanted(TOPICS, ["gp-a"])
    configs = dict(want.topics["referral-events"].configs)
    state = ClusterState(
        {
            "referral-events": TopicState(12, 1, configs),
            "dead-letters": TopicState(2, 3, {**configs, "retention.ms": "604800000"}),
            "org.gp-a": TopicState(1, 3, None),
        },
        None,
    )
    steps = plan(want, state)
    texts = [s.describe() for s in steps]
    assert any("referral-events has 12 partitions" in t for t in texts)
    assert any("replication factor 1, wanted 3" in t for t in texts)
    assert AddPartitions("dead-letters", 2, 6) in steps
    assert SetTopicConfigs("dead-letters", (("retention.ms", "604800000", "-1"),)) in steps
    # Configs the broker could not report are all set; ACLs it could not list all granted.
    unknown = next(s for s in steps if isinstance(s, SetTopicConfigs) and s.topic == "org.gp-a")
    assert {k for k, old, _ in unknown.changes if old is None} == set(configs)
    assert {s.grant for s in steps if isinstance(s, CreateGrant)} == want.grants
    assert not [s for s in steps if isinstance(s, RevokeGrant)]


org_ids = st.lists(st.from_regex(r"[a-z]{1,6}-[a-z0-9]{1,4}", fullmatch=True), max_size=6)


@st.composite
def cluster_states(draw: st.DrawFn, want: Wanted) -> ClusterState:
    topics = {}
    for name, spec in want.topics.items():
        if draw(st.booleans()):
            configs = {
                k: draw(st.sampled_from([v, "1", "604800000"]))
                for k, v in spec.configs.items()
                if draw(st.booleans())
            }
            partitions = draw(st.integers(1, spec.partitions))
            topics[name] = TopicState(partitions, spec.replication_factor, configs)
    grants = draw(st.sets(st.sampled_from(sorted(want.grants)))) if want.grants else set()
    stale = draw(
        st.sets(
            st.builds(
                Grant,
                st.sampled_from(["User:partner.gone-1", "User:referralnet-views"]),
                st.sampled_from(list(Resource)),
                st.just(Pattern.LITERAL),
                st.sampled_from(["org.gone-1", "referral-events"]),
                st.sampled_from(list(Operation)),
            ),
            max_size=4,
        )
    )
    return ClusterState(topics, frozenset(grants | stale))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), orgs=org_ids, prefix=st.sampled_from(["", "north."]))
def test_planning_again_after_applying_finds_nothing_to_do(
    data: st.DataObject, orgs: list[str], prefix: str
) -> None:
    want = wanted(Topics(prefix=prefix), orgs, principals=Principals.default())
    state = data.draw(cluster_states(want))
    steps = plan(want, state)
    after = simulate(state, steps)
    assert changes(plan(want, after)) == []
    for name, spec in want.topics.items():
        assert after.topics[name].partitions == spec.partitions
        assert {k: v for k, v in (after.topics[name].configs or {}).items()} == dict(spec.configs)
    assert after.grants is not None and want.grants <= after.grants
