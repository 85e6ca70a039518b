"""The alliance directory: organisations and activities (``directory.store``).

Step 1 is the DDL of release 83ff4c4 (directory.store), frozen.
Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "baseline",
    """
CREATE SCHEMA IF NOT EXISTS directory;
CREATE TABLE IF NOT EXISTS directory.organisations (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    kind          text NOT NULL,
    areas         text[] NOT NULL,
    spec          jsonb NOT NULL,
    token_hash    text UNIQUE,
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS directory.activities (
    id       text PRIMARY KEY,
    provider text NOT NULL REFERENCES directory.organisations (id),
    kind     text NOT NULL,
    area     text NOT NULL,
    status   text NOT NULL,
    spec     jsonb NOT NULL
);
""",
)

COMPONENT = Component("directory", (STEP_1,))
