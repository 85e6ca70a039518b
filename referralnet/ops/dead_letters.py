"""Poison events parked on ``dead-letters``: list them, and re-drive one after a fix.

A dead letter carries the original key, value and headers plus why and where from
(``bus.dead_letters`` headers). Re-driving publishes the original record to its source
topic again with ``x-dead-letter-retry``, which lets it past the stream-version dedup
(it was never applied); every consumer of that topic sees it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


async def list_dead_letters(bootstrap_servers: str, topics: Topics) -> list[DeadLetter]:
    """Every record on the dead-letters topic, oldest first per partition."""
    highwater = await log.topic_highwaters(bootstrap_servers, [topics.dead_letters])
    found: list[DeadLetter] = []
    async for tp, messages in log.read_range(bootstrap_servers, {}, highwater):
        found.extend(parse(tp.partition, m.offset, m.timestamp, m) for m in messages)
    return sorted(found, key=lambda d: (d.parked_at, d.partition, d.offset))


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


async def retry(bootstrap_servers: str, letter: DeadLetter) -> tuple[str, int, int]:
    """Publish the original record to its source topic again; return where it went."""
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
    finally:
        await producer.stop()
    return meta.topic, meta.partition, meta.offset
