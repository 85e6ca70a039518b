"""Outbox relay: publishes a store's outbox to ``referral-events`` and only then forgets it.

Rows are deleted after the broker acknowledged them (acks=all), so a crash or a broker
outage means "publish again", never "lost". One relay per store holds an advisory lock
(session level, on a connection named ``<instance>|relay:<store>``), so further relay
processes are hot standbys rather than a source of reordering: while the leader lives,
nobody else publishes that store; when it dies (kill -9 included) PostgreSQL releases
its lock with its connection and a standby takes over within a second, starting from
the outbox rows the leader had not deleted. What the dead leader had published but not
yet deleted is published again, in the same order: consumers drop such re-deliveries
by stream version (``bus.ordering``), so "twice on the bus" never means "applied twice".

Each batch runs in a transaction holding ``FENCE`` shared. ``republish`` takes it
exclusively while it refills the bus: it waits for the batches in flight, and no relay
publishes until it is done, so nothing is published twice and no stream's newer events
overtake the older ones being refilled. A relay that finds the fence taken publishes
nothing and tries again at its next wake-up.

Each event is checked as ``verify --all`` would check it before it is sent
(``bus.seal_guard``): one a database administrator inserted (no valid seal, or a chain
that does not hold) is not published, nor is any later event of its stream; each is
logged in one line, kept in the store's ``refused_events`` (``status`` reports it) and
taken out of the outbox, so the relay does not stall on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from uuid import UUID

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from bus.membership import lock_holder_name
from bus.seal_guard import REFUSED_TABLE, SealGuard, record_refusals
from bus.topics import PARTITIONS
from eventstore.chain import Finding, Link
from eventstore.records import StoredEvent
from eventstore.sealing import appending_seal_key
from eventstore.store import EVENT_COLUMNS, EventStore, stored_event
from schemas.envelope import CloudEvent, to_kafka
from schemas.registry import dataschema_uri

log = structlog.get_logger(__name__)

FENCE = "referralnet:relay-fence"
"""Advisory lock key (``hashtext``): relays hold it shared per batch, republish exclusively."""


FENCE_SQL = "SELECT pg_try_advisory_xact_lock_shared(hashtext(%s)), to_regclass(%s) IS NOT NULL"
"""The fence, and whether the store keeps refusals yet (``bus.seal_guard``), at once."""

_BEFORE_COLUMNS = ("event_id", "position", "prev_hash", "hash", "chain_format", "seal")

ROWS_SQL = (
    "SELECT o.id AS outbox_id, "
    + ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))
    + ", "
    + ", ".join(f"b.{c} AS b_{c}" for c in _BEFORE_COLUMNS)
    + ", {refused} AS b_refused "
    "FROM {s}.outbox o JOIN {s}.events e ON e.position = o.event_position "
    "LEFT JOIN {s}.events b ON b.stream_id = e.stream_id AND b.version = e.version - 1 "
    "ORDER BY o.id LIMIT %s"
)
"""A batch of the outbox in order, each event with the chain link of the one before it
in its stream (primary-key lookups; NULL for a version 1, or a predecessor gone), and
whether that one was refused: what the seal guard needs, in the same round trip."""

REFUSED_BEFORE = "EXISTS (SELECT 1 FROM {} r WHERE r.event_position = b.position)"


def _before(guard: SealGuard, schema: str, event: StoredEvent, row: dict[str, Any]) -> None:
    """Tell ``guard`` about ``event``'s predecessor, from the ``b_*`` columns of its row:
    remembered as the link to check it against, or as refused (so is ``event`` then)."""
    if row["b_position"] is None:
        return  # version 1, or a predecessor not in the store: judged on its own
    if row["b_refused"]:
        guard.refused[(schema, event.stream_id)] = Finding(
            schema, event.stream_id, event.version - 1, "refused",
            "refused earlier (see `referralnet status`)",
        )  # fmt: skip
        return
    seal = None if row["b_seal"] is None else bytes(row["b_seal"])
    link = Link(
        event.stream_id, event.version - 1, row["b_event_id"], row["b_position"],
        bytes(row["b_prev_hash"]), bytes(row["b_hash"]), row["b_chain_format"], seal,
    )  # fmt: skip
    guard.remember(schema, link)


def to_cloudevent(store: EventStore, event: StoredEvent) -> CloudEvent:
    """The bus form of a stored event (DESIGN §2): same id, stream version as extension."""
    return CloudEvent(
        id=event.event_id,
        source=store.source,
        type=event.type,
        subject=str(event.stream_id),
        time=event.occurred_at,
        dataschema=dataschema_uri(event.type, event.schema_version),
        data=event.data,
        streamversion=event.version,
        correlationid=event.correlation_id,
        causationid=event.causation_id,
        actor=event.actor,
    )


async def publish_events(
    producer: AIOKafkaProducer, topic: str, store: EventStore, events: list[StoredEvent]
) -> None:
    """Send events in order and wait for every acknowledgement."""
    futures = []
    for event in events:
        key, value, headers = to_kafka(to_cloudevent(store, event))
        futures.append(await producer.send(topic, value=value, key=key, headers=headers))
    for future in futures:
        await future


class OutboxRelay:
    """Moves one store's outbox onto the bus."""

    def __init__(
        self,
        store: EventStore,
        conninfo: str,
        producer: AIOKafkaProducer,
        topic: str,
        batch: int = 1000,
        linger_seconds: float = 0.02,
        partitions: int | None = PARTITIONS,
        instance: str = "",
        seal_key: bytes | None = None,
    ) -> None:
        self.store = store
        self.instance = instance  # the supervisor's name for this process (lock holder)
        self._seal_key = seal_key if seal_key is not None else appending_seal_key()
        self._sealed_from: int | None = None
        self._partitions = partitions
        self._conninfo = conninfo
        self._producer = producer
        self._topic = topic
        self._batch = batch
        self._linger = linger_seconds
        self.published = 0
        schema = sql.Identifier(store.schema)
        self._fence = sql.SQL(FENCE_SQL)
        self._rows = {  # by whether the store has a refusals table yet
            kept: sql.SQL(ROWS_SQL).format(
                s=schema,
                refused=sql.SQL(REFUSED_BEFORE).format(sql.Identifier(store.schema, REFUSED_TABLE))
                if kept
                else sql.SQL("false"),
            )
            for kept in (False, True)
        }
        self._forget = sql.SQL("DELETE FROM {}.outbox WHERE id = ANY(%s)").format(schema)

    async def drain(self, conn: AsyncConnection[Any]) -> int:
        """Publish everything waiting in the outbox; return how many events went out.

        Stops early (publishing nothing more) while ``republish`` holds the fence.
        """
        total = 0
        while True:
            async with conn.transaction():
                sent = await self._publish_batch(conn)
            if not sent:
                return total
            total += sent
            self.published += sent

    async def _publish_batch(self, conn: AsyncConnection[Any]) -> int:
        """One batch, inside the caller's transaction: fence, read, publish, forget.

        Three statements however many streams the batch holds (the fence with whether
        the store keeps refusals; the rows with each one's predecessor in its stream;
        the delete), as before the seal guard: the guard reads what it judges with the
        rows, not in round trips of its own (issue 14).
        """
        cur = await conn.execute(self._fence, (FENCE, f'"{self.store.schema}".{REFUSED_TABLE}'))
        fenced = await cur.fetchone()
        if not fenced or not fenced[0]:
            return 0  # republish is refilling the bus: it publishes these rows or we do later
        async with conn.cursor(row_factory=dict_row) as rows_cur:
            await rows_cur.execute(self._rows[bool(fenced[1])], (self._batch,))
            rows = await rows_cur.fetchall()
        if not rows:
            return 0
        if not await self._topic_ready():
            return 0
        admitted, refused = await self._guarded(conn, rows)
        await publish_events(self._producer, self._topic, self.store, admitted)
        if refused:
            for _, finding in refused:
                log.error("relay_refused_event", refusal=finding.line())
            await record_refusals(conn, self.store.schema, refused, "relay")
        await conn.execute(self._forget, ([r["outbox_id"] for r in rows],))
        return len(rows)

    async def _guarded(
        self, conn: AsyncConnection[Any], rows: list[dict[str, Any]]
    ) -> tuple[list[StoredEvent], list[tuple[int, Finding]]]:
        """(events to publish, (position, finding) of those refused) from rows of
        ``_rows``: each event judged after its stream's previous event (the row's
        ``b_*`` columns, read from the store for the first event of each stream in the
        batch; the guard remembers the rest). An event after a refused one is refused
        too: its consumers could not apply it."""
        schema = self.store.schema
        if self._sealed_from is None:
            cur = await conn.execute(
                sql.SQL("SELECT min(position) FROM {}.events WHERE seal IS NOT NULL").format(
                    sql.Identifier(schema)
                )
            )
            row = await cur.fetchone()
            self._sealed_from = row[0] if row else None
        sealed_from = {schema: self._sealed_from} if self._sealed_from is not None else {}
        guard = SealGuard(self._seal_key, sealed_from)
        seen: set[UUID] = set()
        admitted: list[StoredEvent] = []
        for r in rows:
            event = stored_event(r)
            if event.stream_id not in seen:
                seen.add(event.stream_id)
                _before(guard, schema, event, r)
            if guard.admit(schema, event):
                admitted.append(event)
        return admitted, [r for rs in guard.positions.values() for r in rs]

    async def _topic_ready(self) -> bool:
        """Whether the topic has the partitions it was created with.

        A broker that lost its log auto-creates the topic on the first request for it,
        with its own partition count (Tansu: 4): publishing then would put events ahead
        of the history ``republish`` has to refill first (and key them to the wrong
        partitions). So the relay waits, publishing nothing, until republish has
        recreated the topic; cached metadata is refreshed before concluding.
        """
        if self._partitions is None:
            return True
        found = await self._producer.partitions_for(self._topic)
        if len(found) != self._partitions:
            await self._producer.client.force_metadata_update()
            found = await self._producer.partitions_for(self._topic)
        if len(found) == self._partitions:
            return True
        log.warning(
            "relay_waits_for_topic",
            store=self.store.schema,
            topic=self._topic,
            partitions=len(found),
            expected=self._partitions,
            hint="the broker lost its log: run `referralnet republish`",
        )
        return False

    async def run(self, stop: asyncio.Event, idle_seconds: float = 0.5) -> None:
        """Relay until ``stop``: wake on NOTIFY from appends, or every ``idle_seconds``."""
        lock = f"relay:{self.store.schema}"
        async with await AsyncConnection.connect(
            self._conninfo, autocommit=True, application_name=lock_holder_name(self.instance, lock)
        ) as conn:
            while not stop.is_set():
                cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock,))
                row = await cur.fetchone()
                if row and row[0]:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
            await conn.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(self.store.notify_channel))
            )
            backoff = 0.2
            while not stop.is_set():
                try:
                    await self.drain(conn)
                    backoff = 0.2
                except KafkaError as exc:
                    log.warning("relay_publish_failed", store=self.store.schema, error=str(exc))
                    backoff = min(backoff * 2, 5.0)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=backoff)
                    continue
                with contextlib.suppress(TimeoutError):
                    gen = conn.notifies(timeout=idle_seconds, stop_after=1)
                    async for _ in gen:
                        pass
                if self._linger > 0:
                    # A batching delay, not synchronisation: appends that land meanwhile
                    # share one query, one produce request and one delete.
                    await asyncio.sleep(self._linger)
