"""Every registered event type is decided on by every consumer of the journey.

Each consumer module exports ``HANDLES`` and ``IGNORES``, frozensets of event model
classes. Adding an event type to ``schemas`` makes this test fail until each consumer
either handles the new class or lists it as ignored; inside a consumer, the
``assert_never`` of its ``match`` makes mypy fail where a clause is missing.
"""

from __future__ import annotations

import importlib

import pytest

from schemas.events import EventModel
from schemas.registry import ALL_TYPES, latest_version, model_for

CONSUMERS: tuple[str, ...] = (
    "domain.lifecycle",
    "views.projection",
    "services.distributor.policy",
    "referralnet.journey",
    "services.outcomes.projection",
    "services.routing.projection",
)
"""Modules that act on journey events. Add a consumer here when you write one."""

REGISTERED: frozenset[type[EventModel]] = frozenset(
    model_for(t, latest_version(t)) for t in ALL_TYPES
)


def _declared(module_name: str) -> tuple[frozenset[type[EventModel]], frozenset[type[EventModel]]]:
    module = importlib.import_module(module_name)
    return module.HANDLES, module.IGNORES


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_every_registered_type_is_handled_or_ignored(consumer: str) -> None:
    handles, ignores = _declared(consumer)
    undecided = REGISTERED - handles - ignores
    assert not undecided, f"{consumer} neither handles nor ignores " + ", ".join(
        sorted(m.event_type for m in undecided)
    )


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_declarations_are_consistent(consumer: str) -> None:
    handles, ignores = _declared(consumer)
    assert not handles & ignores, f"{consumer} both handles and ignores {handles & ignores}"
    # only latest models: an old version (session-held v1) is upcast by the registry
    stale = (handles | ignores) - REGISTERED
    assert not stale, f"{consumer} names classes consumers never see: {stale}"


def test_a_type_nobody_decided_on_is_caught() -> None:
    """The check itself: an unregistered-in-consumers class shows up as undecided."""

    class Unheard(EventModel):
        event_type = "unheard-of"
        version = 1

    handles, ignores = _declared("domain.lifecycle")
    assert Unheard in (REGISTERED | {Unheard}) - handles - ignores
