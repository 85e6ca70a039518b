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
SQL text, a constraint violation or the PostgreSQL log. The rules are
``domain.decide``'s; the claim's SQL is ``adapters.claim``; the digests are made here.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def request_digest(body: BaseModel) -> str:
    """A digest of the request as parsed (key order and spacing do not matter)."""
    return digest(json.dumps(body.model_dump(mode="json"), sort_keys=True))
