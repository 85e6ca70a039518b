"""Poison events parked on ``dead-letters``: list them, and re-drive one after a fix.

A dead letter carries the original key, value and headers plus why and where from
(``bus.dead_letters`` headers). Re-driving publishes the original record to its source
topic again with ``x-dead-letter-retry``, which lets it past the stream-version dedup
(it was never applied); every consumer of that topic sees it again. It also parks a
marker on ``dead-letters`` saying so, which the listing reads: a re-driven letter is
no longer pending (``--all`` still shows it, with where it went).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from bus import dead_letters as dlq
from bus.topics import Topics
from bus.tracking import RETRY_HEADER
from referralnet.ops import log

DLQ_HEADERS = frozenset(
    {dlq.REASON, dlq.SOURCE_TOPIC, dlq.SOURCE_PARTITION, dlq.SOURCE_OFFSET, dlq.CONSUMER}
)


RETRIED = "x-dead-letter-retried"
"""Header of a marker record: the id of the dead letter that was re-driven."""
RETRIED_TO = "x-dead-letter-retried-to"


class NoSuchDeadLetter(LookupError):
    """The id names no record on the dead-letters topic (or names several)."""


@dataclass(frozen=True)
class DeadLetter:
    """One parked event: where it sits, why, and what it was."""

    partition: int
    offset: int
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    consumer: str
    type: str | None
    subject: str | None
    parked_at: datetime
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    retried_to: str | None = None  # topic[partition]@offset, once re-driven

    @property
    def id(self) -> str:
        """``partition:offset`` on the dead-letters topic: what ``retry`` takes."""
        return f"{self.partition}:{self.offset}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "consumer": self.consumer,
            "type": self.type,
            "subject": self.subject,
            "parked_at": self.parked_at.isoformat(),
            "retried_to": self.retried_to,
        }


def _text(headers: dict[str, bytes], name: str) -> str:
    return headers.get(name, b"").decode("utf-8", "replace")


def _int(headers: dict[str, bytes], name: str) -> int:
    try:
        return int(_text(headers, name))
    except ValueError:
        return -1


def parse(partition: int, offset: int, timestamp_ms: int, record: Any) -> DeadLetter:
    """A dead-letters record as a ``DeadLetter`` (lenient: poison is often half-formed)."""
    raw = [(k, v if isinstance(v, bytes) else bytes(v or b"")) for k, v in record.headers or ()]
    named = dict(raw)
    return DeadLetter(
        partition=partition,
        offset=offset,
        reason=_text(named, dlq.REASON),
        source_topic=_text(named, dlq.SOURCE_TOPIC),
        source_partition=_int(named, dlq.SOURCE_PARTITION),
        source_offset=_int(named, dlq.SOURCE_OFFSET),
        consumer=_text(named, dlq.CONSUMER),
        type=_text(named, "ce_type") or None,
        subject=_text(named, "ce_subject") or None,
        parked_at=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
        key=record.key,
        value=record.value,
        headers=[(k, v) for k, v in raw if k not in DLQ_HEADERS],
    )


async def list_dead_letters(
    bootstrap_servers: str, topics: Topics, *, include_retried: bool = False
) -> list[DeadLetter]:
    """The dead letters on the topic, oldest first: those still pending, or all of them."""
    highwater = await log.topic_highwaters(bootstrap_servers, [topics.dead_letters])
    found: list[DeadLetter] = []
    retried: dict[str, str] = {}
    async for tp, messages in log.read_range(bootstrap_servers, {}, highwater):
        for m in messages:
            named = {k: bytes(v or b"") for k, v in m.headers or ()}
            if RETRIED in named:
                retried[_text(named, RETRIED)] = _text(named, RETRIED_TO)
            else:
                found.append(parse(tp.partition, m.offset, m.timestamp, m))
    letters = [replace(d, retried_to=retried.get(d.id)) for d in found]
    if not include_retried:
        letters = [d for d in letters if d.retried_to is None]
    return sorted(letters, key=lambda d: (d.parked_at, d.partition, d.offset))


def find(letters: list[DeadLetter], ident: str) -> DeadLetter:
    """The dead letter ``ident`` names: ``partition:offset``, or an offset unique to one
    partition."""
    if ":" in ident:
        matches = [d for d in letters if d.id == ident.strip()]
    else:
        matches = [d for d in letters if str(d.offset) == ident.strip()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NoSuchDeadLetter(f"no dead letter {ident!r} (see `referralnet dead-letters`)")
    raise NoSuchDeadLetter(
        f"offset {ident} is on several partitions: use one of " + ", ".join(d.id for d in matches)
    )


async def retry(
    bootstrap_servers: str, letter: DeadLetter, dead_letter_topic: str
) -> tuple[str, int, int]:
    """Publish the original record to its source topic again, then mark the letter as
    re-driven on ``dead_letter_topic``; return where the record went."""
    if not letter.source_topic:
        raise NoSuchDeadLetter(f"dead letter {letter.id} does not say which topic it came from")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", client_id="referralnet-dead-letters"
    )
    await producer.start()
    try:
        marker = json.dumps({"dead_letter": letter.id, "reason": letter.reason}).encode()
        meta = await producer.send_and_wait(
            letter.source_topic,
            value=letter.value,
            key=letter.key,
            headers=[*letter.headers, (RETRY_HEADER, marker)],
        )
        where = f"{meta.topic}[{meta.partition}]@{meta.offset}"
        await producer.send_and_wait(
            dead_letter_topic,
            value=None,
            key=letter.key,
            headers=[(RETRIED, letter.id.encode()), (RETRIED_TO, where.encode())],
        )
    finally:
        await producer.stop()
    return meta.topic, meta.partition, meta.offset
