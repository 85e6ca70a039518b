"""Topic creation: explicit, with the partition count we want (Tansu auto-creates 4)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from infra.kafka_security import client_kwargs


def ensure_topics(bootstrap_servers: str, layout: Mapping[str, int]) -> list[str]:
    """Create the topics of ``{topic: partitions}`` that do not exist yet; return those."""
    wanted = sorted(layout)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="referralnet-admin",
        **client_kwargs("kafka-python"),
    )
    try:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            # Another process may win the race; the topic is there either way. Replication
            # -1: the broker's default (KIP-464): 3 on the cluster, 1 on the embedded broker.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(n, num_partitions=layout[n], replication_factor=-1) for n in missing]
                )
        return missing
    finally:
        admin.close()


class TopicMaker:
    """Creates each topic, with the partitions it is made with, before this process first
    publishes to it.

    A producer's first request for a topic the broker does not have makes the broker
    create it with its own partition count (Tansu: 4; Apache Kafka: ``num.partitions``,
    or a refusal where ``auto.create.topics.enable=false``). Seen in CI: a commissioner
    registered while other referrals flowed got its first copies (every commissioner
    receives every event) a moment before the registration created its topic, so its
    topic had 4 partitions instead of 1. Each topic costs one admin request per process.
    """

    def __init__(self, bootstrap_servers: str, partitions_of: Callable[[str], int]) -> None:
        self._bootstrap = bootstrap_servers
        self._partitions_of = partitions_of
        self._made: set[str] = set()

    async def ensure(self, names: Iterable[str]) -> None:
        """Create those of ``names`` this process has not made sure of yet."""
        new = {n for n in names if n not in self._made}
        if new:
            layout = {n: self._partitions_of(n) for n in sorted(new)}
            await asyncio.to_thread(ensure_topics, self._bootstrap, layout)
            self._made |= new
