"""Many partners shared out among view-worker instances, and taken over (issue 17).

The full regional figure (2,000 partners: start-up, memory per view instance, lag after
a burst) is ``python -m bench.partners`` (docs/capacity.md); creating 2,000 view schemas
alone takes minutes on these shared 2-core machines, too long for CI. Here:

- the split itself at 2,000 partners (pure): every partner has exactly one owner, the
  shares are fair, and a member leaving moves only its own partners;
- on the real database and broker, ``PARTNERS`` partners registered (directory, view
  schemas, topics), two view-worker instances' catalogues each host a disjoint share
  covering them all, and when one stops heartbeating (a kill -9 leaves its row behind)
  the survivor's consumer is assigned every partner's partition within the lease.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bench.partners import directory
from bus.membership import LEASE_SECONDS, Membership, owner, share
from bus.runner import TrackedRunner
from bus.topics import Topics
from eventstore.pool import connection_pool
from infra.embedded import EmbeddedBroker
from referralnet.bootstrap import create_schemas, create_topics
from referralnet.registration import register
from tests.conftest import Stack, stack_home
from views.worker import KIND, ViewCatalogue

REGIONAL = 2000
PARTNERS = 120


def test_rendezvous_split_of_2000_partners_is_complete_fair_and_stable() -> None:
    partners = [f"gp-{i}" for i in range(REGIONAL)]
    members = ["views-a", "views-b", "views-c"]
    shares = {m: share(partners, members, m) for m in members}
    owners = Counter(p for s in shares.values() for p in s)
    assert set(owners) == set(partners) and set(owners.values()) == {1}
    for s in shares.values():
        assert abs(len(s) - REGIONAL / 3) < REGIONAL / 3 * 0.15, {
            m: len(x) for m, x in shares.items()
        }
    # "views-b" dies: only its partners move, spread over both survivors.
    survivors = ["views-a", "views-c"]
    moved = [p for p in partners if owner(p, survivors) != owner(p, members)]
    assert sorted(moved) == sorted(shares["views-b"])
    assert {owner(p, survivors) for p in moved} == set(survivors)


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """A broker of its own: the session's should not carry hundreds of extra topics."""
    with stack_home("partners") as home:
        embedded = EmbeddedBroker(home)
        try:
            yield embedded.start()
        finally:
            embedded.stop()


@pytest.mark.infra
async def test_partners_shared_by_two_view_workers_and_taken_over(
    stack: Stack, broker: str
) -> None:
    url = stack.database.create_database(f"t_partners_{uuid.uuid4().hex[:8]}")
    topics = Topics(prefix="")
    await create_schemas(url)
    parsed = directory(PARTNERS)
    conn: psycopg.AsyncConnection[Any]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        tokens = await register(conn, parsed)
    assert len(tokens) == PARTNERS
    await asyncio.to_thread(create_topics, broker, topics, [o.id for o in parsed.organisations])
    every_topic = {topics.org(o.id) for o in parsed.organisations}

    async with connection_pool(url, min_size=1, max_size=4) as pool:
        a, b = Membership(pool, KIND, "views-a"), Membership(pool, KIND, "views-b")
        for m in (a, b, a):  # a's second heartbeat sees b
            await m.heartbeat()
        assert a.members == b.members == ["views-a", "views-b"]
        hosted_a = await ViewCatalogue(pool, broker, topics, a).projections()
        hosted_b = await ViewCatalogue(pool, broker, topics, b).projections()
        assert not hosted_a.keys() & hosted_b.keys()
        assert hosted_a.keys() | hosted_b.keys() == every_topic
        assert min(len(hosted_a), len(hosted_b)) > PARTNERS / 4

        # b is killed: its row stays, its heartbeat stops. a's consumer takes everything.
        runner = TrackedRunner(
            bootstrap_servers=broker,
            pool=pool,
            projections=ViewCatalogue(pool, broker, topics, a).projections,
            partitions_of=topics.partitions_of,
            dead_letter_topic=topics.dead_letters,
            refresh_seconds=1.0,
            tracking_created=True,
        )
        stop = asyncio.Event()
        running = asyncio.gather(runner.run(stop), a.run(stop, url))
        try:
            started = time.monotonic()
            while runner.stats.assigned != PARTNERS:
                assert time.monotonic() - started < LEASE_SECONDS + 30, runner.stats.assigned
                await asyncio.sleep(0.1)  # polling the runner with a deadline
            assert a.members == ["views-a"] and a.owned == PARTNERS
        finally:
            stop.set()
            await running
        async with pool.connection() as c:  # a clean stop gives its partners back at once
            cur = await c.execute("SELECT member FROM runtime.members WHERE kind = %s", (KIND,))
            assert [r[0] for r in await cur.fetchall()] == ["views-b"]
