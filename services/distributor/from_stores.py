"""``distributor.entitlements`` recomputed from the stores of record (``referralnet
projections``): what the distributor must have remembered once it applied every event
the relays published.

The distributor folds each event it consumes from ``referral-events`` with
:func:`services.distributor.policy.entitled`; so does this, over the same events in
the form the relay publishes them (``bus.relay.to_cloudevent``: the kept
``referral-created`` is byte for byte the one the distributor kept). The bus keeps each
store's stream of a referral in version order but interleaves the stores as their
relays go; here they are merged by ``recorded_at`` (a later store's event is appended
after its service heard of the earlier one). Each store moves other parties (intake: the
referrer and consent; routing: the service; outcomes: the providers), so any
interleaving that keeps each stream's order ends in the same entitlements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from bus.relay import to_cloudevent
from bus.tracking import Rejected
from eventstore.store import EVENT_COLUMNS, EventStore, stored_event
from services.distributor.policy import Entitlements, entitled, model_of

FETCH = 2000
"""Rows per round trip of the server-side cursor (the events are not all held at once)."""


def _merged(stores: Sequence[EventStore]) -> sql.Composed:
    """Every event of ``stores``, by ``recorded_at``, then store (in ``stores`` order),
    then position; column ``store`` is the store's index in ``stores``."""
    parts = [
        sql.SQL("SELECT {} AS store, " + EVENT_COLUMNS + " FROM {}.events").format(
            sql.Literal(i), sql.Identifier(s.schema)
        )
        for i, s in enumerate(stores)
    ]
    return sql.SQL("SELECT * FROM ({}) e ORDER BY recorded_at, store, position").format(
        sql.SQL(" UNION ALL ").join(parts)
    )


async def entitlements_from_stores(
    conn: AsyncConnection[Any], stores: Sequence[EventStore]
) -> dict[str, Entitlements]:
    """Referral id (text, as the table keys it) → its entitlements after every event of
    ``stores`` (the stores the relays publish onto ``referral-events``).

    An event the distributor would reject (its referral was never created) changes
    nothing, as there. Reads in the caller's transaction (a savepoint if it holds one).
    """
    ents: dict[str, Entitlements] = {}
    async with (
        conn.transaction(),
        conn.cursor("distributor_entitlements", row_factory=dict_row) as cur,
    ):
        cur.itersize = FETCH
        await cur.execute(_merged(stores))
        async for row in cur:
            event = to_cloudevent(stores[row["store"]], stored_event(row))
            try:
                ents[event.subject] = entitled(ents.get(event.subject), event, model_of(event))
            except Rejected:
                continue
    return ents
