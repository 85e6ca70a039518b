"""The distributor: fans each journey event out to the org topics entitled to it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from bus.topics import Topics
from bus.tracking import Outgoing, Rejected
from schemas.envelope import CloudEvent, from_kafka, to_kafka
from services.distributor import store
from services.distributor.policy import Entitlements, deliveries


def _freeze(event: CloudEvent) -> dict[str, Any]:
    key, value, headers = to_kafka(event)
    return {
        "key": key.decode(),
        "value": value.decode(),
        "headers": [[k, v.decode()] for k, v in headers],
    }


def _thaw(frozen: dict[str, Any]) -> CloudEvent:
    return from_kafka(
        frozen["key"].encode(),
        frozen["value"].encode(),
        [(k, v.encode()) for k, v in frozen["headers"]],
    )


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
        await self._refresh_commissioners(conn, any(e.type == "referral-created" for e in events))
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
        ent = self._batch.get(event.subject)
        created_copy = None
        changed = event.type in ("referral-created", "referral-routed", "referral-declined")
        changed = changed or event.type in (
            "referral-escalated",
            "activity-referred",
            "consent-withdrawn",
        )
        if event.type == "referral-created":
            if ent is None:
                ent = Entitlements(
                    referrer_org=model.referrer_org,
                    share_outcomes_with_referrer=model.consent.share_outcomes_with_referrer,
                    created=_freeze(event),
                )
        elif ent is None:
            raise Rejected(f"{event.type} for referral {event.subject}, which was never created")
        elif event.type == "referral-routed":
            ent.service_org = model.service_org
            created_copy = _thaw(ent.created)
        elif event.type in ("referral-declined", "referral-escalated"):
            ent.service_org = None
        elif event.type == "consent-withdrawn":
            ent.share_outcomes_with_referrer = False  # no outcome reaches the referrer again
        elif event.type == "activity-referred":
            if model.provider_org not in ent.providers:
                ent.providers.append(model.provider_org)
            created_copy = _thaw(ent.created)
        if changed:  # most journey events change nobody's entitlements
            self._batch[event.subject] = self._changed[event.subject] = ent
        return [
            Outgoing(self._topics.org(d.org_id), d.event)
            for d in deliveries(event, ent, self._commissioners, self._secret, created_copy)
        ]
