"""Organisation tokens: stored hashed, rotatable with a grace period, revocable, expiring.

- ``rotate``: a new token (returned once, never stored in clear); the previous one stays
  valid for ``grace`` (``directory.retired_tokens``), then stops working.
- ``revoke``: the organisation has no valid token until the next ``rotate``.
- optional expiry: ``directory.organisations.token_expires_at``.
- ``TokenCache``: the API's memory of recent lookups, each kept
  ``REFERRALNET_TOKEN_CACHE_SECONDS`` at most, so a revocation, rotation or expiry takes
  effect on every API process within that many seconds. Keyed by the token's digest: no
  token is held in clear.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from directory.store import RegisteredOrg, hash_token, new_token, org_from_row
from infra.migrations.catalog import TOKENS
from infra.migrations.runner import Target, migrate
from referralnet.settings import settings

_LOOKUP = """
SELECT o.id, o.name, o.kind, o.areas, o.spec FROM directory.organisations o
 WHERE o.token_hash = %(h)s AND (o.token_expires_at IS NULL OR o.token_expires_at > now())
UNION ALL
SELECT o.id, o.name, o.kind, o.areas, o.spec FROM directory.retired_tokens t
  JOIN directory.organisations o ON o.id = t.org_id
 WHERE t.token_hash = %(h)s AND t.valid_until > now()
LIMIT 1
"""


class UnknownOrganisation(LookupError):
    """No organisation with that id is registered."""


async def create(conn: AsyncConnection[Any]) -> None:
    """Add the token columns and table to the directory schema (``infra.migrations``)."""
    await migrate(conn, Target(TOKENS, "directory"))


async def org_for_token(conn: AsyncConnection[Any], token: str) -> RegisteredOrg | None:
    """The organisation a token currently belongs to (current, or retired within grace)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LOOKUP, {"h": hash_token(token)})
        row = await cur.fetchone()
    return None if row is None else org_from_row(row)


async def rotate(
    conn: AsyncConnection[Any],
    org_id: str,
    grace: timedelta = timedelta(0),
    expires_in: timedelta | None = None,
) -> str:
    """Issue a new token for ``org_id``; the old one stays valid for ``grace``."""
    token = new_token()
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT token_hash FROM directory.organisations WHERE id = %s FOR UPDATE", (org_id,)
        )
        row = await cur.fetchone()
        if row is None:
            raise UnknownOrganisation(org_id)
        await conn.execute("DELETE FROM directory.retired_tokens WHERE valid_until <= now()")
        if row[0] and grace > timedelta(0):
            await conn.execute(
                "INSERT INTO directory.retired_tokens (token_hash, org_id, valid_until) "
                "VALUES (%s, %s, now() + %s) ON CONFLICT (token_hash) DO NOTHING",
                (row[0], org_id, grace),
            )
        await conn.execute(
            "UPDATE directory.organisations SET token_hash = %s, token_expires_at = "
            "CASE WHEN %s::interval IS NULL THEN NULL ELSE now() + %s::interval END "
            "WHERE id = %s",
            (hash_token(token), expires_in, expires_in, org_id),
        )
    return token


async def revoke(conn: AsyncConnection[Any], org_id: str) -> None:
    """Every token of ``org_id`` stops working (within
    ``REFERRALNET_TOKEN_CACHE_SECONDS`` on every API)."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE directory.organisations SET token_hash = NULL, token_expires_at = NULL "
            "WHERE id = %s RETURNING 1",
            (org_id,),
        )
        if await cur.fetchone() is None:
            raise UnknownOrganisation(org_id)
        await conn.execute("DELETE FROM directory.retired_tokens WHERE org_id = %s", (org_id,))


@dataclass
class _Entry:
    org: RegisteredOrg
    until: float


class TokenCache:
    """Recent successful lookups, each trusted for ``ttl`` seconds at most."""

    def __init__(self, ttl: float | None = None) -> None:
        self.ttl = settings().token_cache_seconds if ttl is None else ttl
        self._entries: dict[str, _Entry] = {}

    def get(self, token: str) -> RegisteredOrg | None:
        key = hash_token(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.until <= time.monotonic():
            del self._entries[key]
            return None
        return entry.org

    def put(self, token: str, org: RegisteredOrg) -> None:
        if len(self._entries) > 10_000:  # bounded: unknown tokens are never added
            now = time.monotonic()
            self._entries = {k: e for k, e in self._entries.items() if e.until > now}
        self._entries[hash_token(token)] = _Entry(org, time.monotonic() + self.ttl)
