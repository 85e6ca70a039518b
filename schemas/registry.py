"""Which model reads which (type, version), and how old versions become the latest.

Consumers call :func:`decode` with what the envelope says (``ce_type`` and the version
in ``ce_dataschema``) and always get the latest model, so handlers are written once per
type however old the event (the stores keep v1 events forever; replays read them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.dataschema import SchemaError, dataschema_uri, parse_dataschema
from schemas.events import ALL_MODELS, EventModel, upcast_session_held_v1

__all__ = [
    "ALL_TYPES",
    "EventModel",
    "SchemaError",
    "dataschema_uri",
    "decode",
    "encode",
    "latest_version",
    "model_for",
    "parse_dataschema",
    "versions",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""A pure function from version N's JSON data to version N+1's."""

_MODELS: dict[tuple[str, int], type[EventModel]] = {
    (model.event_type, model.version): model for model in ALL_MODELS
}
_LATEST: dict[str, int] = {}
for _type, _version in _MODELS:
    _LATEST[_type] = max(_version, _LATEST.get(_type, 0))

ALL_TYPES: tuple[str, ...] = tuple(_LATEST)
"""Every event type, in journey order."""

UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("session-held", 1): upcast_session_held_v1,
}
"""(type, N) → the upcaster from version N to N+1."""


def model_for(event_type: str, version: int) -> type[EventModel]:
    """The model of one version of one type; SchemaError if there is none."""
    try:
        return _MODELS[(event_type, version)]
    except KeyError:
        if event_type not in _LATEST:
            raise SchemaError(f"unknown event type {event_type!r}") from None
        raise SchemaError(
            f"{event_type} has no version {version} (known: {_known(event_type)})"
        ) from None


def latest_version(event_type: str) -> int:
    """The version producers write today."""
    try:
        return _LATEST[event_type]
    except KeyError:
        raise SchemaError(f"unknown event type {event_type!r}") from None


def versions(event_type: str) -> tuple[int, ...]:
    """Every version of a type ever published, oldest first."""
    latest_version(event_type)  # unknown type: SchemaError
    return tuple(sorted(v for t, v in _MODELS if t == event_type))


def decode(event_type: str, version: int, data: dict[str, Any]) -> EventModel:
    """Validate ``data`` against its own version, then upcast it step by step to the latest.

    Validating the old version first means an event is judged by the schema it was
    written against, and an upcaster only ever sees data that was valid when written.
    """
    model = model_for(event_type, version)
    if not isinstance(data, dict):
        raise SchemaError(f"{event_type} v{version}: data must be a JSON object")
    event = _validate(model, data, f"{event_type} v{version}")
    while version < _LATEST[event_type]:
        upcast = UPCASTERS[(event_type, version)](event.model_dump(mode="json"))
        version += 1
        event = _validate(
            _MODELS[(event_type, version)], upcast, f"{event_type} v{version} (upcast)"
        )
    return event


def encode(model: EventModel) -> tuple[str, int, dict[str, Any]]:
    """(type, version, JSON-compatible data) to put in an event store or on the bus."""
    return model.event_type, model.version, model.model_dump(mode="json")


def _validate(model: type[EventModel], data: dict[str, Any], what: str) -> EventModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SchemaError(f"{what}: {_reasons(exc)}") from exc


def _reasons(exc: ValidationError) -> str:
    """All problems as ``field.path: message``, one line fit for a dead-letter header."""
    return "; ".join(_reason(err) for err in exc.errors(include_url=False))


def _reason(err: ErrorDetails) -> str:
    # A ValueError raised by our own validators (e.g. MeasureError) already names its
    # field and reads well; pydantic would prefix "Value error, ".
    msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
    path = ".".join(str(part) for part in err["loc"])
    return f"{path}: {msg}" if path else msg


def _known(event_type: str) -> str:
    return ", ".join(str(v) for v in versions(event_type))
