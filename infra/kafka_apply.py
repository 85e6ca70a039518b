"""Read a cluster's topics, configs and ACLs, and carry out a plan (``infra.kafka_plan``).

Brokers differ in what they implement: the embedded Tansu broker creates topics and
alters their configs but does not implement CreatePartitions, and advertises CreateAcls
without ever answering it; an Apache Kafka cluster without an authorizer refuses ACL
calls with SECURITY_DISABLED. Such a capability is reported as "not supported by this
broker" with the broker's reason, its steps are skipped, and the rest is still applied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    AlterConfigOp,
    ConfigResource,
    ConfigResourceType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import KafkaError, NoError, TopicAlreadyExistsError

from infra.kafka_access import Grant, Operation, Pattern, Resource
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
)
from infra.kafka_security import KafkaSecurity

REQUEST_TIMEOUT_MS = 10_000
"""Short enough that a broker advertising a call it never answers (Tansu: CreateAcls)
costs 10 s once (the capability is then skipped), long enough for a busy controller."""

BOOTSTRAP_TIMEOUT_MS = 10_000
"""How long to try the bootstrap servers before saying the broker cannot be reached."""

# Kafka protocol API keys (KIP-482 numbering) of the admin calls a plan needs.
API_KEYS = {
    "partitions": (37,),  # CreatePartitions
    "configs": (32, 44),  # DescribeConfigs, IncrementalAlterConfigs
    "acls": (29, 30, 31),  # DescribeAcls, CreateAcls, DeleteAcls
}

_RESOURCE = {Resource.TOPIC: ResourceType.TOPIC, Resource.GROUP: ResourceType.GROUP}
_PATTERN = {
    Pattern.LITERAL: ACLResourcePatternType.LITERAL,
    Pattern.PREFIXED: ACLResourcePatternType.PREFIXED,
}
_OPERATION = {
    Operation.READ: ACLOperation.READ,
    Operation.WRITE: ACLOperation.WRITE,
    Operation.CREATE: ACLOperation.CREATE,
}


def admin_client(
    bootstrap_servers: str, security: KafkaSecurity, request_timeout_ms: int = REQUEST_TIMEOUT_MS
) -> KafkaAdminClient:
    """A kafka-python admin client with the environment's TLS/SASL settings."""
    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="referralnet-infra",
        request_timeout_ms=request_timeout_ms,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        **security.kafka_python(),
    )


def _missing_apis(admin: KafkaAdminClient) -> dict[str, str]:
    versions: dict[Any, Any] = admin.api_versions()
    keys = {int(k) for k in versions}
    return {
        capability: "not supported by this broker (API key "
        + ", ".join(str(k) for k in sorted(set(wanted) - keys))
        + " not advertised)"
        for capability, wanted in API_KEYS.items()
        if not set(wanted) <= keys
    }


def to_grant(acl: ACL) -> Grant | None:
    """The ``Grant`` an ALLOW-any-host ACL stands for; None for any other kind."""
    if acl.permission_type != ACLPermissionType.ALLOW or acl.host != "*":
        return None
    resource = {v: k for k, v in _RESOURCE.items()}.get(acl.resource_pattern.resource_type)
    pattern = {v: k for k, v in _PATTERN.items()}.get(acl.resource_pattern.pattern_type)
    operation = {v: k for k, v in _OPERATION.items()}.get(acl.operation)
    if resource is None or pattern is None or operation is None:
        return None
    return Grant(acl.principal, resource, pattern, acl.resource_pattern.resource_name, operation)


def to_acl(grant: Grant) -> ACL:
    pattern = ResourcePattern(_RESOURCE[grant.resource], grant.name, _PATTERN[grant.pattern])
    return ACL(grant.principal, "*", _OPERATION[grant.operation], ACLPermissionType.ALLOW, pattern)


def _acl_filter(grant: Grant) -> ACLFilter:
    pattern = ResourcePatternFilter(_RESOURCE[grant.resource], grant.name, _PATTERN[grant.pattern])
    return ACLFilter(
        grant.principal, "*", _OPERATION[grant.operation], ACLPermissionType.ALLOW, pattern
    )


def _why(exc: BaseException) -> str:
    return f"not supported by this broker ({type(exc).__name__}: {exc})".replace("\n", " ")


