"""The CloudEvents envelope: what to_kafka writes, and every way from_kafka refuses a record."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.envelope import CloudEvent, EnvelopeError, from_kafka, to_kafka
from schemas.registry import ALL_TYPES, dataschema_uri

REFERRAL = UUID("6f1c1d8e-3b5a-4c1e-9a57-0d6b2f4e8a11")
Headers = list[tuple[str, bytes]]


def make_event(**changes: Any) -> CloudEvent:
    event = CloudEvent(
        id=UUID("0b7e9f2a-1111-4c1e-9a57-0d6b2f4e8a11"),
        source="/services/outcomes",
        type="session-held",
        subject=str(REFERRAL),
        time=datetime(2025, 3, 4, 10, 30, 15, 123456, tzinfo=UTC),
        dataschema=dataschema_uri("session-held", 2),
        data={"referral_id": str(REFERRAL), "duration_minutes": 45, "kind": "group"},
        streamversion=3,
        correlationid=UUID("0b7e9f2a-2222-4c1e-9a57-0d6b2f4e8a11"),
        causationid=UUID("0b7e9f2a-3333-4c1e-9a57-0d6b2f4e8a11"),
        actor="lw-west-suffolk",
    )
    return replace(event, **changes)


def record() -> tuple[bytes, bytes, Headers]:
    return to_kafka(make_event())


def with_header(headers: Headers, name: str, value: Any) -> Headers:
    """``headers`` with ``name`` set to ``value`` (or removed when value is None)."""
    out = [(n, v) for n, v in headers if n != name]
    return out if value is None else [*out, (name, value)]


def rejection(key: bytes | None, value: bytes | None, headers: Headers) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as caught:
        from_kafka(key, value, headers)
    return caught.value


def test_round_trip_keeps_every_attribute() -> None:
    event = make_event()
    assert from_kafka(*to_kafka(event)) == event


def test_round_trip_without_causation_omits_the_header() -> None:
    event = make_event(causationid=None)
    key, value, headers = to_kafka(event)
    assert "ce_causationid" not in dict(headers)
    assert from_kafka(key, value, headers) == event


def test_wire_form_is_binary_content_mode() -> None:
    key, value, headers = record()
    assert key == str(REFERRAL).encode()
    assert value == b'{"duration_minutes":45,"kind":"group","referral_id":"' + key + b'"}'
    assert headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"0b7e9f2a-1111-4c1e-9a57-0d6b2f4e8a11"),
        ("ce_source", b"/services/outcomes"),
        ("ce_type", b"session-held"),
        ("ce_subject", key),
        ("ce_time", b"2025-03-04T10:30:15.123456Z"),
        ("ce_dataschema", b"urn:referralnet:schema:session-held:2"),
        ("content-type", b"application/json"),
        ("ce_streamversion", b"3"),
        ("ce_correlationid", b"0b7e9f2a-2222-4c1e-9a57-0d6b2f4e8a11"),
        ("ce_causationid", b"0b7e9f2a-3333-4c1e-9a57-0d6b2f4e8a11"),
        ("ce_actor", b"lw-west-suffolk"),
    ]


def test_time_in_another_zone_is_written_in_utc() -> None:
    local = datetime(2025, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    key, value, headers = to_kafka(make_event(time=local))
    assert dict(headers)["ce_time"] == b"2025-06-01T08:00:00.000000Z"
    parsed = from_kafka(key, value, headers).time
    assert parsed == local
    assert parsed.tzinfo is UTC


def test_offset_times_from_other_producers_are_read_as_utc() -> None:
    key, value, headers = record()
    headers = with_header(headers, "ce_time", b"2025-03-04T12:30:15+02:00")
    assert from_kafka(key, value, headers).time == datetime(2025, 3, 4, 10, 30, 15, tzinfo=UTC)


def test_unknown_and_repeated_foreign_headers_are_ignored() -> None:
    key, value, headers = record()
    extra = [*headers, ("traceparent", b"00-abc"), ("traceparent", b"00-def")]
    assert from_kafka(key, value, extra) == make_event()


@pytest.mark.parametrize(
    "content_type", [b"application/json; charset=utf-8", b'Application/JSON;charset="UTF-8"']
)
def test_json_content_type_with_utf8_parameter_is_accepted(content_type: bytes) -> None:
    key, value, headers = record()
    assert from_kafka(key, value, with_header(headers, "content-type", content_type))


def test_schema_version_comes_from_dataschema() -> None:
    assert make_event().schema_version == 2


REQUIRED = [
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_subject",
    "ce_time",
    "ce_dataschema",
    "content-type",
    "ce_streamversion",
    "ce_correlationid",
    "ce_actor",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_required_header_is_named(name: str) -> None:
    key, value, headers = record()
    error = rejection(key, value, with_header(headers, name, None))
    assert error.field == name
    assert "missing" in error.reason


def test_all_missing_headers_are_listed() -> None:
    error = rejection(b"k", b"{}", [])
    assert error.field == "ce_specversion"
    assert "also missing: ce_id" in str(error)


BAD_HEADERS: list[tuple[str, Any, str]] = [
    ("ce_specversion", b"0.3", "must be '1.0', got '0.3'"),
    ("content-type", b"text/plain", "must be 'application/json'"),
    ("content-type", b"application/json; charset=latin-1", "(UTF-8)"),
    ("content-type", b"application/cloudevents+json", "must be 'application/json'"),
    ("ce_id", b"not-a-uuid", "is not a UUID: 'not-a-uuid'"),
    ("ce_correlationid", b"1234", "is not a UUID: '1234'"),
    ("ce_causationid", b"", "is not a UUID: ''"),
    ("ce_source", b"", "is empty"),
    ("ce_type", b"", "is empty"),
    ("ce_actor", b"", "is empty"),
    ("ce_source", b"\xff\xfe", "is not valid UTF-8"),
    ("ce_actor", "lw-west", "must be bytes, got str"),
    ("ce_specversion", "1.0", "must be bytes, got str"),
    ("ce_subject", b"\xff", "is not valid UTF-8"),
    ("ce_streamversion", 3, "must be bytes, got int"),
    ("ce_streamversion", "\u0663".encode(), "is not a positive integer"),
    ("ce_time", b"2025-03-04T10:30:15", "is not an RFC 3339 date-time with offset"),
    ("ce_time", b"2025-03-04 10:30:15Z", "is not an RFC 3339 date-time"),
    ("ce_time", b"2025-W10-2T10:30:15Z", "is not an RFC 3339 date-time"),
    ("ce_time", b"yesterday", "is not an RFC 3339 date-time"),
    ("ce_time", b"2025-13-04T10:30:15Z", "is not a valid date-time"),
    ("ce_time", b"2025-03-04T10:30:15+25:00", "is not a valid date-time"),
    ("ce_streamversion", b"0", "must be >= 1, got 0"),
    ("ce_streamversion", b"-1", "is not a positive integer: '-1'"),
    ("ce_streamversion", b"+1", "is not a positive integer"),
    ("ce_streamversion", b" 1", "is not a positive integer"),
    ("ce_streamversion", b"three", "is not a positive integer"),
    ("ce_dataschema", b"https://example.org/s.json", "does not start with"),
    ("ce_dataschema", b"urn:referralnet:schema:session-held:0", "is not a positive integer"),
    ("ce_dataschema", b"urn:referralnet:schema:session-held", "is not urn:referralnet"),
    ("ce_dataschema", b"urn:referralnet:schema:referral-closed:1", "ce_type is 'session-held'"),
]


@pytest.mark.parametrize(("name", "bad", "reason"), BAD_HEADERS)
def test_ill_formed_header_is_refused_with_its_name(name: str, bad: Any, reason: str) -> None:
    key, value, headers = record()
    error = rejection(key, value, with_header(headers, name, bad))
    assert error.field == name
    assert reason in error.reason
    assert str(error).startswith(f"{name}: ")


def test_repeated_envelope_header_is_refused() -> None:
    key, value, headers = record()
    error = rejection(key, value, [*headers, ("ce_id", str(uuid4()).encode())])
    assert (error.field, error.reason) == ("ce_id", "appears more than once")


def test_subject_must_be_a_canonical_referral_id() -> None:
    key, value, headers = record()
    upper = key.upper()
    error = rejection(upper, value, with_header(headers, "ce_subject", upper))
    assert error.field == "ce_subject"
    assert "lowercase hyphenated UUID" in error.reason


@pytest.mark.parametrize(
    ("key", "reason"),
    [(None, "is missing"), (str(uuid4()).encode(), "differs from ce_subject")],
)
def test_key_must_equal_subject(key: bytes | None, reason: str) -> None:
    _, value, headers = record()
    error = rejection(key, value, headers)
    assert error.field == "key"
    assert reason in error.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "is missing (a tombstone)"),
        (b"\xff{}", "is not valid UTF-8"),
        (b"{not json", "is not valid JSON"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"text"', "must be a JSON object, got str"),
    ],
)
def test_value_must_be_a_json_object(value: bytes | None, reason: str) -> None:
    key, _, headers = record()
    error = rejection(key, value, headers)
    assert error.field == "value"
    assert reason in error.reason


def test_long_bad_values_are_truncated_in_the_reason() -> None:
    key, value, headers = record()
    error = rejection(key, value, with_header(headers, "ce_id", b"x" * 10_000))
    assert len(str(error)) < 150


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"time": datetime(2025, 1, 1)}, "time"),
        ({"streamversion": 0}, "streamversion"),
        ({"actor": ""}, "actor"),
        ({"subject": str(REFERRAL).upper()}, "subject"),
        ({"dataschema": dataschema_uri("referral-closed", 1)}, "dataschema"),
        ({"data": {"x": math.nan}}, "data"),
        ({"data": {"x": object()}}, "data"),
    ],
)
def test_to_kafka_refuses_what_from_kafka_would(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        to_kafka(make_event(**changes))
    assert caught.value.field == field


# Lone surrogates cannot be encoded as UTF-8; no producer can send them.
_text = st.text(st.characters(exclude_categories=["Cs"]))
_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def cloud_events(draw: st.DrawFn) -> CloudEvent:
    event_type = draw(st.sampled_from(ALL_TYPES))
    offset = draw(st.integers(min_value=-23 * 60, max_value=23 * 60))
    return CloudEvent(
        id=draw(st.uuids()),
        source=draw(_text.filter(bool)),
        type=event_type,
        subject=str(draw(st.uuids())),
        time=draw(
            st.datetimes(
                min_value=datetime(1970, 1, 2),
                max_value=datetime(2999, 12, 30),
                timezones=st.just(timezone(timedelta(minutes=offset))),
            )
        ),
        dataschema=dataschema_uri(event_type, draw(st.integers(min_value=1, max_value=99))),
        data=draw(st.dictionaries(_text, _json, max_size=6)),
        streamversion=draw(st.integers(min_value=1, max_value=2**63 - 1)),
        correlationid=draw(st.uuids()),
        causationid=draw(st.none() | st.uuids()),
        actor=draw(_text.filter(bool)),
    )


@given(cloud_events())
def test_any_event_survives_the_round_trip(event: CloudEvent) -> None:
    key, value, headers = to_kafka(event)
    assert from_kafka(key, value, headers) == event
    assert json.loads(value) == event.data


def accepted_or_refused(key: bytes | None, value: bytes | None, headers: Headers) -> None:
    try:
        from_kafka(key, value, headers)
    except EnvelopeError as error:
        assert error.field in {*REQUIRED, "ce_causationid", "key", "value"}


@given(
    st.sampled_from([*REQUIRED, "ce_causationid"]),
    st.binary(max_size=40) | _text.map(str.encode),
    st.binary(max_size=40),
)
def test_any_corruption_is_an_envelope_error(name: str, header: bytes, value: bytes) -> None:
    """Whatever arrives, a consumer gets a CloudEvent or an EnvelopeError, never a crash."""
    key, good_value, headers = record()
    accepted_or_refused(key, good_value, with_header(headers, name, header))
    accepted_or_refused(key, value, headers)
