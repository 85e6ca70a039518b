"""Apply a component's pending migration steps to one schema, and record them there.

Why a small runner and not yoyo-migrations or alembic: the schemas are parametrised
(one event store per service, one tracking schema per consumer, one view schema per
partner, thousands of them), migrations must run on the caller's psycopg 3 async
connection under the advisory lock every DDL path already takes, and the record of what
was applied must travel with its schema (``replay`` rebuilds a view under another name
and renames it into place; a backup leaves derived schemas out). yoyo keeps one
database-wide table of file-based migrations over its own synchronous connections;
alembic needs SQLAlchemy. Neither parametrises a migration by schema.

The record is ``<schema>.schema_migrations``: one row per (component, version) with the
step's name, a checksum of its SQL and when it was applied.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from psycopg import AsyncConnection, errors, sql
from psycopg.sql import Composed

log = structlog.get_logger(__name__)

LOCK = "SELECT pg_advisory_xact_lock(hashtext('referralnet-ddl'))"
"""Every DDL path takes this lock: several processes may start at once."""

RECORD_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    component  text    NOT NULL,
    version    integer NOT NULL,
    name       text    NOT NULL,
    checksum   text    NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
);
"""


@dataclass(frozen=True)
class Step:
    """One numbered change. ``sql`` is a template: ``{schema}`` becomes the quoted schema
    identifier, ``{name}`` the schema's name as a string literal; literal braces are
    doubled. Released steps are never edited: a change is a new step."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """First 16 hex digits of the SHA-256 of the template."""
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statement(self, schema: str) -> Composed:
        return sql.SQL(self.sql).format(schema=sql.Identifier(schema), name=sql.Literal(schema))


@dataclass(frozen=True)
class Component:
    """A named, ordered list of steps numbered 1, 2, ... without gaps."""

    name: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        versions = [s.version for s in self.steps]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{self.name}: steps must be numbered 1..n, got {versions}")

    @property
    def latest(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class Target:
    """A component in one schema (``events`` in ``intake``, ``view`` in ``view_gp1``)."""

    component: Component
    schema: str

    def __str__(self) -> str:
        return f"{self.schema}/{self.component.name}"


@dataclass(frozen=True)
class State:
    """What a target has and lacks. ``unknown``: versions recorded by a newer release
    (normal during a rolling upgrade); ``changed``: applied steps whose SQL differs now."""

    target: Target
    applied: tuple[int, ...]
    pending: tuple[Step, ...]
    unknown: tuple[int, ...]
    changed: tuple[int, ...]


async def recorded(conn: AsyncConnection[Any], target: Target) -> dict[int, str]:
    """Versions recorded for ``target`` with their checksums ({} before any migration)."""
    # A plain query on the catalogs, not to_regclass(): a name lookup leaves a negative
    # entry in this backend's catalog cache, which an advisory lock (unlike a relation
    # lock) does not refresh, so a CREATE SCHEMA IF NOT EXISTS after waiting for another
    # process's migration missed its schema and failed on pg_namespace's unique index.
    cur = await conn.execute(
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'schema_migrations'",
        (target.schema,),
    )
    if await cur.fetchone() is None:
        return {}
    cur = await conn.execute(
        sql.SQL("SELECT version, checksum FROM {} WHERE component = %s").format(
            sql.Identifier(target.schema, "schema_migrations")
        ),
        (target.component.name,),
    )
    return {v: c for v, c in await cur.fetchall()}


async def state(conn: AsyncConnection[Any], target: Target) -> State:
    """Compare what ``target``'s schema recorded with the steps this release knows."""
    done = await recorded(conn, target)
    known = {s.version: s for s in target.component.steps}
    return State(
        target,
        applied=tuple(sorted(v for v in done if v in known)),
        pending=tuple(s for s in target.component.steps if s.version not in done),
        unknown=tuple(sorted(v for v in done if v not in known)),
        changed=tuple(sorted(v for v, c in done.items() if v in known and known[v].checksum != c)),
    )


async def migrate(conn: AsyncConnection[Any], target: Target) -> list[Step]:
    """Apply ``target``'s pending steps in one transaction; return those applied.

    Nothing pending (the usual start): one catalog look-up, no lock, no DDL. Otherwise
    the steps run under the DDL advisory lock, re-read after taking it, so two processes
    starting together apply each step once; each step and its record commit together,
    so a failure leaves the schema as it was.
    """
    if not (await state(conn, target)).pending:
        return []
    try:
        return await _apply_pending(conn, target)
    except (errors.UniqueViolation, errors.DuplicateSchema, errors.DuplicateTable) as exc:
        # Seen under load: a process that waited on the lock while another created the
        # same schema still failed its CREATE ... IF NOT EXISTS on the catalog's unique
        # index. The failed transaction is rolled back whole; the second try re-reads
        # the record (now holding the other process's steps) and applies what is left.
        log.info("migration raced another process; trying again", schema=target.schema,
                 error=type(exc).__name__)  # fmt: skip
        return await _apply_pending(conn, target)


async def _apply_pending(conn: AsyncConnection[Any], target: Target) -> list[Step]:
    """The pending steps of ``target`` under the DDL lock, in one transaction."""
    async with conn.transaction():
        await conn.execute(LOCK)
        await conn.execute(sql.SQL(RECORD_DDL).format(schema=sql.Identifier(target.schema)))
        todo = (await state(conn, target)).pending
        for step in todo:
            await conn.execute(step.statement(target.schema))
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (component, version, name, checksum) VALUES (%s, %s, %s, %s)"
                ).format(sql.Identifier(target.schema, "schema_migrations")),
                (target.component.name, step.version, step.name, step.checksum),
            )
    return list(todo)


async def migrate_all(conn: AsyncConnection[Any], targets: Sequence[Target]) -> list[Step]:
    """``migrate`` each target in order; every step applied, in order."""
    applied: list[Step] = []
    for target in targets:
        applied += await migrate(conn, target)
    return applied
