"""The distributor: fans each journey event out to the org topics entitled to it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from bus.topics import Topics
from bus.tracking import Outgoing, Rejected
from domain import lifecycle
from schemas.envelope import CloudEvent
from schemas.events import ReferralCreated
from services.distributor import store
from services.distributor.policy import Entitlements, distribute

ORG_FIELDS = ("referrer_org", "service_org", "provider_org")
"""Event data fields naming an organisation that receives a copy."""


class DistributorProjection:
    """Consumer ``distributor``: entitlements in Postgres, deliveries to ``org.<id>``."""

    consumer = "distributor"
    schema = "distributor"
    interested_in: frozenset[str] | None = None
    may_reject = False  # it rejects only before writing anything: no savepoint needed

    def __init__(self, topics: Topics, secret: bytes, refresh_seconds: float = 5.0) -> None:
        self._topics = topics
        self._secret = secret
        self._refresh = refresh_seconds
        self._commissioners: list[str] = []
        self._fetched_at = float("-inf")
        self._batch: dict[str, Entitlements] | None = None  # between prepare and finish
        self._changed: dict[str, Entitlements] = {}
        self._known: set[str] = set()  # organisations of the batch found in the directory

    async def _refresh_commissioners(self, conn: AsyncConnection[Any], fresh: bool) -> None:
        """Every commissioner; re-read for each batch with a new referral (``fresh``), so one
        that joined just before it is not left out of its whole journey, and at least every
        few seconds."""
        if fresh or time.monotonic() - self._fetched_at > self._refresh:
            cur = await conn.execute(
                "SELECT id FROM directory.organisations WHERE kind = 'commissioner' ORDER BY id"
            )
            self._commissioners = [r[0] for r in await cur.fetchall()]
            self._fetched_at = time.monotonic()

    async def prepare(self, conn: AsyncConnection[Any], events: Sequence[CloudEvent]) -> None:
        """Read (and lock) the entitlements of the batch's referrals in one query, and
        which of the organisations the batch names are in the directory in another."""
        self._batch = await store.load_many(conn, {e.subject for e in events})
        self._changed = {}
        await self._refresh_commissioners(
            conn, any(e.type == ReferralCreated.event_type for e in events)
        )
        named = {str(e.data[f]) for e in events for f in ORG_FIELDS if f in e.data}
        cur = await conn.execute(
            "SELECT id FROM directory.organisations WHERE id = ANY(%s)", (sorted(named),)
        )
        self._known = {r[0] for r in await cur.fetchall()}

    async def finish(self, conn: AsyncConnection[Any]) -> None:
        """Write the entitlements the batch changed, in one statement."""
        changed, self._batch, self._changed = self._changed, None, {}
        await store.save_many(conn, changed)

    async def number_outgoing(
        self, conn: AsyncConnection[Any], outgoing: Sequence[Outgoing]
    ) -> list[Outgoing]:
        """Each copy's ``ce_orgsequence`` (partner topics carry a filtered subset of each
        stream; the number lets the partner's consumer detect gaps there)."""
        return await store.number_copies(conn, outgoing)

    async def apply(
        self, conn: AsyncConnection[Any], event: CloudEvent, model: Any
    ) -> Sequence[Outgoing]:
        if self._batch is not None:
            return await self._apply(event, model)
        await self.prepare(conn, [event])  # a lone call: a batch of one
        try:
            outgoing = await self._apply(event, model)
        except BaseException:
            self._batch, self._changed = None, {}
            raise
        await self.finish(conn)
        return outgoing

    async def _apply(self, event: CloudEvent, model: Any) -> Sequence[Outgoing]:
        if self._batch is None:
            raise RuntimeError("DistributorProjection._apply outside prepare/finish")
        for name in ORG_FIELDS:
            # A copy for an organisation outside the directory would go to a topic that
            # does not exist: a broker without auto-creation refuses it forever (the
            # batch would retry forever), one with it grows a topic nobody reads.
            if name in event.data and str(event.data[name]) not in self._known:
                raise Rejected(
                    f"{event.type} names {name} {str(event.data[name])[:80]!r}, "
                    "which is not in the directory"
                )
        before = self._batch.get(event.subject)
        ent, copies = distribute(
            before, event, lifecycle.as_event(model), self._commissioners, self._secret
        )
        if ent is not before:  # most journey events change nobody's entitlements
            self._batch[event.subject] = self._changed[event.subject] = ent
        return [Outgoing(self._topics.org(d.org_id), d.event) for d in copies]