def read_state(admin: KafkaAdminClient, want: Wanted) -> ClusterState:
    """Topics (partitions, replication, the configs the plan manages) and ACLs."""
    unsupported = _missing_apis(admin)
    names = set(admin.list_topics())
    described = admin.describe_topics(sorted(names)) if names else []
    configs: dict[str, dict[str, str] | None] = {n: None for n in names}
    managed = [n for n in sorted(names) if n in want.topics]
    if "configs" not in unsupported and managed:
        try:
            # "all", not "modified": a value equal to the broker's default needs no override.
            found = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n) for n in managed],
                config_filter="all",
            )["topic"]
            for name, entries in found.items():
                configs[name] = {k: str(v["value"]) for k, v in entries.items()} or None
        except KafkaError as exc:
            unsupported["configs"] = _why(exc)
    topics = {
        d["name"]: TopicState(
            partitions=len(d["partitions"]),
            replication_factor=max((len(p["replica_nodes"]) for p in d["partitions"]), default=0),
            configs=configs.get(d["name"]),
        )
        for d in described
    }
    grants: frozenset[Grant] | None = None
    if "acls" not in unsupported:
        try:
            acls, _ = admin.describe_acls(  # raises the broker's error, if any
                ACLFilter(
                    None,
                    None,
                    ACLOperation.ANY,
                    ACLPermissionType.ANY,
                    ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
                )
            )
            grants = frozenset(g for g in (to_grant(a) for a in acls) if g is not None)
        except KafkaError as exc:
            unsupported["acls"] = _why(exc)
    return ClusterState(topics, grants, unsupported)


@dataclass
class ApplyResult:
    """What was done, what was skipped because the broker cannot, and what failed."""

    done: list[Action] = field(default_factory=list)
    skipped: dict[str, list[Action]] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    failed: list[tuple[Action, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed and not self.skipped


def _capability(step: Action) -> str:
    if isinstance(step, AddPartitions):
        return "partitions"
    if isinstance(step, SetTopicConfigs):
        return "configs"
    if isinstance(step, CreateGrant | RevokeGrant):
        return "acls"
    return "topics"


def apply(admin: KafkaAdminClient, steps: Sequence[Action], state: ClusterState) -> ApplyResult:
    """Carry out ``steps`` in order; a capability the broker lacks is skipped whole."""
    result = ApplyResult(unsupported=dict(state.unsupported))
    for step in steps:
        if isinstance(step, Notice):
            continue
        capability = _capability(step)
        if capability in result.unsupported:
            result.skipped.setdefault(capability, []).append(step)
            continue
        try:
            _carry_out(admin, step)
            result.done.append(step)
        except (KafkaError, OSError, ValueError) as exc:
            if _is_unsupported(exc):
                result.unsupported[capability] = _why(exc)
                result.skipped.setdefault(capability, []).append(step)
            else:
                result.failed.append((step, f"{type(exc).__name__}: {exc}"))
    return result


def _is_unsupported(exc: BaseException) -> bool:
    """Errors meaning "this broker cannot", not "this request was wrong"."""
    return type(exc).__name__ in {
        "IncompatibleBrokerVersion",
        "UnsupportedVersionError",
        "SecurityDisabledError",
        "RequestTimedOutError",
        "KafkaTimeoutError",
        "InvalidRequestError",
    }


def _carry_out(admin: KafkaAdminClient, step: Action) -> None:
    if isinstance(step, CreateTopic):
        s = step.spec
        # Created meanwhile (a worker's ensure_topics)? The next plan aligns it.
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(
                {
                    s.name: {
                        "num_partitions": s.partitions,
                        "replication_factor": s.replication_factor,
                        "configs": dict(s.configs),
                    }
                }
            )
    elif isinstance(step, AddPartitions):
        admin.create_partitions({step.topic: step.wanted})
    elif isinstance(step, SetTopicConfigs):
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    step.topic,
                    configs={k: (AlterConfigOp.SET, new) for k, _, new in step.changes},
                )
            ],
            incremental=True,
            raise_on_unknown=False,  # the broker judges the keys, not the client's list
        )
    elif isinstance(step, CreateGrant):
        for error in admin.create_acls([to_acl(step.grant)])["failed"]:
            raise error()
    elif isinstance(step, RevokeGrant):
        for _, _, error in admin.delete_acls([_acl_filter(step.grant)]):
            if error is not NoError:
                raise error()


def topics_of(steps: Iterable[Action]) -> list[str]:
    """Names of the topics a plan creates (for messages)."""
    return [s.spec.name for s in steps if isinstance(s, CreateTopic)]
