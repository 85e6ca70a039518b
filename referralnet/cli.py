"""``referralnet``: run the network, load the directory, report, follow a journey.

Bad arguments print one line and exit 2; a failed check exits 1; success exits 0.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import click
import typer
import typer._click.exceptions as typer_click
from psycopg import AsyncConnection
from rich.console import Console

from directory import loader
from directory import store as directory
from infra.embedded import EmbeddedStartError
from infra.local_time import NotADate, parse_instant, zone_named
from infra.logging import configure_logging
from referralnet import endpoints, journey, render
from referralnet.infra_cli import infra_app
from referralnet.ops.projections import projections_app
from referralnet.registration import register
from referralnet.settings import Settings
from services.refusal import Invalid
from views.report import build_report, report_range
from views.schema import schema_name

app = typer.Typer(
    name="referralnet",
    help="Referral Network: partners of a social-prescribing alliance exchange referrals.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
directory_app = typer.Typer(help="The alliance directory: partners, services, activities.")
app.add_typer(directory_app, name="directory")
app.add_typer(infra_app, name="infra")
app.add_typer(projections_app, name="projections")
console = Console(width=None if sys.stdout.isatty() else 120)


class UsageProblem(click.UsageError):
    """Bad input from the command line: one line, exit 2."""


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:  # e.g. REFERRALNET_TIMEZONE is not a zone: one line, exit 2
        raise UsageProblem(str(exc)) from None


async def _connect(url: str) -> AsyncConnection[Any]:
    return await AsyncConnection.connect(url, autocommit=True)


@app.command()
def up(
    port: Annotated[int | None, typer.Option(help="API port (default 8000)")] = None,
    scale: Annotated[
        str,
        typer.Option(
            help="instances per worker kind, e.g. views=2,routing=2 (kinds: api, relay, "
            "routing, distributor, outcomes, views; default 1 each)"
        ),
    ] = "",
) -> None:
    """Start broker, database and services; serve the API on 127.0.0.1:8000 until Ctrl-C."""
    from dataclasses import replace

    from referralnet.supervisor import BadScale, parse_scale
    from referralnet.system import running_system

    try:
        instances = parse_scale(scale)
    except BadScale as exc:
        raise UsageProblem(str(exc)) from None
    settings = _settings()
    if port is not None:
        settings = replace(settings, api_port=port)
    # The default port taken (another stack on this machine): take a free one, printed
    # below; a port the user chose is kept, or refused (exit 1) if it is in use.
    chosen = port is not None or settings.given("api_port")
    with running_system(settings, any_port_if_taken=not chosen, scale=instances) as system:
        endpoints.record(
            settings.home,
            endpoints.Recorded(
                system.bootstrap_servers, system.database_url, system.base_url, _pid()
            ),
        )
        console.print(f"[bold]Referral Network[/] API        {system.base_url}  (OpenAPI: /docs)")
        console.print(f"Web app for the partners  {system.base_url}/app/  (docs/webapp.md)")
        console.print(f"Kafka bootstrap servers   {system.bootstrap_servers}")
        console.print(f"PostgreSQL                {system.database_url}")
        console.print(f"Data directory            {settings.home}  (logs in logs/)")
        if instances:
            counts = ", ".join(f"{k}={n}" for k, n in instances.items())
            console.print(f"Scaled out                {counts}")
        console.print("Load partners with `referralnet directory load FILE`. Ctrl-C stops.")
        try:
            threading.Event().wait()  # the supervisor's watchdog restarts dead workers
        except KeyboardInterrupt:
            console.print("stopping ...")
        finally:
            endpoints.forget(settings.home)


def _pid() -> int:
    import os

    return os.getpid()


@app.command()
def demo(
    referrals: Annotated[
        int, typer.Option(min=1, max=100_000, help="referrals to simulate in the year")
    ] = 2000,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="journeys in flight")] = 48,
) -> None:
    """Run a simulated year of a demo alliance through the public API and print the results."""
    from referralnet.demo import run_demo

    sys.exit(run_demo(_settings(), referrals=referrals, concurrency=concurrency, console=console))


@directory_app.command("load")
def directory_load(
    file: Annotated[Path, typer.Argument(help="directory file (YAML or JSON)")],
    as_json: Annotated[bool, typer.Option("--json", help="print tokens as JSON")] = False,
) -> None:
    """Register the organisations and activities of FILE; print each new token once."""
    try:
        parsed = loader.read(file)
    except loader.DirectoryFileError as exc:
        raise UsageProblem(str(exc)) from None
    settings = _settings()
    with endpoints.database_url(settings) as url:
        tokens = asyncio.run(_load_directory(url, parsed))
    try:
        from bus.admin import ensure_topics
        from bus.topics import Topics

        topics = Topics(prefix=settings.topic_prefix)
        ensure_topics(
            endpoints.bootstrap_servers(settings),
            topics.layout(topics.org(o.id) for o in parsed.organisations),
        )
    except endpoints.NoBroker:
        pass  # topics are created by the workers when they start
    if as_json:
        print(json.dumps({"alliance": parsed.alliance, "tokens": tokens}, indent=2))
        return
    render.tokens(console, parsed, tokens)


async def _load_directory(url: str, parsed: Any) -> dict[str, str]:
    from referralnet.bootstrap import create_schemas

    await create_schemas(url)
    async with await _connect(url) as conn:
        return await register(conn, parsed)


def _parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO date or date-time; without an offset it is the alliance's local time (not
    the machine's ``TZ``: one calendar for every command, see ``infra.local_time``)."""
    if value is None:
        return None
    try:
        return parse_instant(value, zone_named(_settings().timezone))
    except NotADate as exc:
        raise UsageProblem(f"--{name}: {exc}") from None


