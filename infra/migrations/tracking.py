"""A consumer's positions, applied versions, held records and dead letters (``bus.tracking``).

Step 1 is the DDL of release 83ff4c4 (bus.tracking, bus.held), frozen.
Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "baseline",
    """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.positions (
    consumer    text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
CREATE TABLE IF NOT EXISTS {schema}.applied (
    stream_id text    NOT NULL,
    source    text    NOT NULL,
    version   integer NOT NULL,
    PRIMARY KEY (stream_id, source)
);
CREATE TABLE IF NOT EXISTS {schema}.dead_letter_outbox (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic     text    NOT NULL,
    partition integer NOT NULL,
    "offset"  bigint  NOT NULL,
    key       bytea,
    value     bytea,
    headers   jsonb   NOT NULL,
    reason    text    NOT NULL,
    consumer  text    NOT NULL
);
-- digests[n]: what was applied at version n (bus.ordering), kept in the stream's row so
-- a batch rewrites one row per stream, as it did for the version alone.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = {name}
                   AND table_name = 'applied' AND column_name = 'digests') THEN
        ALTER TABLE {schema}.applied ADD COLUMN digests bigint[] NOT NULL DEFAULT '{{}}';
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS {schema}.held (
    stream_id     text    NOT NULL,
    source        text    NOT NULL,
    version       integer NOT NULL,
    digest        bigint  NOT NULL,
    topic         text    NOT NULL,
    partition     integer NOT NULL,
    "offset"      bigint  NOT NULL,
    key           bytea,
    value         bytea,
    header_names  text[]  NOT NULL,
    header_values bytea[] NOT NULL,
    held_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, source, version)
);
""",
)

STEP_2 = Step(
    2,
    "dead letters kept for good: parked, published, retried, discarded",
    """
ALTER TABLE {schema}.dead_letter_outbox
    ADD COLUMN IF NOT EXISTS parked_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS published_at timestamptz,
    ADD COLUMN IF NOT EXISTS retried_at   timestamptz,
    ADD COLUMN IF NOT EXISTS retried_to   text,
    ADD COLUMN IF NOT EXISTS discarded_at timestamptz;
CREATE INDEX IF NOT EXISTS dead_letter_outbox_unpublished ON {schema}.dead_letter_outbox (id)
    WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS dead_letter_outbox_pending ON {schema}.dead_letter_outbox (id)
    WHERE retried_at IS NULL AND discarded_at IS NULL;
""",
)

STEP_3 = Step(
    3,
    "log identity: a position's mark, and the losses of a log the consumer found",
    """
-- What this consumer found when the broker had lost its log (a stored position beyond
-- the partition's high watermark) and it read the log again from its start: status
-- reports it and republish takes it as proof of the loss, until republish has refilled.
CREATE TABLE IF NOT EXISTS {schema}.log_losses (
    consumer  text    NOT NULL,
    topic     text    NOT NULL,
    partition integer NOT NULL,
    stored    bigint  NOT NULL,
    highwater bigint  NOT NULL,
    found_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
-- mark: digest of the record just before next_offset, as this consumer read it: the
-- identity of the log the position belongs to (see bus.tracking.apply_batches).
ALTER TABLE {schema}.positions ADD COLUMN IF NOT EXISTS mark bigint;
""",
)

COMPONENT = Component(
    "tracking",
    (
        STEP_1,
        STEP_2,
        STEP_3,
    ),
)
