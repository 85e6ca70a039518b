"""One partner's read model (``views.schema``); its tracking tables are the ``tracking`` component.

Step 1 is the DDL of release 83ff4c4 (views.schema), frozen.
Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "baseline",
    """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.referrals (
    referral_id      uuid PRIMARY KEY,
    person_ref       text,
    referrer_org     text,
    referrer_kind    text,
    service_org      text,
    needs            text[] NOT NULL DEFAULT '{{}}',
    urgency          text,
    area             text,
    age_band         text,
    status           text NOT NULL,
    referred_at      timestamptz,
    routed_at        timestamptz,
    accepted_at      timestamptz,
    first_contact_at timestamptz,
    overdue          boolean NOT NULL DEFAULT false,
    closed_at        timestamptz,
    close_reason     text,
    declines         integer NOT NULL DEFAULT 0,
    sessions         integer NOT NULL DEFAULT 0,
    session_minutes  integer NOT NULL DEFAULT 0,
    activities       integer NOT NULL DEFAULT 0,
    attendances      integer NOT NULL DEFAULT 0,
    outcomes         integer NOT NULL DEFAULT 0,
    last_event_at    timestamptz
);
CREATE TABLE IF NOT EXISTS {schema}.sessions (
    session_id  uuid PRIMARY KEY,
    referral_id uuid NOT NULL,
    kind        text NOT NULL,
    minutes     integer NOT NULL,
    mode        text NOT NULL,
    held_at     timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.activities (
    referral_id   uuid NOT NULL,
    activity_id   text NOT NULL,
    provider_org  text NOT NULL,
    activity_kind text NOT NULL,
    referred_at   timestamptz NOT NULL,
    attended      integer NOT NULL DEFAULT 0,
    missed        integer NOT NULL DEFAULT 0,
    PRIMARY KEY (referral_id, activity_id)
);
CREATE TABLE IF NOT EXISTS {schema}.outcomes (
    event_id    uuid PRIMARY KEY,
    referral_id uuid NOT NULL,
    measure     text NOT NULL,
    timepoint   text NOT NULL,
    score       double precision,
    items       jsonb,
    recorded_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.timeline (
    event_id    uuid NOT NULL,
    referral_id uuid NOT NULL,
    type        text NOT NULL,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    PRIMARY KEY (event_id, type)
);
CREATE INDEX IF NOT EXISTS timeline_referral ON {schema}.timeline (referral_id, at);
""",
)

COMPONENT = Component("view", (STEP_1,))
