"""The distributor's bookkeeping: per-referral entitlements, and its pseudonym secret."""

from __future__ import annotations

import secrets
from collections.abc import Collection
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from bus.tracking import create_tracking
from infra.keys import key_file
from services.distributor.policy import Entitlements

DDL = """
CREATE SCHEMA IF NOT EXISTS distributor;
CREATE TABLE IF NOT EXISTS distributor.entitlements (
    referral_id  text PRIMARY KEY,
    referrer_org text NOT NULL,
    share_outcomes_with_referrer boolean NOT NULL,
    service_org  text,
    providers    text[] NOT NULL DEFAULT '{}',
    created      jsonb NOT NULL
);
"""


async def create(conn: AsyncConnection[Any]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('referralnet-ddl'))")
        await conn.execute(DDL)
    await create_tracking(conn, "distributor")


async def load_many(
    conn: AsyncConnection[Any], referral_ids: Collection[str]
) -> dict[str, Entitlements]:
    """The entitlements of ``referral_ids`` that exist, locked for this transaction."""
    cur = await conn.execute(
        "SELECT referral_id, referrer_org, share_outcomes_with_referrer, created, service_org, "
        "providers FROM distributor.entitlements WHERE referral_id = ANY(%s) "
        "ORDER BY referral_id FOR UPDATE",
        (list(referral_ids),),
    )
    return {
        row[0]: Entitlements(row[1], row[2], row[3], row[4], list(row[5]))
        for row in await cur.fetchall()
    }


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
        "service_org = EXCLUDED.service_org, providers = EXCLUDED.providers",
        (
            ids,
            [e.referrer_org for e in ents],
            [e.share_outcomes_with_referrer for e in ents],
            [e.service_org for e in ents],
            [Jsonb(e.providers) for e in ents],
            [Jsonb(e.created) for e in ents],
        ),
    )


def pseudonym_secret(home: Path) -> bytes:
    """Secret for commissioner pseudonyms: ``REFERRALNET_PSEUDONYM_KEY`` or a key file."""
    return key_file(
        home, "pseudonym.key", lambda: secrets.token_hex(32).encode(), "REFERRALNET_PSEUDONYM_KEY"
    )
