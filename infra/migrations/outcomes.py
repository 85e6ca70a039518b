"""Outcomes' cases and activity links (``services.outcomes.store``).

Step 1 is the DDL of release 83ff4c4 (services.outcomes.store), frozen.
Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "baseline",
    """
CREATE TABLE IF NOT EXISTS outcomes.cases (
    referral_id      uuid PRIMARY KEY,
    referrer_org     text NOT NULL,
    referred_at      timestamptz NOT NULL,
    service_org      text,
    status           text NOT NULL,
    routed_at        timestamptz,
    routed_seen_at   timestamptz,
    accepted_at      timestamptz,
    first_contact_at timestamptz,
    overdue_flagged  boolean NOT NULL DEFAULT false,
    closed_at        timestamptz
);
CREATE INDEX IF NOT EXISTS cases_waiting ON outcomes.cases (routed_at)
    WHERE first_contact_at IS NULL AND closed_at IS NULL;
CREATE TABLE IF NOT EXISTS outcomes.activity_links (
    referral_id  uuid NOT NULL,
    activity_id  text NOT NULL,
    provider_org text NOT NULL,
    referred_at  timestamptz NOT NULL,
    PRIMARY KEY (referral_id, activity_id)
);
""",
)

COMPONENT = Component("outcomes", (STEP_1,))
