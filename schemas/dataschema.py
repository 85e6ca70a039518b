"""The ``ce_dataschema`` URI: which event type and which version of its schema.

Kept apart from the models so the envelope can read a version without importing
pydantic, and so the registry and the models' generated ``$id`` share one spelling.
"""

from __future__ import annotations

PREFIX = "urn:referralnet:schema:"


class SchemaError(ValueError):
    """An event's type, version or data does not match a known schema; ``str()`` says why."""


def dataschema_uri(event_type: str, version: int) -> str:
    """``urn:referralnet:schema:<type>:<version>``, the value of ``ce_dataschema``."""
    return f"{PREFIX}{event_type}:{version}"


def parse_dataschema(uri: str) -> tuple[str, int]:
    """Split a ``ce_dataschema`` URI into (event type, version); SchemaError if malformed."""
    if not uri.startswith(PREFIX):
        raise SchemaError(f"dataschema {uri!r} does not start with {PREFIX!r}")
    event_type, sep, version = uri[len(PREFIX) :].rpartition(":")
    if not sep or not event_type:
        raise SchemaError(f"dataschema {uri!r} is not {PREFIX}<type>:<version>")
    # isdecimal() alone admits non-ASCII digits and int() admits "+1" or "1_0".
    if not (version.isascii() and version.isdecimal()) or version.startswith("0"):
        raise SchemaError(f"dataschema {uri!r}: version {version!r} is not a positive integer")
    return event_type, int(version)
