"""A consumer that publishes to a partner topic the broker does not have yet creates it
with the partitions it is made with, not the broker's own count.

Seen in CI: a commissioner registered while other referrals flowed got its first copies
(every commissioner receives every event) from the distributor a moment before the
registration created its topic; the producer's request made Tansu create it with 4
partitions instead of 1, and the view read only partition 0.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from bus.admin import TopicMaker
from bus.runner import publish_outgoing
from bus.tracking import Outgoing
from referralnet.ops.log import partition_counts
from tests.bus.test_tracking import session_event
from tests.conftest import Stack

pytestmark = pytest.mark.infra


async def test_the_first_record_to_a_new_partner_topic_finds_it_made_with_one_partition(
    stack: Stack,
) -> None:
    topic = f"org.maker-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    await producer.start()
    try:
        maker = TopicMaker(stack.bootstrap_servers, lambda _topic: 1)
        outgoing = [Outgoing(topic, session_event(uuid.uuid4(), 1)) for _ in range(3)]
        await publish_outgoing(producer, outgoing, maker)
        await publish_outgoing(producer, outgoing[:1], maker)  # made once per process
    finally:
        await producer.stop()
    assert partition_counts(stack.bootstrap_servers, [topic]) == {topic: 1}
