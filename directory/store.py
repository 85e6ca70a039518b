"""The directory's tables: reference data every service reads, tokens stored hashed."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from directory.model import Activity, DirectoryFile, Organisation, OrgKind
from infra.migrations.catalog import DIRECTORY
from infra.migrations.runner import Target, migrate


@dataclass(frozen=True)
class RegisteredOrg:
    """An organisation as the API knows its caller."""

    id: str
    name: str
    kind: OrgKind
    areas: tuple[str, ...]
    spec: dict[str, Any]

    @property
    def organisation(self) -> Organisation:
        return Organisation.model_validate(self.spec)


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256: a leaked table grants nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "rn_" + secrets.token_urlsafe(32)


async def create(conn: AsyncConnection[Any]) -> None:
    """Create or migrate the directory schema (``infra.migrations``)."""
    await migrate(conn, Target(DIRECTORY, "directory"))


async def load(conn: AsyncConnection[Any], directory: DirectoryFile) -> dict[str, str]:
    """Register new organisations, update known ones; return {org_id: token} for new ones.

    Tokens are printed once and never stored in clear, so only new organisations get one.
    """
    tokens: dict[str, str] = {}
    async with conn.transaction():
        for org in directory.organisations:
            token = new_token()
            cur = await conn.execute(
                "INSERT INTO directory.organisations (id, name, kind, areas, spec, token_hash) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "name = EXCLUDED.name, kind = EXCLUDED.kind, areas = EXCLUDED.areas, "
                "spec = EXCLUDED.spec RETURNING (xmax = 0) AS inserted",
                (
                    org.id,
                    org.name,
                    org.kind.value,
                    org.areas,
                    Jsonb(org.model_dump(mode="json")),
                    hash_token(token),
                ),
            )
            row = await cur.fetchone()
            if row and row[0]:
                tokens[org.id] = token
        for activity in directory.activities:
            await conn.execute(
                "INSERT INTO directory.activities (id, provider, kind, area, status, spec) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "provider = EXCLUDED.provider, kind = EXCLUDED.kind, area = EXCLUDED.area, "
                "status = EXCLUDED.status, spec = EXCLUDED.spec",
                (
                    activity.id,
                    activity.provider,
                    activity.kind,
                    activity.area,
                    activity.status,
                    Jsonb(activity.model_dump(mode="json")),
                ),
            )
    return tokens


def org_from_row(row: dict[str, Any]) -> RegisteredOrg:
    """A ``RegisteredOrg`` from a row of ``directory.organisations`` (dict_row)."""
    return RegisteredOrg(
        id=row["id"],
        name=row["name"],
        kind=OrgKind(row["kind"]),
        areas=tuple(row["areas"]),
        spec=row["spec"],
    )


async def org_by_token(conn: AsyncConnection[Any], token: str) -> RegisteredOrg | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, name, kind, areas, spec FROM directory.organisations WHERE token_hash = %s",
            (hash_token(token),),
        )
        row = await cur.fetchone()
    return org_from_row(row) if row else None


async def organisations(conn: AsyncConnection[Any]) -> list[RegisteredOrg]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, name, kind, areas, spec FROM directory.organisations ORDER BY id"
        )
        return [org_from_row(r) for r in await cur.fetchall()]


async def activities(conn: AsyncConnection[Any]) -> list[Activity]:
    cur = await conn.execute("SELECT spec FROM directory.activities ORDER BY id")
    return [Activity.model_validate(r[0]) for r in await cur.fetchall()]


async def activity(conn: AsyncConnection[Any], activity_id: str) -> Activity | None:
    cur = await conn.execute("SELECT spec FROM directory.activities WHERE id = %s", (activity_id,))
    row = await cur.fetchone()
    return Activity.model_validate(row[0]) if row else None
