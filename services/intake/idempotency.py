"""``Idempotency-Key`` for ``POST /referrals`` (IETF draft-ietf-httpapi-idempotency-key).

- first use: the key is claimed in the request's transaction, before anything else is
  written; the referral is created (201);
- same key, same body: the referral created the first time (200), nothing new stored;
- same key, different body: 422, nothing stored (the draft's "reuse with a different
  payload");
- concurrent uses: the claim is an ``INSERT ... ON CONFLICT DO NOTHING`` on the primary
  key, so the later ones wait for the first transaction and then see its row (200), or
  take the key over if it rolled back. No unique violation, so no 500.

Keys are stored, compared and logged only as SHA-256 digests: a key never appears in
SQL text, a constraint violation or the PostgreSQL log.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from pydantic import BaseModel

from services.refusal import Invalid


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def request_digest(body: BaseModel) -> str:
    """A digest of the request as parsed (key order and spacing do not matter)."""
    return digest(json.dumps(body.model_dump(mode="json"), sort_keys=True))


async def claim(
    conn: AsyncConnection[Any], org_id: str, key: str, body: BaseModel, referral_id: UUID
) -> UUID:
    """Claim ``key`` for ``referral_id`` in the caller's transaction.

    Returns ``referral_id`` when this request claimed the key (go on and create it), or
    the referral a previous request with the same key and body created (answer 200).
    Raises ``Invalid`` (422) when the key was used with a different body.
    """
    key_digest, body_digest = digest(key), request_digest(body)
    cur = await conn.execute(
        "INSERT INTO intake.idempotency (org_id, key, referral_id, request_hash) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (org_id, key) DO NOTHING RETURNING referral_id",
        (org_id, key_digest, referral_id, body_digest),
    )
    if await cur.fetchone() is not None:
        return referral_id
    cur = await conn.execute(
        "SELECT referral_id, request_hash FROM intake.idempotency WHERE org_id = %s AND key = %s",
        (org_id, key_digest),
    )
    row = await cur.fetchone()
    if row is None:  # claimed and rolled back between our two statements: retry the claim
        return await claim(conn, org_id, key, body, referral_id)
    if row[1] is not None and row[1] != body_digest:
        raise Invalid(
            "this Idempotency-Key was already used with a different request body",
            field="Idempotency-Key",
        )
    return UUID(str(row[0]))
