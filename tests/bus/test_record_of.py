"""``record_of``: the one conversion from a client's message, null header values kept.

faust handed header values through ``str(v).encode()``, so a null ``ce_actor`` became
the text ``None`` and the distributor forwarded it; aiokafka hands over None as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from bus.tracking import record_of
from schemas.envelope import EnvelopeError, from_kafka


@dataclass
class Message:
    topic: str = "org.gp"
    partition: int = 1
    offset: int = 7
    key: bytes | None = b"k"
    value: bytes | None = b"{}"
    headers: Any = None


@pytest.mark.parametrize(
    "headers",
    [
        [("ce_actor", None), ("ce_type", b"session-held")],  # aiokafka: a list of tuples
        {"ce_actor": None, "ce_type": b"session-held"},  # faust: sometimes a dict
    ],
)
def test_null_header_values_stay_null(headers: Any) -> None:
    record = record_of(Message(headers=headers))
    assert dict(record.headers) == {"ce_actor": None, "ce_type": b"session-held"}
    assert (record.topic, record.partition, record.offset) == ("org.gp", 1, 7)


def test_text_header_values_become_bytes_and_none_means_no_headers() -> None:
    assert record_of(Message(headers=[("ce_type", "session-held")])).headers == [
        ("ce_type", b"session-held")
    ]
    assert record_of(Message(headers=None)).headers == []


def test_the_codec_names_a_null_header_instead_of_failing_an_assertion() -> None:
    from uuid import uuid4

    from schemas.envelope import to_kafka
    from tests.bus.test_tracking import session_event

    key, value, headers = to_kafka(session_event(uuid4(), 1))
    broken = [(k, None if k == "ce_actor" else v) for k, v in headers]
    with pytest.raises(EnvelopeError, match="ce_actor: is null"):
        from_kafka(key, value, broken)
