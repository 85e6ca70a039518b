"""Event schemas: generated files in step with the models, upcasting, and what is refused."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import BaseModel, ValidationError

from schemas import generate
from schemas.events import (
    ALL_MODELS,
    EventModel,
    Need,
    OutcomeRecorded,
    SessionHeld,
    Timepoint,
    upcast_session_held_v1,
)
from schemas.measures import Measure
from schemas.registry import (
    ALL_TYPES,
    UPCASTERS,
    SchemaError,
    dataschema_uri,
    decode,
    encode,
    latest_version,
    model_for,
    parse_dataschema,
    versions,
)

RID = "6f1c1d8e-3b5a-4c1e-9a57-0d6b2f4e8a11"
AT = "2025-03-04T10:30:00Z"
SESSION_V1 = {
    "referral_id": RID,
    "session_id": "0b7e9f2a-1111-4c1e-9a57-0d6b2f4e8a11",
    "kind": "longer-appointment",
    "minutes": 50,
    "mode": "in-person",
    "held_at": AT,
}

# One valid example per (type, version); test_every_version_has_an_example keeps it complete.
EXAMPLES: dict[tuple[str, int], dict[str, Any]] = {
    ("referral-created", 1): {
        "referral_id": RID,
        "person_ref": "p_k3v9q2m7x1c4b8n5",
        "referrer_org": "gp-abbey-practice",
        "referrer_kind": "gp-practice",
        "needs": ["social-connection", "physical-activity"],
        "urgency": "routine",
        "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": False},
        "area": "bury-st-edmunds",
        "age_band": "65-74",
        "referred_at": AT,
    },
    ("referral-routed", 1): {
        "referral_id": RID,
        "service_org": "lw-west-suffolk",
        "attempt": 1,
        "reason": "area+needs+capacity",
    },
    ("referral-accepted", 1): {
        "referral_id": RID,
        "service_org": "lw-west-suffolk",
        "accepted_at": AT,
    },
    ("referral-declined", 1): {
        "referral_id": RID,
        "service_org": "lw-west-suffolk",
        "reason": "no-capacity",
        "declined_at": AT,
    },
    ("referral-escalated", 1): {
        "referral_id": RID,
        "reason": "no link-worker service with capacity covers the area",
        "tried": ["lw-west-suffolk", "lw-east"],
    },
    ("first-contact-made", 1): {
        "referral_id": RID,
        "service_org": "lw-west-suffolk",
        "contacted_at": AT,
        "mode": "phone",
    },
    ("first-contact-overdue", 1): {
        "referral_id": RID,
        "service_org": "lw-west-suffolk",
        "due_by": AT,
        "sla_days": 5,
    },
    ("session-held", 1): SESSION_V1,
    ("session-held", 2): {
        **{k: v for k, v in SESSION_V1.items() if k != "minutes"},
        "kind": "group",
        "duration_minutes": 90,
        "group_size": 8,
    },
    ("activity-referred", 1): {
        "referral_id": RID,
        "activity_id": "walking-group-bury",
        "provider_org": "ramblers-bury",
        "activity_kind": "walking-group",
        "referred_at": AT,
    },
    ("activity-attended", 1): {
        "referral_id": RID,
        "activity_id": "walking-group-bury",
        "provider_org": "ramblers-bury",
        "attended_at": AT,
        "attended": True,
    },
    ("outcome-recorded", 1): {
        "referral_id": RID,
        "measure": "swemwbs",
        "timepoint": "baseline",
        "items": [3, 3, 3, 3, 3, 3, 3],
        "score": 19.25,
        "recorded_at": AT,
    },
    ("referral-closed", 1): {"referral_id": RID, "reason": "completed", "closed_at": AT},
    ("consent-withdrawn", 1): {
        "referral_id": RID,
        "consent": "share-outcomes-with-referrer",
        "recorded_by": "gp-abbey-practice",
        "withdrawn_at": AT,
    },
    ("person-erased", 1): {
        "referral_id": RID,
        "reason": "objection",
        "requested_by": "lw-west-suffolk",
        "erased_at": AT,
    },
}

PERSONAL = re.compile(r"name|nhs|phone|e_?mail|address|note|dob|birth|postcode", re.IGNORECASE)


def schema_error(event_type: str, version: int, data: Any) -> str:
    with pytest.raises(SchemaError) as caught:
        decode(event_type, version, data)
    return str(caught.value)


# --- generated artefacts --------------------------------------------------------------


def test_committed_schemas_match_the_models() -> None:
    assert generate.check() == [], "run: python -m schemas.generate"


def test_check_reports_missing_changed_and_stale_files(tmp_path: Path) -> None:
    assert "missing: asyncapi.yaml" in generate.check(tmp_path)
    generate.write(tmp_path)
    assert generate.check(tmp_path) == []
    (tmp_path / "jsonschema/session-held.v2.json").write_text("{}\n")
    (tmp_path / "jsonschema/session-held.v9.json").write_text("{}\n")
    generated = len(generate.render()["jsonschema/session-held.v2.json"].splitlines())
    assert generate.check(tmp_path) == [
        f"differs: jsonschema/session-held.v2.json (+{generated} -1 lines)",
        "stale: jsonschema/session-held.v9.json",
    ]
    assert generate.write(tmp_path) == [
        "wrote: jsonschema/session-held.v2.json",
        "removed: jsonschema/session-held.v9.json",
    ]
    assert generate.check(tmp_path) == []


def test_every_version_of_every_type_has_a_schema_file() -> None:
    files = generate.render()
    for event_type in ALL_TYPES:
        for version in versions(event_type):
            assert f"jsonschema/{event_type}.v{version}.json" in files


def test_schema_files_carry_the_dataschema_uri() -> None:
    for model in ALL_MODELS:
        schema = model.model_json_schema()
        assert schema["$id"] == dataschema_uri(model.event_type, model.version)
        assert schema["additionalProperties"] is False


def test_asyncapi_document_describes_topics_key_and_headers() -> None:
    doc = generate.asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == {"referral-events", "org.{orgId}", "dead-letters"}
    message = doc["components"]["messages"]["session-held.v1"]
    assert message["payload"] == {"$ref": "./jsonschema/session-held.v1.json"}
    consts = message["headers"]["allOf"][1]["properties"]
    assert consts["ce_dataschema"]["const"] == "urn:referralnet:schema:session-held:1"
    trait = doc["components"]["messageTraits"]["referral-keyed"]
    assert "referral id" in trait["bindings"]["kafka"]["key"]["description"]


# --- registry -------------------------------------------------------------------------


def test_every_version_has_an_example() -> None:
    every = {(m.event_type, m.version) for m in ALL_MODELS}
    assert set(EXAMPLES) == every


def test_the_journey_types_of_the_design_exist() -> None:
    assert {
        "referral-created",
        "referral-routed",
        "referral-accepted",
        "referral-declined",
        "session-held",
        "activity-referred",
        "outcome-recorded",
        "referral-closed",
    } <= set(ALL_TYPES)


@pytest.mark.parametrize(("event_type", "version"), sorted(EXAMPLES))
def test_examples_decode_and_encode_back(event_type: str, version: int) -> None:
    event = decode(event_type, version, EXAMPLES[(event_type, version)])
    assert type(event) is model_for(event_type, latest_version(event_type))
    if version == latest_version(event_type):
        assert encode(event) == (event_type, version, EXAMPLES[(event_type, version)])


def test_dataschema_uri_round_trips() -> None:
    uri = dataschema_uri("session-held", 2)
    assert uri == "urn:referralnet:schema:session-held:2"
    assert parse_dataschema(uri) == ("session-held", 2)


@pytest.mark.parametrize(
    "uri",
    [
        "urn:other:session-held:1",
        "urn:referralnet:schema:session-held",
        "urn:referralnet:schema::1",
        "urn:referralnet:schema:session-held:01",
        "urn:referralnet:schema:session-held:+1",
    ],
)
def test_malformed_dataschema_is_a_schema_error(uri: str) -> None:
    with pytest.raises(SchemaError):
        parse_dataschema(uri)


def test_unknown_type_and_version_are_named() -> None:
    assert schema_error("referral-teleported", 1, {}) == "unknown event type 'referral-teleported'"
    assert schema_error("session-held", 3, {}) == "session-held has no version 3 (known: 1, 2)"
    with pytest.raises(SchemaError):
        latest_version("referral-teleported")


def test_data_must_be_an_object() -> None:
    reason = schema_error("referral-closed", 1, ["completed"])
    assert reason == "referral-closed v1: data must be a JSON object"


def test_invalid_data_names_each_field() -> None:
    data = {**EXAMPLES[("referral-routed", 1)], "attempt": 0, "service_org": "Not A Slug"}
    reason = schema_error("referral-routed", 1, data)
    assert reason.startswith("referral-routed v1: ")
    assert "service_org: String should match pattern" in reason
    assert "attempt: Input should be greater than or equal to 1" in reason


def test_missing_field_is_named() -> None:
    data = {k: v for k, v in EXAMPLES[("referral-closed", 1)].items() if k != "closed_at"}
    assert (
        schema_error("referral-closed", 1, data) == "referral-closed v1: closed_at: Field required"
    )


# --- upcasting ------------------------------------------------------------------------


def test_session_held_v1_is_read_as_v2() -> None:
    event = decode("session-held", 1, SESSION_V1)
    assert isinstance(event, SessionHeld)
    assert event.duration_minutes == 50
    assert event.group_size is None
    assert encode(event)[:2] == ("session-held", 2)


def test_upcaster_is_pure() -> None:
    before = copy.deepcopy(SESSION_V1)
    upcast = upcast_session_held_v1(SESSION_V1)
    assert before == SESSION_V1
    assert "minutes" not in upcast
    assert upcast["duration_minutes"] == 50


def test_v1_is_judged_by_the_v1_schema() -> None:
    reason = schema_error("session-held", 1, {**SESSION_V1, "minutes": 601})
    assert reason.startswith("session-held v1: minutes:")
    reason = schema_error("session-held", 1, {**SESSION_V1, "duration_minutes": 50})
    assert "duration_minutes: Extra inputs are not permitted" in reason


def test_every_old_version_has_an_upcaster() -> None:
    for event_type in ALL_TYPES:
        for version in versions(event_type)[:-1]:
            assert (event_type, version) in UPCASTERS
    assert versions("session-held") == (1, 2)


# --- what every model refuses ---------------------------------------------------------


@pytest.mark.parametrize(("event_type", "version"), sorted(EXAMPLES))
def test_extra_fields_are_refused(event_type: str, version: int) -> None:
    data = {**EXAMPLES[(event_type, version)], "notes": "lives alone, hard of hearing"}
    assert "notes: Extra inputs are not permitted" in schema_error(event_type, version, data)


def test_nested_consent_refuses_extra_fields_too() -> None:
    data = copy.deepcopy(EXAMPLES[("referral-created", 1)])
    data["consent"]["signed_by"] = "daughter"
    assert "consent.signed_by: Extra inputs" in schema_error("referral-created", 1, data)


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for info in model.model_fields.values():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _field_names(annotation)
    return names


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: f"{m.event_type}.v{m.version}")
def test_no_field_is_named_like_personal_data(model: type[EventModel]) -> None:
    assert [name for name in _field_names(model) if PERSONAL.search(name)] == []


def test_models_are_immutable() -> None:
    event = decode("referral-closed", 1, EXAMPLES[("referral-closed", 1)])
    with pytest.raises(ValidationError):
        setattr(event, "reason", "died")  # noqa: B010 (mypy would reject the assignment)


def test_times_must_carry_a_zone() -> None:
    data = {**EXAMPLES[("referral-closed", 1)], "closed_at": "2025-03-04T10:30:00"}
    assert "closed_at: Input should have timezone info" in schema_error("referral-closed", 1, data)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"needs": []}, "needs: List should have at least 1 item"),
        ({"needs": ["stress", "stress"]}, "needs: each need may be listed once"),
        ({"needs": ["boredom"]}, "needs.0: Input should be"),
        ({"urgency": "stat"}, "urgency: Input should be"),
        ({"age_band": "12-15"}, "age_band: Input should be"),
        ({"person_ref": "Jane Smith"}, "person_ref: String should match pattern"),
        (
            {"consent": {"share_with_link_worker": False, "share_outcomes_with_referrer": True}},
            "consent.share_with_link_worker: Input should be True",
        ),
    ],
)
def test_referral_created_refuses(change: dict[str, Any], reason: str) -> None:
    data = {**EXAMPLES[("referral-created", 1)], **change}
    assert reason in schema_error("referral-created", 1, data)


def test_need_values_are_the_gravity_domains_plus_health_needs() -> None:
    assert {n.value for n in Need} == {
        "social-connection",
        "stress",
        "financial-insecurity",
        "housing-instability",
        "homelessness",
        "food-insecurity",
        "employment-status",
        "transportation-insecurity",
        "digital-access",
        "physical-activity",
        "mental-wellbeing",
        "long-term-condition",
    }


# --- outcome-recorded runs the measures ---------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"items": [3, 3, 3, 3, 3, 3, 6]}, "items[6]: allowed an integer 1-5, got 6"),
        ({"items": [3, 3, 3]}, "items: allowed exactly 7 answers for swemwbs, got 3"),
        ({"score": 21.0}, "score: allowed 19.25 (the score of the items given), got 21.0"),
        ({"score": None}, "outcome-recorded v1: score: allowed the headline score 19.25, got None"),
        ({"items": None, "score": 20.0}, "score: allowed a SWEMWBS metric score"),
        ({"items": ["3"] * 7}, "items.0: Input should be a valid integer"),
        ({"measure": "ons4", "items": [5, 5, 5, 11], "score": None}, "items[3] (anxious)"),
        ({"measure": "ons4", "items": [5, 5, 5, 5]}, "ONS4 items are reported, never summed"),
        ({"measure": "activity-minutes", "items": None, "score": 10081}, "weekly minutes"),
        ({"timepoint": "midway"}, "timepoint: Input should be"),
    ],
)
def test_outcome_recorded_validates_the_measure(change: dict[str, Any], reason: str) -> None:
    data = {**EXAMPLES[("outcome-recorded", 1)], **change}
    assert reason in schema_error("outcome-recorded", 1, data)


def test_record_fills_in_the_headline_score() -> None:
    event = OutcomeRecorded.record(
        referral_id=UUID(RID),
        measure=Measure.UCLA3,
        timepoint=Timepoint.FOLLOW_UP,
        items=[1, 2, 1],
        score=None,
        recorded_at=datetime(2025, 3, 4, 10, 30, tzinfo=UTC),
    )
    assert event.score == 4.0
    assert event.scored().higher_is_better is False


def test_ons4_outcome_has_no_headline() -> None:
    data = {
        **EXAMPLES[("outcome-recorded", 1)],
        "measure": "ons4",
        "items": [7, 8, 6, 3],
        "score": None,
    }
    event = decode("outcome-recorded", 1, data)
    assert isinstance(event, OutcomeRecorded)
    assert event.scored().per_item == {
        "life_satisfaction": 7,
        "worthwhile": 8,
        "happy": 6,
        "anxious": 3,
    }
