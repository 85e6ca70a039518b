"""Per-person data keys, wrapped by the master keys (``services.privacy.person_keys``).

Step 1 is the schema as issue 16 introduced it. Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "person keys, shredding refused to come back",
    """
CREATE SCHEMA IF NOT EXISTS keys;
CREATE TABLE IF NOT EXISTS keys.person_keys (
    person_ref    text PRIMARY KEY,
    master_key_id text,
    wrapped       bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    erased_at     timestamptz,
    reason        text,
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL)),
    CHECK ((wrapped IS NULL) = (master_key_id IS NULL))
);
CREATE INDEX IF NOT EXISTS person_keys_master ON keys.person_keys (master_key_id)
    WHERE wrapped IS NOT NULL;
CREATE OR REPLACE FUNCTION keys.refuse_unshred() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            RAISE EXCEPTION 'keys.person_keys cannot be truncated';
        END IF;
        IF OLD.erased_at IS NOT NULL THEN
            RAISE EXCEPTION 'person % was erased: the key cannot come back', OLD.person_ref;
        END IF;
        RETURN NEW;
    END $$;
DROP TRIGGER IF EXISTS no_unshred ON keys.person_keys;
CREATE TRIGGER no_unshred BEFORE UPDATE ON keys.person_keys
    FOR EACH ROW EXECUTE FUNCTION keys.refuse_unshred();
DROP TRIGGER IF EXISTS no_truncate ON keys.person_keys;
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON keys.person_keys
    FOR EACH STATEMENT EXECUTE FUNCTION keys.refuse_unshred();
""",
)

COMPONENT = Component("keys", (STEP_1,))
