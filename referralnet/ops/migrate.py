"""``referralnet migrate``: bring every schema of a database up to this release.

The targets are the service schemas (``infra.migrations.catalog.SERVICE_TARGETS``) and
the view schema of every registered partner. ``--dry-run`` lists the pending steps and
changes nothing. The processes also migrate what they use when they start
(``referralnet.bootstrap``, ``views.worker``), so ``migrate`` is the explicit, visible
first step of an upgrade (docs/operations.md), not the only path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

from infra.migrations.catalog import SERVICE_TARGETS, view_targets
from infra.migrations.runner import State, Step, Target, migrate, state
from views.schema import schema_name


@dataclass
class MigrationReport:
    """What ``migrate`` found (``dry_run``) or did, per target."""

    dry_run: bool
    states: list[State] = field(default_factory=list)
    applied: list[tuple[Target, Step]] = field(default_factory=list)

    @property
    def changed(self) -> list[State]:
        """Targets with a step whose SQL was edited after it was applied: a defect."""
        return [s for s in self.states if s.changed]

    def lines(self) -> list[str]:
        out: list[str] = []
        for s in self.states:
            if s.unknown:
                versions = ", ".join(map(str, s.unknown))
                out.append(f"{s.target}: version {versions} recorded by a newer release")
            if s.changed:
                versions = ", ".join(map(str, s.changed))
                out.append(f"{s.target}: step {versions} changed after it was applied")
        if self.dry_run:
            pending = [(s.target, p) for s in self.states for p in s.pending]
            out += [f"pending {t}: {p.version} {p.name}" for t, p in pending]
            out.append(f"{len(pending)} pending steps in {len(self.states)} schema components")
        else:
            out += [f"applied {t}: {p.version} {p.name}" for t, p in self.applied]
            out.append(
                f"{len(self.applied)} steps applied; {len(self.states)} schema components "
                "up to date"
            )
        return out


async def _partner_ids(conn: AsyncConnection[Any]) -> list[str]:
    cur = await conn.execute("SELECT to_regclass('directory.organisations')")
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return []
    cur = await conn.execute("SELECT id FROM directory.organisations ORDER BY id")
    return [r[0] for r in await cur.fetchall()]


async def targets(conn: AsyncConnection[Any]) -> list[Target]:
    """The service targets, then each registered partner's view targets."""
    found = list(SERVICE_TARGETS)
    for org in await _partner_ids(conn):
        found += view_targets(schema_name(org))
    return found


async def run_migrations(conn: AsyncConnection[Any], dry_run: bool) -> MigrationReport:
    """Migrate (or, with ``dry_run``, only inspect) every target, in catalog order.

    Partners are listed after the directory is migrated, so a fresh database gets its
    service schemas and a dry run on one lists them (partners appear once registered).
    """
    report = MigrationReport(dry_run)
    if not dry_run:
        for target in SERVICE_TARGETS:
            report.applied += [(target, s) for s in await migrate(conn, target)]
    for target in await targets(conn):
        if not dry_run and target not in SERVICE_TARGETS:
            report.applied += [(target, s) for s in await migrate(conn, target)]
        report.states.append(await state(conn, target))
    return report
