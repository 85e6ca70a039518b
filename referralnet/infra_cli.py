"""``referralnet infra plan|apply``: topics, partitions, configs and ACLs as code.

The partners come from the directory in the database (or ``--directory FILE``), the
topic layout from ``bus.topics``, the current state from the broker; ``plan`` (and
``apply --dry-run``) print the steps, ``apply`` carries them out. Exit codes: 0 done
(or nothing to do), 1 some step failed or the broker cannot do some of it (each such
capability named on one line), 2 bad arguments.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import click
import typer
from kafka.errors import KafkaError
from psycopg import AsyncConnection
from rich.console import Console

from bus.topics import Topics
from infra.kafka_access import SERVICES, Principals
from infra.kafka_apply import ApplyResult, admin_client, apply, read_state
from infra.kafka_plan import Action, Durability, Notice, changes, plan, wanted
from infra.kafka_security import KafkaSecurity, KafkaSecurityError
from referralnet import endpoints
from referralnet.settings import Settings

infra_app = typer.Typer(
    help="Topics, partitions, configs and per-partner ACLs on the cluster, as code.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 120)

ReplicationOption = Annotated[
    int, typer.Option(min=1, help="replication factor of every topic (3 on a 3-broker cluster)")
]
MinInsyncOption = Annotated[
    int, typer.Option(min=1, help="min.insync.replicas of every topic (acks=all needs this many)")
]
DirectoryOption = Annotated[
    Path | None,
    typer.Option("--directory", help="take the partners from this directory file, not the DB"),
]
PartnerOption = Annotated[
    str, typer.Option(help="a partner's Kafka principal; {org} is its organisation id")
]
ServiceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--service-principal",
        help="SERVICE=PRINCIPAL, e.g. relay=User:relay (default User:referralnet-SERVICE); "
        "SERVICE is one of " + ", ".join(SERVICES),
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the steps as JSON")]


def _principals(partner: str, overrides: list[str] | None) -> Principals:
    if "{org}" not in partner:
        raise click.UsageError(f"--partner-principal {partner!r} must contain {{org}}")
    services = dict(Principals.default().services)
    for item in overrides or []:
        service, sep, principal = item.partition("=")
        if not sep or service not in SERVICES or ":" not in principal:
            raise click.UsageError(
                f"--service-principal {item!r}: not SERVICE=TYPE:NAME (see --help)"
            )
        services[service] = principal
    return Principals(services, partner)


def _org_ids(settings: Settings, directory: Path | None) -> list[str]:
    if directory is not None:
        from directory import loader

        try:
            return [o.id for o in loader.read(directory).organisations]
        except loader.DirectoryFileError as exc:
            raise click.UsageError(str(exc)) from None

    async def from_database(url: str) -> list[str]:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute("SELECT to_regclass('directory.organisations')")
            row = await cur.fetchone()
            if row is None or row[0] is None:
                return []  # no directory loaded yet: the services' topics and grants only
            cur = await conn.execute("SELECT id FROM directory.organisations ORDER BY id")
            return [r[0] for r in await cur.fetchall()]

    with endpoints.database_url(settings) as url:
        return asyncio.run(from_database(url))


def _security() -> KafkaSecurity:
    try:
        return KafkaSecurity.from_env(Settings.from_env().kafka_variables())
    except KafkaSecurityError as exc:
        raise click.UsageError(str(exc)) from None


def _print_steps(steps: list[Action], unsupported: Mapping[str, str], as_json: bool) -> None:
    if as_json:
        listed = [{"step": type(s).__name__, "text": s.describe()} for s in steps]
        print(json.dumps({"steps": listed, "unsupported": dict(unsupported)}))
        return
    if not changes(steps):
        console.print("nothing to change: the cluster matches the directory and the layout")
    for step in steps:
        style = "yellow" if isinstance(step, Notice) else None
        console.print(step.describe(), style=style, highlight=False, soft_wrap=True)
    for capability, why in sorted(unsupported.items()):
        console.print(f"{capability}: {why}", style="yellow", highlight=False)


def _run(
    dry_run: bool,
    replication_factor: int,
    min_insync_replicas: int,
    directory: Path | None,
    partner_principal: str,
    service_principals: list[str] | None,
    as_json: bool,
) -> None:
    security = _security()
    if min_insync_replicas > replication_factor:
        raise click.UsageError(
            f"--min-insync-replicas {min_insync_replicas} exceeds --replication-factor "
            f"{replication_factor}: no write with acks=all could succeed"
        )
    principals = _principals(partner_principal, service_principals)
    settings = Settings.from_env()
    # The broker before the directory: without a broker there is nothing to plan
    # against, so fail before starting an embedded database to read partners from.
    bootstrap = endpoints.bootstrap_servers(settings)
    orgs = _org_ids(settings, directory)
    durability = Durability(replication_factor, min_insync_replicas)
    want = wanted(Topics(prefix=settings.topic_prefix), orgs, durability, principals)
    try:
        admin = admin_client(bootstrap, security)
    except KafkaError as exc:
        raise endpoints.NoBroker(f"cannot reach the broker at {bootstrap}: {exc}") from None
    try:
        state = read_state(admin, want)
        steps = plan(want, state)
        if dry_run:
            _print_steps(steps, state.unsupported, as_json)
            return
        result = apply(admin, steps, state)
    finally:
        admin.close()
    _report(steps, result, as_json)


def _report(steps: list[Action], result: ApplyResult, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "done": [s.describe() for s in result.done],
                    "skipped": {c: [s.describe() for s in ss] for c, ss in result.skipped.items()},
                    "unsupported": result.unsupported,
                    "failed": [{"step": s.describe(), "error": e} for s, e in result.failed],
                    "notes": [s.describe() for s in steps if isinstance(s, Notice)],
                }
            )
        )
    else:
        for step in result.done:
            console.print(f"done: {step.describe()}", highlight=False, soft_wrap=True)
        for step in (s for s in steps if isinstance(s, Notice)):
            console.print(step.describe(), style="yellow", highlight=False, soft_wrap=True)
        for capability, skipped in sorted(result.skipped.items()):
            console.print(
                f"{capability}: {result.unsupported.get(capability, 'skipped')}; "
                f"{len(skipped)} step(s) not applied",
                style="red",
                highlight=False,
            )
        for step, error in result.failed:
            console.print(f"failed: {step.describe()}: {error}", style="red", highlight=False)
        if not result.done and result.complete:
            console.print("nothing to change: the cluster matches the directory and the layout")
    if not result.complete:
        sys.exit(1)


@infra_app.command("plan")
def plan_command(
    replication_factor: ReplicationOption = 3,
    min_insync_replicas: MinInsyncOption = 2,
    directory: DirectoryOption = None,
    partner_principal: PartnerOption = "User:partner.{org}",
    service_principal: ServiceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the steps that would align the cluster (the same as `apply --dry-run`)."""
    _run(
        True,
        replication_factor,
        min_insync_replicas,
        directory,
        partner_principal,
        service_principal,
        as_json,
    )


@infra_app.command("apply")
def apply_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan only")] = False,
    replication_factor: ReplicationOption = 3,
    min_insync_replicas: MinInsyncOption = 2,
    directory: DirectoryOption = None,
    partner_principal: PartnerOption = "User:partner.{org}",
    service_principal: ServiceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create and align topics, partition counts, configs and ACLs (idempotent)."""
    _run(
        dry_run,
        replication_factor,
        min_insync_replicas,
        directory,
        partner_principal,
        service_principal,
        as_json,
    )