@app.command()
def report(
    date_from: Annotated[
        str | None,
        typer.Option("--from", help="ISO date, inclusive; no offset = alliance local time"),
    ] = None,
    date_to: Annotated[
        str | None,
        typer.Option("--to", help="ISO date, exclusive; no offset = alliance local time"),
    ] = None,
    commissioner: Annotated[str | None, typer.Option(help="commissioner org id")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The alliance report from a commissioner's view (same figures as GET /report).

    Dates are read on the alliance's calendar (REFERRALNET_TIMEZONE, default
    Europe/London), never the machine's TZ, so the figures equal GET /report's.
    """
    try:
        start, end = report_range(date_from, date_to, zone_named(_settings().timezone))
    except Invalid as exc:
        raise UsageProblem(f"--{exc.field}: {exc.reason}") from None
    with endpoints.database_url(_settings()) as url:
        result = asyncio.run(_report(url, commissioner, start, end))
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        render.report(console, result)


async def _report(
    url: str, commissioner: str | None, start: datetime | None, end: datetime | None
) -> Any:
    async with await _connect(url) as conn:
        orgs = [o for o in await directory.organisations(conn) if o.kind.value == "commissioner"]
        if commissioner is None:
            if not orgs:
                raise UsageProblem("no commissioner is registered; load a directory first")
            commissioner = orgs[0].id
        elif commissioner not in {o.id for o in orgs}:
            raise UsageProblem(f"{commissioner!r} is not a registered commissioner")
        return await build_report(conn, schema_name(commissioner), start, end)


@app.command("journey")
def journey_command(
    referral_id: Annotated[str, typer.Argument(help="referral id (UUID)")],
    verify: Annotated[
        bool,
        typer.Option("--verify", help="check every store's hash chain and the signed checkpoints"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One referral's timeline across every service's store; --verify detects tampering."""
    try:
        rid = UUID(referral_id)
    except ValueError:
        raise UsageProblem(f"not a referral id (UUID): {referral_id!r}") from None
    from psycopg.errors import UndefinedTable

    settings = _settings()
    with endpoints.database_url(settings) as url:
        try:
            steps, breaks = asyncio.run(_journey(url, rid, verify, settings.home))
        except UndefinedTable as exc:
            problem = exc.diag.message_primary
            raise UsageProblem(f"no event stores in this database ({problem})") from None
    if not steps and not breaks:  # a deleted referral the checkpoints knew still reports
        raise UsageProblem(f"no referral {rid} in any store")
    if as_json:
        print(
            json.dumps(
                {
                    "referral_id": str(rid),
                    "steps": [s.as_json() for s in steps],
                    "verified": None if not verify else not breaks,
                    "breaks": [b.__dict__ for b in breaks],
                },
                indent=2,
            )
        )
    else:
        render.journey(console, rid, steps, breaks if verify else None)
    if breaks:
        sys.exit(1)


async def _journey(
    url: str, rid: UUID, verify: bool, home: Path
) -> tuple[list[journey.Step], list[journey.ChainBreak]]:
    from eventstore.anchor import AnchorPaths

    async with await _connect(url) as conn:
        steps = await journey.timeline(conn, rid)
        breaks = await journey.verify(conn, rid, AnchorPaths.under(home)) if verify else []
        return steps, breaks


# --- operations (DESIGN §5): replay, republish, dead letters, status -------------------

dead_letters_app = typer.Typer(
    help="Poison events kept in PostgreSQL; `retry ID... | --all | --reason TEXT` re-drives.",
    invoke_without_command=True,
)
app.add_typer(dead_letters_app, name="dead-letters")


def _topics(settings: Settings) -> Any:
    from bus.topics import Topics

    return Topics(prefix=settings.topic_prefix)


@app.command()
def replay(
    view: Annotated[
        str | None, typer.Argument(help="organisation id (or view_<org> schema)")
    ] = None,
    all_views: Annotated[bool, typer.Option("--all", help="rebuild every partner's view")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="swap in a rebuild even if it differs from the live")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rebuild a view (or all) from its topic; swap it in only if it equals the live view.

    A rebuild that differs is dropped and the live view kept (exit 1, naming the view and
    how many events and rows differ), unless --force.
    """
    from referralnet.ops import render as ops_render
    from referralnet.ops.progress import event_progress
    from referralnet.ops.replay import (
        LogBehindView,
        UnknownView,
        ViewDiffers,
        replay_view,
        resolve,
        view_orgs,
    )

    if (view is None) == (not all_views):
        raise UsageProblem("name one VIEW or give --all")
    settings = _settings()
    bootstrap = endpoints.bootstrap_servers(settings)
    topics = _topics(settings)
    results = []
    refused: list[ViewDiffers] = []
    with endpoints.database_url(settings) as url:

        async def orgs() -> list[str]:
            async with await _connect(url) as conn:
                return await view_orgs(conn) if all_views else [await resolve(conn, view or "")]

        try:
            targets = asyncio.run(orgs())
        except UnknownView as exc:
            raise UsageProblem(str(exc)) from None
        try:
            with event_progress(console, disable=as_json) as progress:
                for org in targets:
                    task = progress.add_task(f"replay {org}", total=None)
                    try:
                        results.append(
                            asyncio.run(
                                replay_view(
                                    url,
                                    bootstrap,
                                    topics,
                                    org,
                                    lambda done, total, t=task: progress.update(  # type: ignore[misc]
                                        t, completed=done, total=total
                                    ),
                                    force=force,
                                )
                            )
                        )
                    except ViewDiffers as exc:
                        refused.append(exc)
        except KeyboardInterrupt:
            console.print("interrupted: the live view is untouched, the half-built copy dropped")
            sys.exit(130)
        except LogBehindView as exc:
            console.print(f"referralnet: {exc}", style="red", highlight=False, soft_wrap=True)
            sys.exit(1)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "view": r.schema,
                        "events": r.events,
                        "events_per_second": round(r.events_per_second, 1),
                        "applied_at_swap": r.applied_at_swap,
                        "checksum": r.checksum,
                        "live_checksum": r.live_checksum,
                        "matches": r.matches,
                        "swapped": True,
                    }
                    for r in results
                ]
                + [
                    {
                        "view": e.schema,
                        "matches": False,
                        "swapped": False,
                        "rows_only_live": {t: n[0] for t, n in e.rows.items()},
                        "rows_only_rebuilt": {t: n[1] for t, n in e.rows.items()},
                    }
                    for e in refused
                ],
                indent=2,
            )
        )
    elif results:
        ops_render.replays(console, results)
    for e in refused:
        if as_json:
            print(f"referralnet: {e}", file=sys.stderr)
        else:
            console.print(f"referralnet: {e}", style="red", highlight=False)
    if refused:
        sys.exit(1)


@app.command()
def republish(
    since: Annotated[
        str | None, typer.Option(help="only events recorded from this ISO date-time on")
    ] = None,
) -> None:
    """Refill referral-events from the stores (after the broker lost its log, or any time).

    Pauses the outbox relays while it works; refuses, changing nothing, when the broker
    does not answer.
    """
    from referralnet.ops import render as ops_render
    from referralnet.ops.progress import event_progress
    from referralnet.ops.republish import RepublishFailed, RepublishRefused
    from referralnet.ops.republish import republish as refill

    start = _parse_time(since, "since")
    settings = _settings()
    bootstrap = endpoints.bootstrap_servers(settings)
    with endpoints.database_url(settings) as url:
        try:
            with event_progress(console) as progress:
                tasks: list[Any] = []  # the bar appears once there is something to count

                def show(done: int, total: int) -> None:
                    if not tasks:
                        tasks.append(progress.add_task("republish", total=None))
                    progress.update(tasks[0], completed=done, total=total)

                result = asyncio.run(
                    refill(url, bootstrap, _topics(settings), start, show, home=settings.home)
                )
        except (RepublishRefused, RepublishFailed) as exc:
            console.print(f"referralnet: {exc}", style="red", highlight=False, soft_wrap=True)
            sys.exit(1)
    ops_render.republished(console, result)
    if result.refused:
        sys.exit(1)  # tampered events were refused: the operator must look (verify --all)


@dead_letters_app.callback()
def dead_letters_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="also those already re-driven by `retry`")
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="only letters whose reason contains TEXT")
    ] = None,
) -> None:
    """List dead letters (from PostgreSQL, every consumer): id, reason, source, consumer, type."""
    if ctx.invoked_subcommand is not None:
        return
    from referralnet.ops import render as ops_render
    from referralnet.ops.dead_letters import list_dead_letters

    with endpoints.database_url(_settings()) as url:
        letters = asyncio.run(list_dead_letters(url, include_retried=show_all, reason=reason))
    if as_json:
        print(json.dumps([d.as_json() for d in letters], indent=2))
    else:
        ops_render.dead_letter_table(console, letters)


@dead_letters_app.command("retry")
def dead_letters_retry(
    idents: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="SCHEMA:N, as listed")
    ] = None,
    all_letters: Annotated[bool, typer.Option("--all", help="every pending letter")] = False,
    reason: Annotated[
        str | None, typer.Option(help="every pending letter whose reason contains TEXT")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-drive dead letters to their source topics, each at most once (idempotent)."""
    from referralnet.ops import render as ops_render
    from referralnet.ops.dead_letters import NoSuchDeadLetter, RetryRefused, Selection, retry
    from referralnet.ops.progress import event_progress

    chosen = sum([bool(idents), all_letters, reason is not None])
    if chosen != 1:
        raise UsageProblem("name dead-letter IDs, or give --all, or --reason TEXT (one of them)")
    if reason is not None and not reason.strip():
        raise UsageProblem("--reason: give some text to match")
    selection = Selection(ids=tuple(idents or ()), reason=reason)
    settings = _settings()
    bootstrap = endpoints.bootstrap_servers(settings)
    with endpoints.database_url(settings) as url:
        try:
            with event_progress(console, disable=as_json) as progress:
                task = progress.add_task("retry", total=None)
                result = asyncio.run(
                    retry(
                        url,
                        bootstrap,
                        selection,
                        lambda done, total: progress.update(task, completed=done, total=total),
                    )
                )
        except NoSuchDeadLetter as exc:
            raise UsageProblem(str(exc)) from None
        except RetryRefused as exc:
            console.print(f"referralnet: {exc}", style="red", highlight=False)
            sys.exit(1)
    if as_json:
        print(
            json.dumps(
                {
                    "retried": [d.as_json() for d in result.retried],
                    "already_retried": [d.as_json() for d in result.already],
                    "seconds": round(result.seconds, 3),
                },
                indent=2,
            )
        )
    else:
        ops_render.retried(console, result)


@dead_letters_app.command("discard")
def dead_letters_discard(
    idents: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="SCHEMA:N, as listed")
    ] = None,
    all_letters: Annotated[bool, typer.Option("--all", help="every pending letter")] = False,
    reason: Annotated[
        str | None, typer.Option(help="every pending letter whose reason contains TEXT")
    ] = None,
) -> None:
    """Mark dead letters as decided without re-driving them (kept, listed with --all)."""
    from referralnet.ops import render as ops_render
    from referralnet.ops.dead_letters import NoSuchDeadLetter, Selection, discard

    if sum([bool(idents), all_letters, reason is not None]) != 1:
        raise UsageProblem("name dead-letter IDs, or give --all, or --reason TEXT (one of them)")
    with endpoints.database_url(_settings()) as url:
        try:
            result = asyncio.run(discard(url, Selection(ids=tuple(idents or ()), reason=reason)))
        except NoSuchDeadLetter as exc:
            raise UsageProblem(str(exc)) from None
    ops_render.retried(console, result)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    max_lag: Annotated[int, typer.Option(min=0, help="lag that counts as unhealthy")] = 1000,
    stuck_seconds: Annotated[
        float, typer.Option(min=0, help="seconds without progress that count as stuck")
    ] = 60.0,
    max_restarts: Annotated[
        int, typer.Option(min=0, help="restarts of one worker per minute that count as a loop")
    ] = 3,
    recheck_seconds: Annotated[
        float, typer.Option(min=0, help="read positions again after this long (0: once)")
    ] = 2.0,
    held_seconds: Annotated[
        float,
        typer.Option(min=0, help="seconds an event may wait behind a missing stream version"),
    ] = 30.0,
) -> None:
    """Lag, outbox backlog, dead letters, held events, lost topics, stuck consumers, crash
    loops; exit 1 (each problem with its reason) if unhealthy."""
    from referralnet.ops import render as ops_render
    from referralnet.ops.status import Thresholds, collect

    settings = _settings()
    bootstrap = endpoints.bootstrap_servers(settings)
    limits = Thresholds(
        max_lag,
        stuck_seconds,
        max_restarts=max_restarts,
        recheck_seconds=recheck_seconds,
        held_seconds=held_seconds,
    )
    with endpoints.database_url(settings) as url:
        result = asyncio.run(collect(url, bootstrap, _topics(settings), limits, settings.home))
    if as_json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        ops_render.status(console, result)
    if not result.healthy:
        sys.exit(1)


