"""CloudEvents 1.0 in Kafka binary content mode: the envelope of every event on the bus.

Attributes travel as ``ce_*`` headers and the value is the event's JSON data, so Kafka
tools can filter on headers without parsing payloads (DESIGN §2). This module sits on
every consumer's hot path (replays run it ~100k times a second), so it uses plain
parsing rather than pydantic, and checks only what the envelope itself promises; the
data is validated against its schema by :mod:`schemas.registry`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, NoReturn, cast
from uuid import UUID

from schemas.dataschema import SchemaError, parse_dataschema

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"

# Header names in the order to_kafka writes them; ce_causationid is the one optional.
REQUIRED_HEADERS = (
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
)
OPTIONAL_HEADERS = ("ce_causationid", "ce_orgsequence")
_KNOWN = frozenset(REQUIRED_HEADERS + OPTIONAL_HEADERS)
_DIGESTED = tuple(h for h in REQUIRED_HEADERS + OPTIONAL_HEADERS if h != "ce_orgsequence")

Headers = Sequence[tuple[str, bytes | None]]
"""Kafka record headers as clients hand them over: a value may be null."""

# RFC 3339 date-time (stricter than datetime.fromisoformat, which also takes ISO 8601
# week dates, basic format and naive times); re.ASCII so \d is not any Unicode digit.
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})\Z", re.ASCII
)


class EnvelopeError(ValueError):
    """A Kafka record that is not a valid event envelope; names the header or field at fault.

    Raised by :func:`from_kafka` so a consumer can dead-letter the record with a reason a
    person can act on, and by :func:`to_kafka` so a producer never sends one.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One event as it travels on the bus: CloudEvents attributes plus our extensions.

    ``streamversion`` lets a consumer detect gaps and duplicates per (subject, source);
    ``correlationid``/``causationid`` tie an event to the request and event behind it;
    ``actor`` is the organisation whose action caused it (for views and audit);
    ``orgsequence`` numbers, on a partner topic only, the copies of one subject's events
    that partner received (1, 2, 3 ...), so its consumer can detect gaps there too.
    """

    id: UUID
    source: str
    type: str
    subject: str
    time: datetime
    dataschema: str
    data: dict[str, Any]
    streamversion: int
    correlationid: UUID
    causationid: UUID | None
    actor: str
    orgsequence: int | None = None

    @property
    def schema_version(self) -> int:
        """The data's schema version, as named by ``dataschema``."""
        return parse_dataschema(self.dataschema)[1]


_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CloudEvent))
_VALUES = operator.attrgetter(*_FIELDS)
_POSITION = {name: i for i, name in enumerate(_FIELDS)}


def evolve(event: CloudEvent, **changes: Any) -> CloudEvent:
    """``dataclasses.replace(event, **changes)``, at a third of its cost: the distributor
    makes several copies of every event (pseudonymised, per partner, numbered), and
    replace's per-field checks were a tenth of its time. KeyError for an unknown field."""
    values = list(_VALUES(event))
    for name, value in changes.items():
        values[_POSITION[name]] = value
    return CloudEvent(*values)


