"""Who may do what on the bus: the ACLs of every service and every partner, as code.

Each service's grants are the Kafka operations its code performs, no more (Kafka denies
everything not granted once an authorizer runs with ``allow.everyone.if.no.acl.found``
false). READ and WRITE imply DESCRIBE on the same resource, so DESCRIBE is not listed
separately. Where each grant comes from:

- ``relay`` (``referralnet.workers.relay``): produces to ``referral-events``.
- ``routing`` / ``distributor`` (faust apps, ``bus.faust_agent``): consume
  ``referral-events`` in the consumer group named by their app id (and commit to it in
  ``sync_group_offsets``); faust creates and reads its own ``<app id>-__assignor-__leader``
  topic; poison events go to ``dead-letters``. The distributor also creates and writes
  every partner topic (``ensure_topics`` at start, ``publish_outgoing`` per batch).
- ``outcomes`` (``bus.runner.TrackedRunner``): reads ``referral-events`` by explicit
  assignment (no group), writes ``dead-letters``.
- ``views`` (``views.worker``): reads every partner topic by assignment, creates the
  topic of a newly registered partner, writes ``dead-letters``.
- ``api`` (``referralnet.ops.status`` behind ``/metrics`` and ``/healthz/<worker>``):
  reads high watermarks of ``referral-events`` and the partner topics, and lists
  ``dead-letters``.
- a partner: reads its own ``org.<id>`` topic, in its own consumer group ``org.<id>``.

The operator who runs ``referralnet infra apply``, ``republish``, ``replay`` and
``dead-letters retry`` is a super user of the cluster (``super.users``): those tools
create, delete and describe topics and ACLs, which is the cluster administrator's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from bus.topics import Topics

ROUTING_APP_ID = "referralnet-routing"
DISTRIBUTOR_APP_ID = "referralnet-distributor"
"""The faust app ids of ``services/routing/app.py`` and ``services/distributor/app.py``
(also their consumer group ids); a test checks they stay equal."""

FAUST_INTERNAL_SUFFIX = "-"
"""faust names its internal topics ``<app id>-...`` (the leader-assignor topic)."""

SERVICES = ("api", "relay", "routing", "distributor", "outcomes", "views")


class Resource(StrEnum):
    TOPIC = "topic"
    GROUP = "group"


class Pattern(StrEnum):
    LITERAL = "literal"
    PREFIXED = "prefixed"


class Operation(StrEnum):
    READ = "read"
    WRITE = "write"
    CREATE = "create"


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL binding: ``principal`` may ``operation`` on a resource (any host)."""

    principal: str
    resource: Resource
    pattern: Pattern
    name: str
    operation: Operation

    def describe(self) -> str:
        star = "*" if self.pattern is Pattern.PREFIXED else ""
        return f"{self.principal} {self.operation.value} {self.resource.value} {self.name}{star}"


@dataclass(frozen=True)
class Principals:
    """Kafka principal of each service, and of a partner (``{org}`` is its id)."""

    services: Mapping[str, str]
    partner_template: str = "User:partner.{org}"

    @classmethod
    def default(cls) -> Principals:
        return cls({s: f"User:referralnet-{s}" for s in SERVICES})

    def partner(self, org_id: str) -> str:
        return self.partner_template.format(org=org_id)

    def managed(self, principal: str) -> bool:
        """Whether ``principal`` is one whose ACLs this tool owns (and so may revoke)."""
        head = self.partner_template.split("{org}", 1)[0]
        return principal in self.services.values() or principal.startswith(head)


def service_grants(topics: Topics, principals: Principals) -> set[Grant]:
    """Every service's grants, from the operations its code performs (module docstring)."""
    T, G = Resource.TOPIC, Resource.GROUP
    L, P = Pattern.LITERAL, Pattern.PREFIXED
    R, W, C = Operation.READ, Operation.WRITE, Operation.CREATE
    events, dead, partner_topics = topics.referral_events, topics.dead_letters, topics.org("")
    routing, distributor = topics.group(ROUTING_APP_ID), topics.group(DISTRIBUTOR_APP_ID)
    table: dict[str, list[tuple[Resource, Pattern, str, Operation]]] = {
        "relay": [(T, L, events, W)],
        "routing": [
            (T, L, events, R),
            (G, L, routing, R),
            (T, P, routing + FAUST_INTERNAL_SUFFIX, C),
            (T, P, routing + FAUST_INTERNAL_SUFFIX, R),
            (T, L, dead, W),
        ],
        "distributor": [
            (T, L, events, R),
            (G, L, distributor, R),
            (T, P, distributor + FAUST_INTERNAL_SUFFIX, C),
            (T, P, distributor + FAUST_INTERNAL_SUFFIX, R),
            (T, P, partner_topics, C),
            (T, P, partner_topics, W),
            (T, L, dead, W),
        ],
        "outcomes": [(T, L, events, R), (T, L, dead, W)],
        "views": [(T, P, partner_topics, R), (T, P, partner_topics, C), (T, L, dead, W)],
        "api": [(T, L, events, R), (T, P, partner_topics, R), (T, L, dead, R)],
    }
    return {
        Grant(principals.services[service], resource, pattern, name, op)
        for service, rows in table.items()
        for resource, pattern, name, op in rows
    }


def partner_grants(topics: Topics, principals: Principals, org_id: str) -> set[Grant]:
    """A partner may read its own topic, in its own consumer group, and nothing else."""
    who, name = principals.partner(org_id), topics.org(org_id)
    return {
        Grant(who, Resource.TOPIC, Pattern.LITERAL, name, Operation.READ),
        Grant(who, Resource.GROUP, Pattern.LITERAL, name, Operation.READ),
    }


def wanted_grants(topics: Topics, principals: Principals, org_ids: Iterable[str]) -> set[Grant]:
    """All grants of the services and of every partner in the directory."""
    grants = service_grants(topics, principals)
    for org in org_ids:
        grants |= partner_grants(topics, principals, org)
    return grants
