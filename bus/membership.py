"""Which instances of a worker kind are alive, and how they share work: PostgreSQL leases.

Each instance of a sharing worker kind (the views worker) keeps a row in
``runtime.members`` fresh: a heartbeat every ``HEARTBEAT_SECONDS`` from a thread of
its own, judged by the database's clock. Rows older than ``LEASE_SECONDS`` belong to
dead instances (a kill -9 leaves its row behind; a clean stop deletes it). Every
instance reads the same live set and computes the same split with rendezvous hashing
(``owner``): each item goes to the live member with the highest hash of (item,
member), so when a member dies only its items move, spread over the survivors, and
when one joins it takes a fair share from each.

This is work sharing, not mutual exclusion. Around a change of membership two instances
may briefly both consume an item; that is safe because every consumer stores its
position in the same transaction as its writes and locks that position row first
(``bus.tracking``): the second transaction waits, then sees the records as already
applied. So no event is lost or applied twice across a hand-over, whatever the timing.

``leader`` is the other pattern, for kinds where one active instance suffices (the
relay's outboxes, outcomes): a session advisory lock, released by PostgreSQL the moment
the holder's connection drops, so a standby takes over within its polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import structlog
from psycopg import AsyncConnection, Connection, OperationalError
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 1.0
LEASE_SECONDS = 6.0
"""A member silent this long is dead: its share moves within this plus one refresh."""

MEMBERSHIP_DDL = """
CREATE SCHEMA IF NOT EXISTS runtime;
CREATE TABLE IF NOT EXISTS runtime.members (
    kind         text        NOT NULL,
    member       text        NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz NOT NULL DEFAULT now(),
    pid          integer     NOT NULL,
    host         text        NOT NULL,
    owned        integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, member)
);
"""


async def create_membership(conn: AsyncConnection[Any]) -> None:
    """Create ``runtime.members`` (idempotent)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('referralnet-ddl'))")
        await conn.execute(MEMBERSHIP_DDL)


def _score(item: str, member: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{item}\0{member}".encode(), digest_size=8).digest())


def owner(item: str, members: Sequence[str]) -> str:
    """The member that owns ``item`` among ``members`` (rendezvous hashing)."""
    return max(members, key=lambda m: _score(item, m))


def share(items: Iterable[str], members: Sequence[str], me: str) -> list[str]:
    """The items ``me`` owns. With no live member listed (not yet heartbeaten), all."""
    if not members:
        return list(items)
    return [i for i in items if owner(i, members) == me]


@dataclass
class Membership:
    """This process's seat among the live instances of ``kind``.

    ``members`` is the live set as of the last heartbeat (sorted, this member included
    once its first heartbeat is written).
    """

    pool: AsyncConnectionPool[AsyncConnection[Any]]
    kind: str
    member: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-"
                        f"{uuid4().hex[:6]}")  # fmt: skip
    """Unique per process start; ``runtime.members.pid`` and ``host`` say which it is."""
    lease_seconds: float = LEASE_SECONDS
    members: list[str] = field(default_factory=list)
    owned: int = 0

    def _renewal(self) -> tuple[str, tuple[object, ...]]:
        return (
            "INSERT INTO runtime.members (kind, member, pid, host, owned) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kind, member) DO UPDATE "
            "SET heartbeat_at = now(), owned = EXCLUDED.owned",
            (self.kind, self.member, os.getpid(), socket.gethostname(), self.owned),
        )

    def _live(self) -> tuple[str, tuple[object, ...]]:
        return (
            "SELECT member FROM runtime.members WHERE kind = %s "
            "AND heartbeat_at > now() - make_interval(secs => %s) ORDER BY member",
            (self.kind, self.lease_seconds),
        )

    async def heartbeat(self) -> list[str]:
        """Renew this member's row; return the live members (and remember them)."""
        async with self.pool.connection() as conn:
            await conn.execute(*self._renewal())
            cur = await conn.execute(*self._live())
            live = [r[0] for r in await cur.fetchall()]
        self._saw(live)
        return live

    def _heartbeat_blocking(self, conn: Connection[Any]) -> None:
        conn.execute(*self._renewal())
        self._saw([r[0] for r in conn.execute(*self._live()).fetchall()])

    def _saw(self, live: list[str]) -> None:
        if live != self.members:
            log.info("members_changed", kind=self.kind, me=self.member, members=live)
            self.members = live  # one assignment: the event loop reads it between awaits

    async def leave(self) -> None:
        """Delete this member's row: the others take its share at their next heartbeat."""
        with contextlib.suppress(OperationalError):
            async with self.pool.connection() as conn:
                await conn.execute(
                    "DELETE FROM runtime.members WHERE kind = %s AND member = %s",
                    (self.kind, self.member),
                )

    async def run(
        self, stop: asyncio.Event, conninfo: str, interval: float = HEARTBEAT_SECONDS
    ) -> None:
        """Heartbeat until ``stop``, then leave. A failed heartbeat is retried.

        The heartbeats run in a thread on a connection of their own: a worker's event
        loop can be busy for seconds (assigning 2,000 partitions, decoding a large
        fetch), and a heartbeat waiting for it made the others take its partners while
        it was alive, then hand them back: partners flapped between instances under
        load (measured at 2,000 partners, docs/capacity.md).
        """
        halt = threading.Event()
        beating = asyncio.create_task(asyncio.to_thread(self._beat, conninfo, halt, interval))
        try:
            await stop.wait()
        finally:
            halt.set()
            await beating
            await self.leave()

    def _beat(self, conninfo: str, halt: threading.Event, interval: float) -> None:
        conn: Connection[Any] | None = None
        try:
            while not halt.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = Connection.connect(conninfo, autocommit=True, connect_timeout=5)
                    self._heartbeat_blocking(conn)
                except OperationalError as exc:  # the database is away: keep trying
                    log.warning("heartbeat_failed", kind=self.kind, error=str(exc))
                    if conn is not None:
                        conn.close()
                        conn = None
                halt.wait(interval)
        finally:
            if conn is not None:
                conn.close()

    def mine(self, items: Iterable[str]) -> list[str]:
        """The items this member owns now."""
        return share(items, self.members, self.member)


@asynccontextmanager
async def leader(
    conninfo: str, key: str, stop: asyncio.Event, instance: str = "", poll_seconds: float = 0.5
) -> AsyncIterator[bool]:
    """Wait until this process holds the advisory lock ``key`` (or ``stop``).

    Yields True while leading (False if stopped before). The lock is held by a
    connection of its own for the whole block; PostgreSQL drops it when that connection
    ends, a kill -9 included, so a standby polling every ``poll_seconds`` takes over.
    The connection's ``application_name`` is ``lock_holder_name(instance, key)``, so
    ``pg_stat_activity`` joined with ``pg_locks`` shows who leads.
    """
    conn = await AsyncConnection.connect(
        conninfo, autocommit=True, application_name=lock_holder_name(instance, key)
    )
    try:
        while not stop.is_set():
            cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))
            row = await cur.fetchone()
            if row and row[0]:
                log.info("leading", key=key)
                yield True
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
        yield False
    finally:
        await conn.close()


def lock_holder_name(instance: str, key: str) -> str:
    """``application_name`` of a connection holding a leadership lock (63 bytes at most)."""
    return f"{instance or os.getpid()}|{key}"[:63]
