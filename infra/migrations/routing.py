"""Routing's cases and capacity ledger (``services.routing.store``).

Step 1 is the DDL of release 83ff4c4 (services.routing.store), frozen.
Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "baseline",
    """
CREATE TABLE IF NOT EXISTS routing.cases (
    referral_id  uuid PRIMARY KEY,
    area         text NOT NULL,
    needs        text[] NOT NULL,
    age_band     text NOT NULL,
    urgency      text NOT NULL,
    referrer_org text NOT NULL,
    status       text NOT NULL,
    service_org  text,
    tried        text[] NOT NULL DEFAULT '{{}}',
    holds_place  boolean NOT NULL DEFAULT false,
    referred_at  timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS routing.capacity (
    service_org    text PRIMARY KEY,
    areas          text[] NOT NULL,
    needs          text[] NOT NULL,
    min_age        integer NOT NULL,
    max_age        integer,
    caseload_limit integer NOT NULL,
    caseload       integer NOT NULL DEFAULT 0 CHECK (caseload >= 0),
    CHECK (caseload <= caseload_limit OR caseload_limit < 0)
);
""",
)

COMPONENT = Component("routing", (STEP_1,))
