"""The distributor's bookkeeping: per-referral entitlements, and its pseudonym secret."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from bus.tracking import Outgoing, create_tracking
from infra.keys import key_file
from infra.migrations.catalog import DISTRIBUTOR
from infra.migrations.runner import Target, migrate
from referralnet.settings import settings
from services.distributor.policy import Entitlements


async def create(conn: AsyncConnection[Any]) -> None:
    """Create or migrate the distributor's schema and its tracking tables."""
    await migrate(conn, Target(DISTRIBUTOR, "distributor"))
    await create_tracking(conn, "distributor")


ENTITLEMENTS = (
    "SELECT referral_id, referrer_org, share_outcomes_with_referrer, created, service_org, "
    "providers FROM distributor.entitlements"
)


async def _entitlements(
    conn: AsyncConnection[Any], where: str, params: tuple[Any, ...] = ()
) -> dict[str, Entitlements]:
    cur = await conn.execute(ENTITLEMENTS + where, params)
    return {
        row[0]: Entitlements(row[1], row[2], row[3], row[4], tuple(row[5]))
        for row in await cur.fetchall()
    }


async def load_many(
    conn: AsyncConnection[Any], referral_ids: Collection[str]
) -> dict[str, Entitlements]:
    """The entitlements of ``referral_ids`` that exist, locked for this transaction."""
    return await _entitlements(
        conn, " WHERE referral_id = ANY(%s) ORDER BY referral_id FOR UPDATE", (list(referral_ids),)
    )


async def entitlements_in_table(conn: AsyncConnection[Any]) -> dict[str, Entitlements]:
    """Every referral's entitlements as ``distributor.entitlements`` holds them now."""
    return await _entitlements(conn, " ORDER BY referral_id")


async def save_many(conn: AsyncConnection[Any], changed: dict[str, Entitlements]) -> None:
    """Insert or update the entitlements of several referrals in one statement."""
    if not changed:
        return
    ids, ents = list(changed), list(changed.values())
    await conn.execute(
        "INSERT INTO distributor.entitlements (referral_id, referrer_org, "
        "share_outcomes_with_referrer, service_org, providers, created) "
        "SELECT r, o, s, v, "
        "ARRAY(SELECT jsonb_array_elements_text(p)), c "
        "FROM unnest(%s::text[], %s::text[], %s::boolean[], %s::text[], %s::jsonb[], "
        "%s::jsonb[]) AS t(r, o, s, v, p, c) "
        "ON CONFLICT (referral_id) DO UPDATE SET "
        "service_org = EXCLUDED.service_org, providers = EXCLUDED.providers, "
        "share_outcomes_with_referrer = EXCLUDED.share_outcomes_with_referrer",
        (
            ids,
            [e.referrer_org for e in ents],
            [e.share_outcomes_with_referrer for e in ents],
            [e.service_org for e in ents],
            [Jsonb(list(e.providers)) for e in ents],
            [Jsonb(e.created) for e in ents],
        ),
    )


async def write_entitlements(conn: AsyncConnection[Any], ents: dict[str, Entitlements]) -> None:
    """Make ``distributor.entitlements`` say ``ents`` (in the caller's transaction; the
    distributor waits meanwhile: its ``load_many`` locks rows of the table)."""
    await conn.execute("LOCK TABLE distributor.entitlements IN EXCLUSIVE MODE")
    await conn.execute("DELETE FROM distributor.entitlements")  # referrer and created too
    await save_many(conn, ents)


async def number_copies(conn: AsyncConnection[Any], copies: Sequence[Outgoing]) -> list[Outgoing]:
    """Give each copy its ``ce_orgsequence``, in order, in the caller's transaction.

    A copy numbered before keeps its number; new copies get the next numbers of their
    (partner topic, subject). Four statements per batch whatever its size.
    """
    if not copies:
        return []
    keys = [(c.topic, c.event.id) for c in copies]
    cur = await conn.execute(
        "SELECT d.topic, d.event_id, d.sequence FROM distributor.deliveries d "
        "JOIN unnest(%s::text[], %s::uuid[]) AS k(topic, event_id) USING (topic, event_id)",
        ([t for t, _ in keys], [e for _, e in keys]),
    )
    numbered = {(r[0], r[1]): int(r[2]) for r in await cur.fetchall()}
    streams = sorted(
        {(c.topic, c.event.subject) for c in copies if (c.topic, c.event.id) not in numbered}
    )
    last: dict[tuple[str, str], int] = {}
    if streams:
        cur = await conn.execute(
            "SELECT s.topic, s.subject, s.last FROM distributor.org_sequences s "
            "JOIN unnest(%s::text[], %s::text[]) AS k(topic, subject) USING (topic, subject) "
            "ORDER BY s.topic, s.subject FOR UPDATE OF s",
            ([t for t, _ in streams], [s for _, s in streams]),
        )
        last = {(r[0], r[1]): int(r[2]) for r in await cur.fetchall()}
    new: dict[tuple[str, Any], int] = {}
    out = []
    for copy, key in zip(copies, keys, strict=True):
        number = numbered.get(key) or new.get(key)
        if number is None:
            stream = (copy.topic, copy.event.subject)
            number = last[stream] = last.get(stream, 0) + 1
            new[key] = number
        out.append(Outgoing(copy.topic, replace(copy.event, orgsequence=number)))
    if new:
        ends = {s: last[s] for s in streams if s in last}
        await conn.execute(
            "INSERT INTO distributor.org_sequences AS s (topic, subject, last) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::int4[]) "
            "ON CONFLICT (topic, subject) DO UPDATE SET last = GREATEST(s.last, EXCLUDED.last)",
            ([t for t, _ in ends], [s for _, s in ends], list(ends.values())),
        )
        await conn.execute(
            "INSERT INTO distributor.deliveries (topic, event_id, sequence) "
            "SELECT * FROM unnest(%s::text[], %s::uuid[], %s::int4[])",
            ([t for t, _ in new], [e for _, e in new], list(new.values())),
        )
    return out


def pseudonym_secret(home: Path) -> bytes:
    """Secret for commissioner pseudonyms: ``REFERRALNET_PSEUDONYM_KEY`` or a key file."""
    return key_file(
        home, "pseudonym.key", lambda: secrets.token_hex(32).encode(), settings().pseudonym_key
    )
