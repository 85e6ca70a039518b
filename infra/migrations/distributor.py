"""The distributor's entitlements and per-partner sequences (``services.distributor.store``).

Step 1 is the DDL of release 83ff4c4 (services.distributor.store), frozen.
Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "baseline",
    """
CREATE SCHEMA IF NOT EXISTS distributor;
CREATE TABLE IF NOT EXISTS distributor.entitlements (
    referral_id  text PRIMARY KEY,
    referrer_org text NOT NULL,
    share_outcomes_with_referrer boolean NOT NULL,
    service_org  text,
    providers    text[] NOT NULL DEFAULT '{{}}',
    created      jsonb NOT NULL
);
-- The last ce_orgsequence given per (partner topic, subject), and which number each copy
-- got: a copy sent again (a crash before commit, a refill after the broker lost its
-- partner topics) keeps its number, so the partner's consumer sees a re-delivery.
CREATE TABLE IF NOT EXISTS distributor.org_sequences (
    topic   text    NOT NULL,
    subject text    NOT NULL,
    last    integer NOT NULL,
    PRIMARY KEY (topic, subject)
);
CREATE TABLE IF NOT EXISTS distributor.deliveries (
    topic    text    NOT NULL,
    event_id uuid    NOT NULL,
    sequence integer NOT NULL,
    PRIMARY KEY (topic, event_id)
);
""",
)

COMPONENT = Component("distributor", (STEP_1,))
