"""Ask the broker which offsets exist: a stored position may name one that does not.

Kafka offsets are not contiguous (transaction markers, compaction, a broker that skips
some), so "the next offset after the last record applied" may never hold a record. A
consumer that finds its first fetched record beyond its stored position asks here
whether the offsets in between exist (its fetch ran ahead: seek back) or not (move on).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from infra.kafka_security import client_kwargs


class OffsetProbe:
    """A small consumer of its own, outside any group, started on first use."""

    def __init__(self, bootstrap_servers: str, wait_seconds: float = 5.0) -> None:
        self._bootstrap = bootstrap_servers
        self._wait = wait_seconds
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, topic: str, partition: int, offset: int) -> int | None:
        """Offset of the first record at or after ``offset`` (None: none, or no answer).

        Records before the log's start no longer exist either: the answer is then the
        first offset the log still has.
        """
        async with self._lock:
            consumer = await self._started()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            try:
                batch = await consumer.getmany(tp, timeout_ms=int(self._wait * 1000), max_records=1)
            except OffsetOutOfRangeError:
                first = (await consumer.beginning_offsets([tp])).get(tp)
                return first if first is not None and first > offset else None
            except KafkaError:
                return None
            records: list[Any] = batch.get(tp, [])
            return records[0].offset if records else None

    async def record_at(self, topic: str, partition: int, offset: int) -> Any | None:
        """The record at exactly ``offset`` as a ``bus.tracking.Record`` (None: none
        there, or no answer in time)."""
        from bus.tracking import record_of  # the one conversion; tracking imports us not

        async with self._lock:
            consumer = await self._started()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            try:
                batch = await consumer.getmany(tp, timeout_ms=int(self._wait * 1000), max_records=1)
            except KafkaError:
                return None
            records: list[Any] = batch.get(tp, [])
            return record_of(records[0]) if records and records[0].offset == offset else None

    async def highwater(self, topic: str, partition: int) -> int | None:
        """The partition's high watermark from a fetch response (Tansu's ListOffsets
        "latest" is wrong, infra-notes); None when the broker does not answer in time."""
        async with self._lock:
            consumer = await self._started()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            first = (await consumer.beginning_offsets([tp])).get(tp, 0)
            consumer.seek(tp, first)
            deadline = asyncio.get_running_loop().time() + self._wait
            while asyncio.get_running_loop().time() < deadline:
                try:
                    await consumer.getmany(tp, timeout_ms=100, max_records=1)
                except KafkaError:
                    return None
                found = consumer.highwater(tp)
                if found is not None:
                    return int(found)
            return None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_kwargs("aiokafka"),
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="none",
                fetch_max_wait_ms=100,
                max_partition_fetch_bytes=64 * 1024,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
