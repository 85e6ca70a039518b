"""Versioned schema migrations for every store, tracking and view schema (docs/operations.md).

Each *component* (``events``, ``tracking``, ``view``, ``directory``, ...) is an ordered
list of numbered steps; ``runner`` applies a component's pending steps to one PostgreSQL
schema and records each in that schema's ``schema_migrations`` table. Step 1 of every
component is its *baseline*: the DDL of the release before migrations existed, frozen
here and idempotent, so it adopts a database that release built and creates a new one
alike. A schema change after that is a new step appended to the component's module, never
an edit of a released step (``tests/store/test_migrations.py`` pins their checksums).
"""
