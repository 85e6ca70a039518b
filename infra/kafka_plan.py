"""Topics and ACLs as code: what the cluster should hold, and the steps to get there.

``plan(wanted(...), current)`` is a pure function of the directory's partners, the topic
layout of ``bus.topics`` and the cluster's current state; ``infra.kafka_apply`` reads
that state from a broker and carries the steps out. Applying a plan and planning again
gives no step: the tool is idempotent.

What it never does: delete a topic (a partner topic without a partner is reported and
left alone: its history may still be wanted), shrink a partition count (Kafka cannot),
or move replicas (reported as a manual step: ``kafka-reassign-partitions.sh``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bus.topics import Topics
from infra.kafka_access import Grant, Principals, wanted_grants


@dataclass(frozen=True)
class Durability:
    """Replication and retention of every topic the system uses."""

    replication_factor: int = 3
    min_insync_replicas: int = 2

    def topic_configs(self) -> dict[str, str]:
        # retention.ms -1: views are rebuilt (`replay`) from the whole partner topic and
        # `republish` skips what is still on referral-events, so the log keeps everything.
        return {
            "min.insync.replicas": str(self.min_insync_replicas),
            "retention.ms": "-1",
            "cleanup.policy": "delete",
        }


@dataclass(frozen=True)
class TopicSpec:
    """A topic as it should be."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


@dataclass(frozen=True)
class Wanted:
    """The whole wanted state: topics and ACL grants."""

    topics: Mapping[str, TopicSpec]
    grants: frozenset[Grant]
    principals: Principals
    partner_topic_prefix: str


def wanted(
    topics: Topics,
    org_ids: Iterable[str],
    durability: Durability | None = None,
    principals: Principals | None = None,
) -> Wanted:
    """The journey log, dead letters and one topic per partner, and everyone's grants."""
    durability = durability or Durability()
    principals = principals or Principals.default()
    orgs = sorted(set(org_ids))
    names = [topics.referral_events, topics.dead_letters, *(topics.org(o) for o in orgs)]
    specs = {
        name: TopicSpec(name, partitions, durability.replication_factor, durability.topic_configs())
        for name, partitions in topics.layout(names).items()
    }
    grants = frozenset(wanted_grants(topics, principals, orgs))
    return Wanted(specs, grants, principals, topics.org(""))


@dataclass(frozen=True)
class TopicState:
    """A topic as the broker describes it; ``configs`` None when it could not say."""

    partitions: int
    replication_factor: int
    configs: Mapping[str, str] | None


@dataclass(frozen=True)
class ClusterState:
    """What the broker holds; ``grants`` None when it cannot list ACLs."""

    topics: Mapping[str, TopicState]
    grants: frozenset[Grant] | None
    unsupported: Mapping[str, str] = field(default_factory=dict)
    """capability ("acls", "configs", "partitions") -> why the broker cannot do it."""


# --- the steps ---------------------------------------------------------------------


@dataclass(frozen=True)
class CreateTopic:
    spec: TopicSpec

    def describe(self) -> str:
        s = self.spec
        configs = ", ".join(f"{k}={v}" for k, v in sorted(s.configs.items()))
        return (
            f"create topic {s.name} (partitions {s.partitions}, "
            f"replication {s.replication_factor}, {configs})"
        )


@dataclass(frozen=True)
class AddPartitions:
    topic: str
    current: int
    wanted: int

    def describe(self) -> str:
        return f"add partitions to {self.topic}: {self.current} -> {self.wanted}"


@dataclass(frozen=True)
class SetTopicConfigs:
    topic: str
    changes: tuple[tuple[str, str | None, str], ...]
    """(key, current value or None if unknown, wanted value)."""

    def describe(self) -> str:
        parts = [f"{k} {'?' if old is None else old} -> {new}" for k, old, new in self.changes]
        return f"set configs of {self.topic}: " + ", ".join(parts)


@dataclass(frozen=True)
class CreateGrant:
    grant: Grant

    def describe(self) -> str:
        return f"grant {self.grant.describe()}"


@dataclass(frozen=True)
class RevokeGrant:
    grant: Grant

    def describe(self) -> str:
        return f"revoke {self.grant.describe()}"


@dataclass(frozen=True)
class Notice:
    """Something the tool will not change by itself; a person decides."""

    text: str

    def describe(self) -> str:
        return f"note: {self.text}"


Action = CreateTopic | AddPartitions | SetTopicConfigs | CreateGrant | RevokeGrant | Notice


def _topic_steps(spec: TopicSpec, state: TopicState | None) -> list[Action]:
    if state is None:
        return [CreateTopic(spec)]
    steps: list[Action] = []
    if state.partitions < spec.partitions:
        steps.append(AddPartitions(spec.name, state.partitions, spec.partitions))
    elif state.partitions > spec.partitions:
        steps.append(
            Notice(
                f"{spec.name} has {state.partitions} partitions, the layout wants "
                f"{spec.partitions}; Kafka cannot remove partitions (left as it is)"
            )
        )
    if state.replication_factor != spec.replication_factor:
        steps.append(
            Notice(
                f"{spec.name} has replication factor {state.replication_factor}, wanted "
                f"{spec.replication_factor}: reassign its replicas with "
                "kafka-reassign-partitions.sh"
            )
        )
    current = state.configs
    changes = tuple(
        (key, None if current is None else current.get(key), value)
        for key, value in sorted(spec.configs.items())
        if current is None or current.get(key) != value
    )
    if changes:
        steps.append(SetTopicConfigs(spec.name, changes))
    return steps


def plan(want: Wanted, current: ClusterState) -> list[Action]:
    """The steps from ``current`` to ``want``: topics first, then configs, then ACLs.

    Grants are created before stale ones are revoked, so a principal never loses an
    operation it still needs while the plan is carried out. Only grants of principals
    this tool manages and on resources under its topic prefix are ever revoked, so
    other tenants' ACLs on a shared cluster are left alone.
    """
    steps: list[Action] = []
    for name in sorted(want.topics):
        steps.extend(_topic_steps(want.topics[name], current.topics.get(name)))
    known = current.grants or frozenset()
    steps.extend(CreateGrant(g) for g in sorted(want.grants - known))
    if current.grants is not None:
        stale = [
            g
            for g in sorted(current.grants - want.grants)
            if want.principals.managed(g.principal) and _ours(g, want)
        ]
        steps.extend(RevokeGrant(g) for g in stale)
    prefix = want.partner_topic_prefix
    orphans = sorted(n for n in current.topics if n.startswith(prefix) and n not in want.topics)
    steps.extend(
        Notice(f"{n} belongs to no partner in the directory (left as it is)") for n in orphans
    )
    return steps


def _ours(grant: Grant, want: Wanted) -> bool:
    """Whether the grant's resource is one of this system's names (prefix included)."""
    prefixes = {want.partner_topic_prefix, *(g.name for g in want.grants)}
    return any(grant.name.startswith(p) for p in prefixes)


def changes(steps: Iterable[Action]) -> list[Action]:
    """The steps that change something (notices only inform)."""
    return [s for s in steps if not isinstance(s, Notice)]
