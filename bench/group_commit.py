"""Group commit: the appends of many concurrent commands share one transaction.

A command that appends one event pays for a handful of round trips and a commit (an
fsync) of its own; with 16 clients on two cores that, not the work, sets the rate. The
committer queues appends while a commit is in flight and writes everything queued in
the next one: stream heads in one query, events and outbox rows in one statement, one
commit. Each append keeps its own result: a stream not at its expected version fails
only that append with ``ConcurrencyError``, exactly as ``EventStore.append`` would, and
a version taken by a writer outside the committer (the primary key catches it) makes
the batch fall back to one transaction per append, so only the loser fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, errors

from bench.bulk import heads_and_positions
from eventstore.records import GENESIS_HASH, NewEvent, StoredEvent
from eventstore.rows import Row, chained_rows
from eventstore.store import ConcurrencyError, EventStore


@dataclass
class _Pending:
    stream_id: UUID
    expected_version: int
    events: Sequence[NewEvent]
    future: asyncio.Future[list[StoredEvent]]
    rows: list[Row] = field(default_factory=list)


class GroupCommitter:
    """Appends to one store through ``writers`` connections, batching concurrent calls.

    Use as ``async with GroupCommitter(url, store) as gc: await gc.append(...)``.
    Batches form naturally: while one commit is in flight the next batch queues up, so a
    lone command waits for nobody and a crowd shares commits.
    """

    def __init__(
        self, conninfo: str, store: EventStore, *, writers: int = 1, max_batch: int = 512
    ) -> None:
        self.store = store
        self._conninfo = conninfo
        self._writers = writers
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: list[AsyncConnection[Any]] = []
        self.batches = 0
        self.appends = 0

    async def __aenter__(self) -> GroupCommitter:
        for _ in range(self._writers):
            conn = await AsyncConnection.connect(self._conninfo, autocommit=True)
            self._conns.append(conn)
            self._tasks.append(asyncio.create_task(self._write(conn)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for _ in self._tasks:
            self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks)
        for conn in self._conns:
            await conn.close()

    async def append(
        self, stream_id: UUID, expected_version: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent]:
        """Like ``EventStore.append`` in a transaction of its own, but shared."""
        if not events:
            return []
        future: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(stream_id, expected_version, events, future))
        return await future

    async def _write(self, conn: AsyncConnection[Any]) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:  # closing: finish this batch, then stop
                    self._queue.put_nowait(None)
                    break
                batch.append(item)
            await self._commit(conn, batch)

    async def _commit(self, conn: AsyncConnection[Any], batch: list[_Pending]) -> None:
        self.batches += 1
        self.appends += len(batch)
        try:
            async with conn.transaction():
                accepted = await self._check(conn, batch)
                stored = await self._insert_rows(conn, accepted)
        except errors.UniqueViolation:
            await self._one_by_one(conn, [p for p in batch if not p.future.done()])
            return
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, events in zip(accepted, stored, strict=True):
            if not p.future.done():  # the caller may have been cancelled meanwhile
                p.future.set_result(events)

    async def _check(self, conn: AsyncConnection[Any], batch: list[_Pending]) -> list[_Pending]:
        """Chain every append whose stream is where it expected; fail the others."""
        heads, positions = await heads_and_positions(
            conn, self.store, (p.stream_id for p in batch), sum(len(p.events) for p in batch)
        )
        accepted = []
        start = 0
        for p in batch:
            version, prev = heads.get(p.stream_id, (0, GENESIS_HASH))
            if version != p.expected_version:
                p.future.set_exception(ConcurrencyError(p.stream_id, p.expected_version, version))
                continue
            end = start + len(p.events)
            p.rows, prev = chained_rows(p.stream_id, version, prev, p.events, positions[start:end])
            start = end
            heads[p.stream_id] = (version + len(p.rows), prev)
            accepted.append(p)
        return accepted

    async def _insert_rows(
        self, conn: AsyncConnection[Any], accepted: list[_Pending]
    ) -> list[list[StoredEvent]]:
        rows = [r for p in accepted for r in p.rows]
        if not rows:
            return [[] for _ in accepted]
        stored = iter(await self.store.insert_rows(conn, rows))  # in the rows' order
        result = []
        for p in accepted:
            result.append([next(stored) for _ in p.rows])
        return result

    async def _one_by_one(self, conn: AsyncConnection[Any], batch: list[_Pending]) -> None:
        """After a race with an outside writer: each append alone, so only losers fail."""
        for p in batch:
            try:
                events = await self.store.append(conn, p.stream_id, p.expected_version, p.events)
            except Exception as exc:
                if not p.future.done():
                    p.future.set_exception(exc)
            else:
                if not p.future.done():
                    p.future.set_result(events)
