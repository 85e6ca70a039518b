"""Which component lives in which schema, in the order a fresh database is built.

The service schemas are fixed; each partner's view schema holds ``view`` and
``tracking``. A new component is a module beside this one and one line here.
"""

from __future__ import annotations

from infra.migrations import (
    audit,
    directory,
    distributor,
    events,
    intake,
    keys,
    outcomes,
    routing,
    tokens,
    tracking,
    view,
)
from infra.migrations.runner import Component, Target

EVENTS = events.COMPONENT
TRACKING = tracking.COMPONENT
VIEW = view.COMPONENT
DIRECTORY = directory.COMPONENT
TOKENS = tokens.COMPONENT
INTAKE = intake.COMPONENT
ROUTING = routing.COMPONENT
OUTCOMES = outcomes.COMPONENT
DISTRIBUTOR = distributor.COMPONENT
KEYS = keys.COMPONENT
AUDIT = audit.COMPONENT

COMPONENTS: tuple[Component, ...] = (
    DIRECTORY,
    TOKENS,
    EVENTS,
    INTAKE,
    ROUTING,
    OUTCOMES,
    DISTRIBUTOR,
    KEYS,
    AUDIT,
    TRACKING,
    VIEW,
)

SERVICE_TARGETS: tuple[Target, ...] = (
    Target(DIRECTORY, "directory"),
    Target(TOKENS, "directory"),
    Target(KEYS, "keys"),
    Target(EVENTS, "audit"),
    Target(AUDIT, "audit"),
    Target(EVENTS, "intake"),
    Target(INTAKE, "intake"),
    Target(EVENTS, "routing"),
    Target(ROUTING, "routing"),
    Target(TRACKING, "routing"),
    Target(EVENTS, "outcomes"),
    Target(OUTCOMES, "outcomes"),
    Target(TRACKING, "outcomes"),
    Target(DISTRIBUTOR, "distributor"),
    Target(TRACKING, "distributor"),
)
"""What ``referralnet.bootstrap.create_schemas`` builds, as (component, schema)."""


def view_targets(schema: str) -> tuple[Target, Target]:
    """A partner's view schema: its read model, then its consumer's tracking tables."""
    return Target(VIEW, schema), Target(TRACKING, schema)
