"""``referralnet projections verify|rebuild``: the tables services decide on, checked
against (or rebuilt from) the event stores they are projections of.

Each projection knows how to compute its rows from the stores (the same pure folds the
services use), how to read them from its table, and how to write them. ``verify`` exits
1 naming the first difference (run it on a quiet system: a table updated from the bus
can trail the stores by the events still in flight); ``rebuild`` rewrites the table in
one transaction, holding its writers off meanwhile. Exit 2: bad arguments.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import click
import typer
from psycopg import AsyncConnection
from psycopg.errors import UndefinedTable
from rich.console import Console

from referralnet import endpoints
from referralnet.services_table import STORES
from referralnet.settings import Settings
from services.distributor import store as distributor
from services.distributor.from_stores import entitlements_from_stores
from services.outcomes import adapters as outcomes
from services.routing import adapters as routing

SHOWN = 120
"""Characters of a differing value a difference shows."""

Rows = Mapping[Any, Any]
"""Key → a dataclass row (compared field by field)."""


@dataclass(frozen=True)
class Projection:
    """A table kept beside a service's stream, and how to recompute it from the stores."""

    name: str
    from_stores: Callable[[AsyncConnection[Any]], Awaitable[Rows]]
    in_table: Callable[[AsyncConnection[Any]], Awaitable[Rows]]
    write: Callable[[AsyncConnection[Any], Any], Awaitable[None]]
    unrecorded: frozenset[str] = frozenset()
    """Fields no store records (kept as the table has them, never compared)."""


PROJECTIONS: tuple[Projection, ...] = (
    Projection(
        "outcomes.cases",
        outcomes.cases_from_stores,
        outcomes.cases_in_table,
        outcomes.write_cases,
        frozenset({"routed_seen_at"}),
    ),
    Projection(
        "routing.cases",
        routing.cases_from_stores,
        routing.cases_in_table,
        routing.write_cases,
    ),
    Projection(
        "routing.capacity",
        routing.caseloads_from_stores,
        routing.caseloads_in_table,
        routing.write_caseloads,
    ),
    Projection(
        "distributor.entitlements",
        lambda conn: entitlements_from_stores(conn, STORES),
        distributor.entitlements_in_table,
        distributor.write_entitlements,
    ),
)


def first_difference(projection: Projection, expected: Rows, actual: Rows) -> str | None:
    """One line naming the first row (by key) and field where table and stores differ."""
    for key in sorted({*expected, *actual}, key=str):
        want, have = expected.get(key), actual.get(key)
        if want is None:
            return f"{projection.name} {key}: in the table, not in the stores"
        if have is None:
            return f"{projection.name} {key}: in the stores, missing from the table"
        wanted, held = asdict(want), asdict(have)
        for field in wanted:
            if field not in projection.unrecorded and wanted[field] != held[field]:
                return (
                    f"{projection.name} {key}: {field} is {_shown(held[field])}, "
                    f"the stores say {_shown(wanted[field])}"
                )
    return None


def _shown(value: object, limit: int = SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters (a kept event is kilobytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def verify(conn: AsyncConnection[Any], chosen: tuple[Projection, ...]) -> list[str]:
    """The first difference of each projection that differs (empty: all agree)."""
    found = []
    for projection in chosen:
        async with conn.transaction():  # one snapshot for both sides
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            expected = await projection.from_stores(conn)
            actual = await projection.in_table(conn)
        difference = first_difference(projection, expected, actual)
        if difference:
            found.append(difference)
    return found


async def rebuild(conn: AsyncConnection[Any], chosen: tuple[Projection, ...]) -> dict[str, int]:
    """Rewrite each projection from the stores; rows written per projection."""
    written = {}
    for projection in chosen:
        async with conn.transaction():
            expected = await projection.from_stores(conn)
            await projection.write(conn, expected)
        written[projection.name] = len(expected)
    return written


projections_app = typer.Typer(
    help=(
        "Tables the services decide on (cases, capacity, entitlements): verify or rebuild "
        "them from the stores."
    ),
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 120)
OnlyOption = Annotated[
    str | None,
    typer.Option("--only", help="one projection: " + ", ".join(p.name for p in PROJECTIONS)),
]


def _chosen(only: str | None) -> tuple[Projection, ...]:
    if only is None:
        return PROJECTIONS
    chosen = tuple(p for p in PROJECTIONS if p.name == only)
    if not chosen:
        names = ", ".join(p.name for p in PROJECTIONS)
        raise click.UsageError(f"no projection {only!r} (choose from {names})")
    return chosen


def _run(work: Callable[[AsyncConnection[Any]], Awaitable[Any]]) -> Any:
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # e.g. REFERRALNET_TIMEZONE is not a zone
        raise click.UsageError(str(exc)) from None

    async def connected(url: str) -> Any:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            return await work(conn)

    with endpoints.database_url(settings) as url:
        try:
            return asyncio.run(connected(url))
        except UndefinedTable as exc:
            problem = exc.diag.message_primary
            raise click.UsageError(f"no service stores in this database ({problem})") from None


@projections_app.command("verify")
def verify_command(only: OnlyOption = None) -> None:
    """Compare each table with what its stores say; exit 1 naming the first difference."""
    chosen = _chosen(only)
    differences: list[str] = _run(lambda conn: verify(conn, chosen))
    for line in differences:
        console.print(f"[red]differs[/]: {line}", highlight=False)
    for projection in chosen:
        if not any(d.startswith(projection.name + " ") for d in differences):
            console.print(f"[green]agrees[/]: {projection.name}", highlight=False)
    if differences:
        sys.exit(1)


@projections_app.command("rebuild")
def rebuild_command(only: OnlyOption = None) -> None:
    """Rewrite each table from its stores (its writers wait meanwhile)."""
    chosen = _chosen(only)
    written: dict[str, int] = _run(lambda conn: rebuild(conn, chosen))
    for name, rows in written.items():
        console.print(f"rebuilt {name}: {rows} rows", highlight=False)