token_app = typer.Typer(help="Organisation tokens: rotate (with a grace period), revoke.")
app.add_typer(token_app, name="token")


@token_app.command("rotate")
def token_rotate(
    org: Annotated[str, typer.Argument(help="organisation id")],
    grace: Annotated[
        int, typer.Option("--grace", min=0, help="seconds the old token stays valid")
    ] = 0,
    expires_in: Annotated[
        int | None, typer.Option("--expires-in", min=1, help="seconds the new token is valid")
    ] = None,
) -> None:
    """Issue ORG a new token and print it once; the old one works for --grace seconds."""
    from datetime import timedelta

    from web import tokens

    async def run(url: str) -> str:
        async with await _connect(url) as conn:
            await tokens.create(conn)
            return await tokens.rotate(
                conn,
                org,
                grace=timedelta(seconds=grace),
                expires_in=timedelta(seconds=expires_in) if expires_in else None,
            )

    with endpoints.database_url(_settings()) as url:
        try:
            token = asyncio.run(run(url))
        except tokens.UnknownOrganisation:
            raise UsageProblem(f"no organisation {org!r} is registered") from None
    print(token)


@token_app.command("revoke")
def token_revoke(org: Annotated[str, typer.Argument(help="organisation id")]) -> None:
    """Stop every token of ORG at once (every API process within seconds)."""
    from web import tokens

    async def run(url: str) -> None:
        async with await _connect(url) as conn:
            await tokens.create(conn)
            await tokens.revoke(conn, org)

    with endpoints.database_url(_settings()) as url:
        try:
            asyncio.run(run(url))
        except tokens.UnknownOrganisation:
            raise UsageProblem(f"no organisation {org!r} is registered") from None
    print(f"revoked every token of {org}")


