"""The audit store's reader and time indexes (``services.privacy.audit``); its events
table is the ``events`` component in schema ``audit``.

Step 1 is the schema as issue 16 introduced it. Append new steps; never edit one."""

from __future__ import annotations

from infra.migrations.runner import Component, Step

STEP_1 = Step(
    1,
    "indexes by reader and by time",
    """
CREATE INDEX IF NOT EXISTS events_reader ON {schema}.events (actor, occurred_at);
CREATE INDEX IF NOT EXISTS events_time ON {schema}.events (occurred_at);
""",
)

COMPONENT = Component("audit", (STEP_1,))
