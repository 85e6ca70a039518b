"""Intake's encrypted person tables and idempotency keys (``services.intake``).

Step 1 is the DDL of release 83ff4c4 (services.intake.pii, services.intake.store), frozen.
Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "baseline",
    """
CREATE TABLE IF NOT EXISTS intake.people (
    person_ref  text PRIMARY KEY,
    nhs_digest  text UNIQUE,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS intake.referral_people (
    referral_id uuid PRIMARY KEY,
    person_ref  text NOT NULL REFERENCES intake.people (person_ref),
    ciphertext  bytea NOT NULL
);

CREATE TABLE IF NOT EXISTS intake.idempotency (
    org_id      text NOT NULL,
    key         text NOT NULL,
    referral_id uuid NOT NULL,
    person_ref  text NOT NULL,
    PRIMARY KEY (org_id, key)
);
-- keys are stored as SHA-256 digests (never in clear, not even in a constraint
-- violation's log line) with a digest of the request body they were first used with
ALTER TABLE intake.idempotency ADD COLUMN IF NOT EXISTS request_hash text;
ALTER TABLE intake.idempotency ALTER COLUMN person_ref DROP NOT NULL;
""",
)

STEP_2 = Step(
    2,
    "people by person (erasure finds every referral of a person)",
    "CREATE INDEX IF NOT EXISTS referral_people_person ON intake.referral_people (person_ref);",
)

COMPONENT = Component("intake", (STEP_1, STEP_2))
