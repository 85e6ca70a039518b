"""Topic creation: explicit, with the partition count we want (Tansu auto-creates 4)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

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
