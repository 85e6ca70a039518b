"""The HTTP contract (OpenAPI) and the bus contract (the events) agree, field by field.

Every request body the API takes is walked, with the objects nested in it; each field
either becomes a field of an event (compared: type, enum, const, format, pattern and
bounds, in the two published documents) or is declared as never reaching the bus. A new
request model, a new field or a type that drifts from its event's fails here (issue 14,
must-have 6). Where the API is deliberately stricter than the event (a size guard), the
difference is listed below with its reason, so it cannot appear unnoticed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from referralnet.gateway import create_app
from schemas.registry import latest_version, model_for
from services.intake import requests as intake
from services.outcomes import requests as outcomes
from services.routing import api as routing

JsonSchema = dict[str, Any]

# request schema -> (event type, {request field: event field}); a nested object maps to the
# event's nested object ("consent") or, for MeasureTaken, to the event of each measure.
BECOMES: dict[str, tuple[str, dict[str, str]]] = {
    "ReferralRequest": (
        "referral-created",
        {n: n for n in ("needs", "consent", "area", "urgency", "referred_at")},
    ),
    "Acceptance": ("referral-accepted", {"accepted_at": "accepted_at"}),
    "Declining": ("referral-declined", {"reason": "reason", "declined_at": "declined_at"}),
    "FirstContact": ("first-contact-made", {"contacted_at": "contacted_at", "mode": "mode"}),
    "SessionHeld": (
        "session-held",
        {"kind": "kind", "minutes": "duration_minutes", "mode": "mode", "held_at": "held_at"},
    ),
    "ActivityReferral": (
        "activity-referred",
        {"activity_id": "activity_id", "referred_at": "referred_at"},
    ),
    "Attendance": ("activity-attended", {"attended_at": "attended_at", "attended": "attended"}),
    "OutcomeRecord": (
        "outcome-recorded",
        {n: n for n in ("measure", "items", "score", "timepoint", "recorded_at")},
    ),
    "MeasureTaken": ("outcome-recorded", {n: n for n in ("measure", "items", "score")}),
    "Assessment": ("outcome-recorded", {"timepoint": "timepoint", "recorded_at": "recorded_at"}),
    "Closing": ("referral-closed", {"reason": "reason", "closed_at": "closed_at"}),
    "ErasureRequest": ("person-erased", {"reason": "reason"}),
    "WithdrawalRequest": (
        "consent-withdrawn",
        {"consent": "consent", "withdrawn_at": "withdrawn_at"},
    ),
}
NOT_ON_THE_BUS = {
    ("ReferralRequest", "person"): "personal data stays in intake (encrypted)",
    ("Assessment", "measures"): "each measure becomes its own outcome-recorded (MeasureTaken)",
}
NESTED_IN_EVENT = {("ReferralRequest", "consent")}
"""Request objects compared with the event's nested object of the same field."""
STRICTER_IN_THE_API = {
    ("ReferralRequest", "needs", "maxItems"): "a body-size guard; the event allows each of "
    "the 12 needs once, so more than 12 never reach it",
    ("MeasureTaken", "items", "maxItems"): "a body-size guard; the measure's scoring refuses "
    "any other count of items (ONS4 4, UCLA-3 3, SWEMWBS 7, WEMWBS 14)",
    ("OutcomeRecord", "items", "maxItems"): "the same, for one measure",
}
COMPARED = (
    "type",
    "enum",
    "const",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
)


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> JsonSchema:
    home = tmp_path_factory.mktemp("home")
    spec: JsonSchema = create_app("postgresql://unused/none", Path(home)).openapi()
    return spec


def _resolve(schema: JsonSchema, document: JsonSchema) -> JsonSchema:
    while "$ref" in schema:
        target = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def contract(schema: JsonSchema, document: JsonSchema) -> JsonSchema:
    """What a field accepts, from its JSON Schema: refs resolved, an optional field's
    ``null`` branch dropped, the words (title, description, examples) left out."""
    schema = _resolve(schema, document)
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        schema = {**_resolve(branches[0], document), "nullable": True}
    found = {k: schema[k] for k in COMPARED if k in schema}
    if "items" in schema:
        found["items"] = contract(schema["items"], document)
    if schema.get("type") == "object" and "properties" in schema:
        found["properties"] = {
            name: contract(sub, document) for name, sub in schema["properties"].items()
        }
    return found


def request_bodies(openapi: JsonSchema) -> set[str]:
    """Every schema a request body is, or holds as an object, by name."""
    names: set[str] = set()

    def walk(schema: JsonSchema) -> None:
        for branch in (schema, schema.get("items", {}), *schema.get("anyOf", [])):
            if "$ref" in branch:
                name = branch["$ref"].rsplit("/", 1)[1]
                target = openapi["components"]["schemas"][name]
                if target.get("type") == "object" and name not in names:
                    names.add(name)
                    for sub in target.get("properties", {}).values():
                        walk(sub)

    for operations in openapi["paths"].values():
        for operation in operations.values():
            if "requestBody" in operation:
                walk(operation["requestBody"]["content"]["application/json"]["schema"])
    return names