@app.command("verify")
def verify_command(
    all_stores: Annotated[
        bool, typer.Option("--all", help="check every stream of every store")
    ] = False,
    take_checkpoint: Annotated[
        bool,
        typer.Option("--checkpoint", help="append a signed checkpoint of the stores' chain heads"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Detect tampering with the stores (chain + signed checkpoints); exit 1 on any finding."""
    from psycopg.errors import UndefinedTable

    from referralnet.ops.verify_cli import run_verify

    if not (all_stores or take_checkpoint):
        raise UsageProblem("give --all (verify), --checkpoint (take one), or both")
    settings = _settings()
    with endpoints.database_url(settings) as url:
        try:
            code = run_verify(console, url, settings.home, all_stores, take_checkpoint, as_json)
        except UndefinedTable as exc:
            problem = exc.diag.message_primary
            raise UsageProblem(f"no event stores in this database ({problem})") from None
    if code:
        sys.exit(code)


# --- the person's rights (issue 16): erase, access-log, keys ----------------------------


@app.command("erase")
def erase_command(
    referral_id: Annotated[str, typer.Argument(help="a referral of the person (UUID)")],
    reason: Annotated[str, typer.Option(help="UK GDPR Art. 17(1) ground, e.g. objection")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Erase the person behind a referral: shred their key, record person-erased."""
    from referralnet.ops.erase import erase_referral_person
    from schemas.events import ErasureReason
    from services.refusal import NotFound

    try:
        rid = UUID(referral_id)
    except ValueError:
        raise UsageProblem(f"not a referral id (UUID): {referral_id!r}") from None
    try:
        ground = ErasureReason(reason)
    except ValueError:
        known = ", ".join(r.value for r in ErasureReason)
        raise UsageProblem(f"--reason: {reason!r} is not one of {known}") from None
    settings = _settings()
    with endpoints.database_url(settings) as url:
        try:
            done = asyncio.run(erase_referral_person(url, settings.home, rid, ground))
        except NotFound as exc:
            raise UsageProblem(exc.reason) from None
    if as_json:
        body = {
            "referral_id": str(rid),
            "erased_at": done.erased_at.isoformat(),
            "already": not done.now,
            "referrals": [str(r) for r in done.referrals],
        }
        print(json.dumps(body, indent=2))
        return
    when = done.erased_at.isoformat(timespec="seconds")
    if done.now:
        n = len(done.referrals)
        console.print(f"erased at {when}: person-erased recorded on {n} referrals")
    else:
        console.print(f"already erased at {when}; nothing new recorded")


@app.command("access-log")
def access_log_command(
    referral: Annotated[str | None, typer.Option(help="only reads of this referral")] = None,
    reader: Annotated[str | None, typer.Option(help="only reads by this organisation")] = None,
    since: Annotated[str | None, typer.Option(help="from this instant (ISO 8601)")] = None,
    until: Annotated[str | None, typer.Option(help="before this instant (ISO 8601)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who read whose personal details: when, which referral, which fields, why."""
    from referralnet.ops.access_log import access_log, show

    try:
        rid = UUID(referral) if referral is not None else None
    except ValueError:
        raise UsageProblem(f"--referral: not a referral id (UUID): {referral!r}") from None
    settings = _settings()
    zone = zone_named(settings.timezone)
    bounds: dict[str, datetime | None] = {}
    for name, value in (("since", since), ("until", until)):
        try:
            bounds[name] = parse_instant(value, zone) if value is not None else None
        except NotADate as exc:
            raise UsageProblem(f"--{name}: {exc}") from None
    with endpoints.database_url(settings) as url:
        found = asyncio.run(access_log(url, referral_id=rid, reader=reader, limit=limit, **bounds))
    show(console, found, as_json)


keys_app = typer.Typer(help="Master keys and per-person keys: `status`, `rotate`, `migrate`.")
app.add_typer(keys_app, name="keys")


@keys_app.command("status")
def keys_status() -> None:
    """Live person keys per master key, erased people, details not yet migrated."""
    from referralnet.ops import keys

    with endpoints.database_url(_settings()) as url:
        use, erased, legacy = asyncio.run(keys.status(url))
    for master, count in use.items():
        console.print(f"master key {master}: {count} person keys")
    console.print(f"erased people: {erased}; details under the old alliance key: {legacy}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every person key under a new master key (data is not re-encrypted)."""
    from referralnet.ops import keys
    from services.privacy.master_keys import MasterKeyError

    settings = _settings()
    with endpoints.database_url(settings) as url:
        try:
            done = asyncio.run(keys.rotate(url, settings.home))
        except MasterKeyError as exc:
            raise UsageProblem(str(exc)) from None
    console.print(f"current master key {done.current}: {done.rewrapped} person keys re-wrapped")
    if done.retired:
        where = (
            "removed from the key file"
            if done.from_file
            else ("no longer used: remove from REFERRALNET_MASTER_KEYS")
        )
        console.print(f"retired {', '.join(done.retired)} ({where})")


@keys_app.command("migrate")
def keys_migrate() -> None:
    """Re-encrypt details still under the old alliance key with per-person keys."""
    from referralnet.ops import keys

    settings = _settings()
    with endpoints.database_url(settings) as url:
        done = asyncio.run(keys.migrate(url, settings.home))
    console.print(f"{done} details rows re-encrypted under their person's key")


@app.command("migrate")
def migrate_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the pending steps, change nothing")
    ] = False,
) -> None:
    """Apply pending schema migrations to every store, tracking and view schema."""
    from psycopg import OperationalError

    from referralnet.ops.migrate import MigrationReport, run_migrations

    async def run(url: str) -> MigrationReport:
        async with await _connect(url) as conn:
            return await run_migrations(conn, dry_run)

    settings = _settings()
    with endpoints.database_url(settings) as url:
        try:
            report = asyncio.run(run(url))
        except OperationalError as exc:  # nothing was changed: one line, exit 1
            problem = str(exc).splitlines()[0]
            console.print(f"referralnet: migrate: {problem}", style="red", soft_wrap=True)
            sys.exit(1)
    for line in report.lines():
        print(line)
    if report.changed:  # a released step was edited: exit 1, as a failed check
        sys.exit(1)


def main() -> None:
    """Console-script entry: one-line errors, exit 2 for bad input."""
    configure_logging("warning")
    try:
        _settings()  # every variable checked before any command runs: one line, exit 2
        app(standalone_mode=False)
    except (click.exceptions.NoArgsIsHelpError, typer_click.NoArgsIsHelpError):
        sys.exit(0)
    # typer parses options with its own copy of click: a bad option value or a missing
    # argument is its UsageError, our own refusals (UsageProblem) click's.
    except (click.UsageError, typer_click.UsageError) as exc:
        console.print(  # soft_wrap: one problem, one line, however long
            f"referralnet: error: {exc.format_message()}",
            style="red",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except (EmbeddedStartError, endpoints.NoBroker) as exc:
        console.print(f"referralnet: {exc}", style="red", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
