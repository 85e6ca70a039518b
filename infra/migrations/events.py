"""The event store and outbox of each service (``eventstore.store``), in its own schema.

Step 1 is the DDL of release 83ff4c4 (eventstore.store), frozen.
Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "baseline",
    """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.events (
    position       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    stream_id      uuid        NOT NULL,
    version        integer     NOT NULL CHECK (version > 0),
    event_id       uuid        NOT NULL UNIQUE,
    type           text        NOT NULL,
    schema_version integer     NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor          text        NOT NULL,
    correlation_id uuid        NOT NULL,
    causation_id   uuid,
    data           jsonb       NOT NULL,
    prev_hash      bytea       NOT NULL,
    hash           bytea       NOT NULL,
    chain_format   smallint    NOT NULL DEFAULT 1,
    seal           bytea,
    PRIMARY KEY (stream_id, version)
);
-- Stores created before chain format 2: their events keep format 1 (eventstore.records).
ALTER TABLE {schema}.events ADD COLUMN IF NOT EXISTS chain_format smallint NOT NULL DEFAULT 1;
ALTER TABLE {schema}.events ADD COLUMN IF NOT EXISTS seal bytea;
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_position bigint NOT NULL REFERENCES {schema}.events (position)
);
CREATE OR REPLACE FUNCTION {schema}.refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'events are append-only (% refused)', TG_OP; END $$;
DROP TRIGGER IF EXISTS append_only ON {schema}.events;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON {schema}.events
    FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();
DROP TRIGGER IF EXISTS append_only_truncate ON {schema}.events;
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON {schema}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change();
""",
)

COMPONENT = Component("events", (STEP_1,))