def event_schema(event_type: str) -> JsonSchema:
    schema: JsonSchema = model_for(event_type, latest_version(event_type)).model_json_schema()
    return schema


def test_every_request_body_is_mapped_to_the_events_it_becomes(openapi: JsonSchema) -> None:
    bodies = request_bodies(openapi)
    assert bodies - set(BECOMES) - {"Person", "Consent"} == set(), "map them in BECOMES"
    for name in bodies - {"Person", "Consent"}:
        fields = set(openapi["components"]["schemas"][name]["properties"])
        mapped = set(BECOMES[name][1]) | {f for (n, f) in NOT_ON_THE_BUS if n == name}
        assert fields == mapped, f"{name}: every field must become an event field or be listed"


def _field_pairs(openapi: JsonSchema) -> list[tuple[str, str, JsonSchema, JsonSchema]]:
    pairs = []
    for name, (event_type, fields) in BECOMES.items():
        event = event_schema(event_type)
        request = openapi["components"]["schemas"][name]
        for field, event_field in fields.items():
            assert event_field in event["properties"], f"{event_type} has no {event_field}"
            pairs.append(
                (
                    name,
                    field,
                    contract(request["properties"][field], openapi),
                    contract(event["properties"][event_field], event),
                )
            )
    return pairs


def _without_listed(name: str, field: str, schema: JsonSchema) -> JsonSchema:
    listed = {key for (n, f, key) in STRICTER_IN_THE_API if (n, f) == (name, field)}
    return {k: v for k, v in schema.items() if k not in listed}


def test_each_field_accepts_what_its_event_field_accepts(openapi: JsonSchema) -> None:
    disagree = {}
    for name, field, request, event in _field_pairs(openapi):
        request = _without_listed(name, field, request)
        request.pop("nullable", None)  # the API may default what the event requires
        event = {k: v for k, v in event.items() if k != "nullable"}
        if (name, field) in NESTED_IN_EVENT:  # the event's object may require more
            request.pop("properties"), event.pop("properties")
        if request != event:
            disagree[f"{name}.{field}"] = (request, event)
    assert disagree == {}


def test_nested_request_objects_agree_with_the_events_objects(openapi: JsonSchema) -> None:
    for name, field in NESTED_IN_EVENT:
        event_type, fields = BECOMES[name]
        event = event_schema(event_type)
        request = contract(openapi["components"]["schemas"][name]["properties"][field], openapi)
        inside = contract(event["properties"][fields[field]], event)
        assert request["properties"] == inside["properties"]


def test_the_listed_differences_still_exist(openapi: JsonSchema) -> None:
    """A listed difference that went away must leave the list (it documents the API)."""
    pairs = {(n, f): (r, e) for n, f, r, e in _field_pairs(openapi)}
    for name, field, key in STRICTER_IN_THE_API:
        request, event = pairs[(name, field)]
        assert key in request and request.get(key) != event.get(key), (name, field, key)


def _adapter(model: type[BaseModel], field: str) -> TypeAdapter[Any]:
    info = model.model_fields[field]
    annotation: Any = info.annotation
    if info.metadata:  # the field's bounds (Field(ge=...)) live beside its type
        annotation = Annotated[annotation, *info.metadata]
    return TypeAdapter(annotation)


NUMBERS = [
    (outcomes.MeasureTaken, "score", "outcome-recorded", "score"),
    (outcomes.SessionHeld, "minutes", "session-held", "duration_minutes"),
]


@pytest.mark.parametrize(("model", "field", "event_type", "event_field"), NUMBERS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, 1, 600, 601, 1e308])
def test_a_number_the_event_refuses_is_refused_by_the_api(
    model: type[BaseModel], field: str, event_type: str, event_field: str, value: float
) -> None:
    """What JSON Schema cannot say (NaN and Infinity parse from a request body)."""
    event_model = model_for(event_type, latest_version(event_type))

    def accepts(adapter: TypeAdapter[Any]) -> bool:
        try:
            adapter.validate_python(value)
        except ValidationError:
            return False
        return True

    if not accepts(_adapter(event_model, event_field)):
        assert not accepts(_adapter(model, field))


def test_the_request_modules_define_no_enum_of_their_own() -> None:
    """One definition: the value sets come from ``schemas`` (Literal copies drift)."""
    for module in (intake, outcomes, routing):
        source = Path(str(module.__file__)).read_text()
        assert "Literal[" not in source and "(StrEnum)" not in source, module.__name__
