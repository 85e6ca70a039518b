"""The distributor's bookkeeping: per-referral entitlements, and its pseudonym secret."""

from __future__ import annotations

import secrets
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


async def load(conn: AsyncConnection[Any], referral_id: str) -> Entitlements | None:
    cur = await conn.execute(
        "SELECT referrer_org, share_outcomes_with_referrer, created, service_org, providers "
        "FROM distributor.entitlements WHERE referral_id = %s FOR UPDATE",
        (referral_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Entitlements(row[0], row[1], row[2], row[3], list(row[4]))


async def save(conn: AsyncConnection[Any], referral_id: str, ent: Entitlements) -> None:
    await conn.execute(
        "INSERT INTO distributor.entitlements (referral_id, referrer_org, "
        "share_outcomes_with_referrer, service_org, providers, created) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (referral_id) DO UPDATE SET "
        "service_org = EXCLUDED.service_org, providers = EXCLUDED.providers",
        (
            referral_id,
            ent.referrer_org,
            ent.share_outcomes_with_referrer,
            ent.service_org,
            ent.providers,
            Jsonb(ent.created),
        ),
    )


def pseudonym_secret(home: Path) -> bytes:
    """Secret for commissioner pseudonyms: ``REFERRALNET_PSEUDONYM_KEY`` or a key file."""
    return key_file(
        home, "pseudonym.key", lambda: secrets.token_hex(32).encode(), "REFERRALNET_PSEUDONYM_KEY"
    )
