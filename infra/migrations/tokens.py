"""Token expiry and retired tokens, in the directory schema (``web.tokens``).

Step 1 is the DDL of release 83ff4c4 (web.tokens), frozen.
Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "baseline",
    """
ALTER TABLE directory.organisations ADD COLUMN IF NOT EXISTS token_expires_at timestamptz;
CREATE TABLE IF NOT EXISTS directory.retired_tokens (
    token_hash  text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES directory.organisations (id),
    valid_until timestamptz NOT NULL
);
""",
)

COMPONENT = Component("tokens", (STEP_1,))
