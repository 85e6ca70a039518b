"""Where a person's details could be in clear: every topic, table, log and data file.

Shared by the isolation test (seeded markers of live people) and the erasure test (an
erased person). A hit names where; the tests assert there are none.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from psycopg import sql

from referralnet.system import RunningSystem

SKIP_DIRS = {"pginstall"}
"""PostgreSQL's own binaries under the home: no data."""


def in_topics(system: RunningSystem, needles: list[str]) -> list[str]:
    from tests.e2e.test_isolation import all_topics, read_topics  # its reader, not a copy

    records = read_topics(
        system.bootstrap_servers, all_topics(system.bootstrap_servers), timeout=60
    )
    assert any(r.topic == system.topics.referral_events for r in records)
    return [
        f"topic {r.topic} {r.type}: {n!r}" for r in records for n in needles if n.encode() in r.raw
    ]


def in_tables(system: RunningSystem, needles: list[str]) -> tuple[int, list[str]]:
    """(tables scanned, hits). A row is searched as text, bytea columns as hex too."""
    patterns = [*needles, *(n.encode().hex() for n in needles)]
    hits = []
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        where = sql.SQL(" OR ").join(sql.SQL("strpos(t::text, %s) > 0") for _ in patterns)
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {}.{} t WHERE {}").format(
                sql.Identifier(schema), sql.Identifier(table), where
            )
            row = conn.execute(query, patterns).fetchone()
            if row and row[0]:
                hits.append(f"table {schema}.{table}: {row[0]} rows with one of {needles}")
        conn.execute("CHECKPOINT")  # what the tables hold is in their files now
    return len(tables), hits


def in_files(home: Path, needles: list[str]) -> tuple[int, list[str]]:
    """(files scanned, hits) under the stack's home: pgdata (tables, WAL), logs, keys."""
    encoded = [n.encode() for n in needles]
    scanned, hits = 0, []
    for root, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            path = Path(root) / name
            if not path.is_file():  # a socket, a pipe
                continue
            try:
                data = path.read_bytes()
            except (FileNotFoundError, PermissionError, IsADirectoryError):
                continue  # a WAL segment recycled or a socket, while we walked
            scanned += 1
            hits += [f"file {path}: {n!r}" for n in encoded if n in data]
    return scanned, hits