def format_time(time: datetime) -> str:
    """RFC 3339 in UTC with ``Z`` and fixed microseconds, so headers sort as text."""
    if time.utcoffset() is None:
        raise EnvelopeError("time", "must be timezone-aware (a naive time has no instant)")
    return time.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def to_kafka(event: CloudEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) for a producer; the key is the subject, so a referral's
    events share a partition and keep their order."""
    if event.streamversion < 1:
        raise EnvelopeError("streamversion", f"must be >= 1, got {event.streamversion}")
    if event.orgsequence is not None and event.orgsequence < 1:
        raise EnvelopeError("orgsequence", f"must be >= 1, got {event.orgsequence}")
    for name in ("source", "type", "actor"):
        if not getattr(event, name):
            raise EnvelopeError(name, "must not be empty")
    if _UUID_TEXT.match(event.subject) is None:
        raise EnvelopeError(
            "subject", f"is not a lowercase hyphenated UUID: {_show(event.subject)}"
        )
    if _dataschema_type(event.dataschema) != event.type:
        raise EnvelopeError("dataschema", f"{event.dataschema!r} does not name type {event.type!r}")
    try:
        value = json.dumps(
            event.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise EnvelopeError("data", f"is not JSON-serialisable: {exc}") from exc
    key = event.subject.encode()
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(event.id).encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
        ("ce_subject", key),
        ("ce_time", format_time(event.time).encode()),
        ("ce_dataschema", event.dataschema.encode()),
        ("content-type", b"application/json"),
        ("ce_streamversion", str(event.streamversion).encode()),
        ("ce_correlationid", str(event.correlationid).encode()),
    ]
    if event.causationid is not None:
        headers.append(("ce_causationid", str(event.causationid).encode()))
    headers.append(("ce_actor", event.actor.encode()))
    if event.orgsequence is not None:
        headers.append(("ce_orgsequence", str(event.orgsequence).encode()))
    return key, value, headers


def digest(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """A signed 64-bit number that differs when two records differ in what makes the
    event: key, value and envelope headers (not ``ce_orgsequence``, which only numbers
    the copy, nor tracing or retry headers). How a consumer tells an exact duplicate of
    a version it applied from a conflicting one (a collision would only make a conflict
    pass for a duplicate: ignored, never applied). Meant for records that passed
    :func:`from_kafka`, where no envelope header is null."""
    named = dict(headers)
    parts = [key or b"", value or b""]
    parts.extend(named.get(name) or b"" for name in _DIGESTED)
    return int.from_bytes(
        hashlib.blake2b(b"\x1f".join(parts), digest_size=8).digest(), "big", signed=True
    )


def from_kafka(key: bytes | None, value: bytes | None, headers: Headers) -> CloudEvent:
    """Parse a record written by :func:`to_kafka` (or any conforming producer).

    Unknown headers are ignored (tracing, retry markers); a known one given twice is
    rejected, since which copy is meant cannot be known. The common case does no more
    than decode and compare; the slow paths only work out which header was wrong.
    """
    h = dict(headers)
    if len(h) != len(headers):
        _reject_repeated(headers)
    # Typed as all-bytes for the fast path: a null value raises AttributeError below,
    # and _reject_undecodable then names it.
    fast = cast(dict[str, bytes], h)
    try:
        specversion = fast["ce_specversion"].decode()
        content_type = fast["content-type"].decode()
        subject_raw = fast["ce_subject"]
        subject = subject_raw.decode()
        streamversion = fast["ce_streamversion"].decode()
        event_type = fast["ce_type"].decode()
        dataschema = fast["ce_dataschema"].decode()
        id_text = fast["ce_id"].decode()
        source = fast["ce_source"].decode()
        time_text = fast["ce_time"].decode()
        correlation = fast["ce_correlationid"].decode()
        actor = fast["ce_actor"].decode()
        causation = _optional(h, "ce_causationid")
        orgsequence = _optional(h, "ce_orgsequence")
    except KeyError:
        _reject_missing(h)
    except (UnicodeDecodeError, AttributeError):
        _reject_undecodable(h)

    if specversion != SPECVERSION:
        _fail("ce_specversion", f"must be {SPECVERSION!r}, got {_show(specversion)}")
    if content_type != CONTENT_TYPE:
        _check_content_type(content_type)
    if key is None:
        _fail("key", "is missing; it must equal ce_subject (the referral id)")
    if key != subject_raw:
        _fail("key", f"{_show(key)} differs from ce_subject {_show(subject_raw)}")
    if _UUID_TEXT.match(subject) is None:
        _fail("ce_subject", f"is not a referral id (a lowercase hyphenated UUID): {_show(subject)}")
    if not (event_type and source and actor):
        _fail(
            "ce_type" if not event_type else "ce_source" if not source else "ce_actor", "is empty"
        )
    if _dataschema_type(dataschema) != event_type:
        _fail(
            "ce_dataschema",
            f"names type {_dataschema_type(dataschema)!r}, ce_type is {event_type!r}",
        )
    return CloudEvent(
        id=_uuid("ce_id", id_text),
        source=source,
        type=event_type,
        subject=subject,
        time=_time(time_text),
        dataschema=dataschema,
        data=_data(value),
        streamversion=_streamversion(streamversion),
        correlationid=_uuid("ce_correlationid", correlation),
        causationid=None if causation is None else _uuid("ce_causationid", causation),
        actor=actor,
        orgsequence=None if orgsequence is None else _sequence("ce_orgsequence", orgsequence),
    )


def _optional(h: dict[str, bytes | None], name: str) -> str | None:
    """An optional header's text; present but null is refused like any bad value."""
    if name not in h:
        return None
    raw = h[name]
    if raw is None:
        _fail(name, "is null")
    return raw.decode()


