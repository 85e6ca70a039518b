"""Reading and repairing the Kafka log for the operations tools.

Reads use explicit assignment from an offset up to a high watermark taken from fetch
responses: Tansu's ListOffsets "latest" is wrong (infra-notes), so it is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError as AIOKafkaError
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from infra.kafka_security import client_kwargs
from referralnet.lag import highwaters

Offsets = dict[tuple[str, int], int]


def consumer(bootstrap_servers: str, client_id: str) -> AIOKafkaConsumer:
    """A consumer for explicit assignment: no group, no commits, short fetch waits."""
    return AIOKafkaConsumer(
        **client_kwargs("aiokafka"),
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


async def read_range(
    bootstrap_servers: str,
    start: Mapping[tuple[str, int], int],
    until: Mapping[tuple[str, int], int],
    client_id: str = "referralnet-ops",
    stall_seconds: float = 30.0,
) -> AsyncIterator[tuple[TopicPartition, list[Any]]]:
    """Records of each partition from ``start`` (default 0) up to ``until`` (exclusive).

    Raises ``TimeoutError`` when no record arrives for ``stall_seconds`` while some are
    still due (the broker lost them, or is gone).
    """
    due = {tp: end for tp, end in until.items() if end > start.get(tp, 0)}
    if not due:
        return
    reader = consumer(bootstrap_servers, client_id)
    await reader.start()
    try:
        tps = {key: TopicPartition(*key) for key in due}
        reader.assign(list(tps.values()))
        for key, tp in tps.items():
            reader.seek(tp, start.get(key, 0))
        last_progress = time.monotonic()
        while due:
            batches = await reader.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in batches.items():
                key = (tp.topic, tp.partition)
                end = due.get(key)
                if end is None:
                    continue
                wanted = [m for m in messages if m.offset < end]
                if wanted:
                    last_progress = time.monotonic()
                    yield tp, wanted
                if messages and messages[-1].offset + 1 >= end:
                    del due[key]
                    reader.pause(tp)
            if time.monotonic() - last_progress > stall_seconds:
                raise TimeoutError(
                    f"no records for {stall_seconds:.0f}s; still due: "
                    + ", ".join(f"{t}[{p}] up to {o}" for (t, p), o in sorted(due.items()))
                )
    finally:
        await reader.stop()


async def topic_highwaters(bootstrap_servers: str, names: Iterable[str]) -> Offsets:
    """True high watermarks; 0 for every partition of a topic that holds nothing."""
    wanted = sorted(set(names))
    found = await highwaters(bootstrap_servers, wanted)
    counts = partition_counts(bootstrap_servers, wanted)
    return {(t, p): found.get((t, p), 0) for t in wanted for p in range(counts.get(t, 0))}


def _admin(bootstrap_servers: str) -> KafkaAdminClient:
    return KafkaAdminClient(
        **client_kwargs("kafka-python"),
        bootstrap_servers=bootstrap_servers,
        client_id="referralnet-ops",
        request_timeout_ms=10_000,
    )


def partition_counts(bootstrap_servers: str, names: Iterable[str] | None = None) -> dict[str, int]:
    """Partitions per existing topic (all topics when ``names`` is None)."""
    admin = _admin(bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        wanted = existing if names is None else existing & set(names)
        if not wanted:
            return {}
        return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(sorted(wanted))}
    finally:
        admin.close()


@dataclass
class TopicRepair:
    """What ``repair_topics`` had to do."""

    created: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)


def repair_topics(
    bootstrap_servers: str,
    layout: Mapping[str, int],
    timeout: float = 30.0,
    recreate: Iterable[str] = (),
) -> TopicRepair:
    """Make every topic of ``{topic: partitions}`` exist with exactly that many, and the
    topics named in ``recreate`` empty (deleted and created again).

    A broker that lost its log auto-creates a topic on the first produce, with its own
    default partition count (Tansu: 4); records keyed by referral would then land in
    other partitions than before. Such a topic holds nothing the stores cannot refill,
    so it is deleted and created again (a running client may auto-create it in between:
    hence the loop).
    """
    wanted = sorted(layout)
    repair = TopicRepair()
    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap_servers)
    try:
        doomed = sorted(set(recreate) & set(admin.list_topics()))
        if doomed:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                admin.delete_topics(doomed)
            repair.recreated.extend(doomed)
        while True:
            existing = set(admin.list_topics())
            counts = (
                {d["name"]: len(d["partitions"]) for d in admin.describe_topics(wanted)}
                if existing & set(wanted)
                else {}
            )
            missing = [n for n in wanted if n not in existing]
            wrong = [n for n in wanted if n in existing and counts.get(n) != layout[n]]
            if not missing and not wrong:
                return repair
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics still not right after {timeout:.0f}s: {wrong}")
            if wrong:
                with contextlib.suppress(UnknownTopicOrPartitionError):
                    admin.delete_topics(wrong)
                repair.recreated.extend(n for n in wrong if n not in repair.recreated)
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(n, num_partitions=layout[n], replication_factor=-1)
                        for n in [*missing, *wrong]
                    ]
                )
            repair.created.extend(
                n for n in missing if n not in repair.created and n not in repair.recreated
            )
    finally:
        admin.close()


async def broker_reachable(bootstrap_servers: str, wait_seconds: float = 3.0) -> str | None:
    """None when the broker answers a metadata request; else why not."""
    client = AIOKafkaClient(
        **client_kwargs("aiokafka"),
        bootstrap_servers=bootstrap_servers,
        client_id="referralnet-status",
        request_timeout_ms=int(wait_seconds * 1000),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), wait_seconds)
    except (AIOKafkaError, KafkaError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}".rstrip(": ")
    finally:
        await client.close()
    return None
