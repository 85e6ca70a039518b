"""Topics a broker auto-created with its own partition count are made right again."""

from __future__ import annotations

import uuid

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from referralnet.ops.log import partition_counts, repair_topics
from tests.conftest import Stack

pytestmark = pytest.mark.infra


def test_missing_topics_are_created_and_wrong_ones_recreated(stack: Stack) -> None:
    wrong, missing = f"t-wrong-{uuid.uuid4().hex[:6]}", f"t-missing-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(wrong, num_partitions=4, replication_factor=1)])
    finally:
        admin.close()
    repair = repair_topics(stack.bootstrap_servers, {wrong: 6, missing: 6})
    assert repair.recreated == [wrong] and repair.created == [missing]
    assert partition_counts(stack.bootstrap_servers, [wrong, missing]) == {wrong: 6, missing: 6}
    assert repair_topics(stack.bootstrap_servers, {wrong: 6, missing: 6}).recreated == []