def _fail(field: str, reason: str) -> NoReturn:
    raise EnvelopeError(field, reason)


def _show(value: str | bytes) -> str:
    """A bounded repr, so a hostile header cannot flood the dead-letter log."""
    text = value if isinstance(value, str) else value.decode(errors="replace")
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _reject_repeated(headers: Headers) -> None:
    """Duplicates are legal in Kafka; only a repeated envelope header is ambiguous."""
    seen: set[str] = set()
    for name, _ in headers:
        if name in _KNOWN and name in seen:
            _fail(name, "appears more than once")
        seen.add(name)


def _reject_missing(h: dict[str, bytes | None]) -> NoReturn:
    missing = [name for name in REQUIRED_HEADERS if name not in h]
    also = f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""
    _fail(missing[0], "required header is missing" + also)


def _reject_undecodable(h: dict[str, bytes | None]) -> NoReturn:
    """Name the header that is null, not bytes, or not UTF-8 (a client may hand over a
    null header value: Kafka allows it, the envelope does not)."""
    for name in REQUIRED_HEADERS + OPTIONAL_HEADERS:
        if name not in h:
            continue
        raw = h[name]
        if raw is None:
            _fail(name, "is null")
        if not isinstance(raw, bytes):
            _fail(name, f"must be bytes, got {type(raw).__name__}")
        try:
            raw.decode()
        except UnicodeDecodeError:
            _fail(name, "is not valid UTF-8")
    _fail("headers", "could not be read as text")


@functools.lru_cache(maxsize=256)
def _dataschema_type(dataschema: str) -> str:
    """Cached: a topic carries a dozen distinct dataschemas, parsed once each."""
    try:
        return parse_dataschema(dataschema)[0]
    except SchemaError as exc:
        _fail("ce_dataschema", str(exc))


def _uuid(name: str, text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        _fail(name, f"is not a UUID: {_show(text)}")


def _time(text: str) -> datetime:
    if _RFC3339.match(text) is None:
        _fail("ce_time", f"is not an RFC 3339 date-time with offset: {_show(text)}")
    try:
        time = datetime.fromisoformat(text)
    except ValueError as exc:
        _fail("ce_time", f"is not a valid date-time: {_show(text)} ({exc})")
    return time if time.tzinfo is UTC else time.astimezone(UTC)


def _streamversion(text: str) -> int:
    return _sequence("ce_streamversion", text)


def _sequence(name: str, text: str) -> int:
    # int() alone would also take " 1", "+1", "1_0" and non-ASCII digits.
    if not (text.isascii() and text.isdecimal()):
        _fail(name, f"is not a positive integer: {_show(text)}")
    version = int(text)
    if version < 1:
        _fail(name, f"must be >= 1, got {version}")
    return version


def _check_content_type(text: str) -> None:
    """Allow ``application/json`` with parameters (any case), as long as it stays UTF-8."""
    media, *params = (part.strip().lower() for part in text.split(";"))
    charset = dict(p.partition("=")[::2] for p in params).get("charset", "utf-8").strip('"')
    if media != CONTENT_TYPE or charset != "utf-8":
        _fail("content-type", f"must be {CONTENT_TYPE!r} (UTF-8), got {_show(text)}")


def _data(value: bytes | None) -> dict[str, Any]:
    if value is None:
        _fail("value", "is missing (a tombstone); it must be the event's JSON data")
    try:
        data = _JSON.decode(value.decode())
    except UnicodeDecodeError:
        _fail("value", "is not valid UTF-8")
    except ValueError as exc:
        _fail("value", f"is not valid JSON: {exc}")
    if not isinstance(data, dict):
        _fail("value", f"must be a JSON object, got {type(data).__name__}")
    return data


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# Built once: json.loads with a keyword argument would build a new decoder per call.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)
