"""Rich tables for the operations commands: replay, republish, dead letters, status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.console import Console
from rich.table import Table

from referralnet.ops.dead_letters import DeadLetter, RetryResult
from referralnet.ops.replay import ReplayResult
from referralnet.ops.republish import RepublishResult
from referralnet.ops.status import SystemStatus


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def replays(console: Console, results: Sequence[ReplayResult]) -> None:
    table = Table(title="Views rebuilt from the log and swapped in")
    for column in ("view", "events", "events/s", "at swap", "checksum", "live before swap"):
        table.add_column(column, justify="right" if column.startswith("events") else "left")
    for r in results:
        table.add_row(
            r.schema,
            f"{r.events:,}",
            f"{r.events_per_second:,.0f}",
            str(r.applied_at_swap),
            r.checksum,
            "[green]equal[/]" if r.matches else f"[red]differed: {r.live_checksum}[/]",
        )
    console.print(table)
    total = sum(r.events for r in results)
    seconds = sum(r.seconds for r in results)
    console.print(
        f"{len(results)} view(s), {total:,} events in {seconds:.2f}s "
        f"({total / seconds if seconds else 0:,.0f} events/s); replay sends nothing: "
        "views have no side effects"
    )


def republished(console: Console, r: RepublishResult) -> None:
    if r.topics_created or r.topics_recreated:
        console.print(
            f"topics created: {', '.join(r.topics_created) or '-'}; "
            f"recreated with the right partition count: {', '.join(r.topics_recreated) or '-'}"
        )
    console.print(
        f"{r.in_stores:,} events in the stores, {r.already_present:,} still on the bus, "
        f"{r.published:,} republished in {r.seconds:.2f}s"
    )
    if r.consumers_reset:
        what = "and partner topics refilled by the distributor" if r.partner_topics_refilled else ""
        console.print(f"positions reset to 0 {what}: {', '.join(r.consumers_reset)}")
    elif not r.published:
        console.print("nothing was missing; no consumer was reset")
    for line in r.refused:  # tampered events: never on the bus (see `referralnet verify --all`)
        console.print(line, style="red", highlight=False, soft_wrap=True)


def dead_letter_table(console: Console, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        console.print("no dead letters")
        return
    table = Table(title=f"{len(letters)} dead letter(s)")
    columns = ("id", "parked", "consumer", "source", "type", "reason", "retried to / discarded")
    for column in columns:
        # The id is what `retry` takes: never folded, so it can be copied whole.
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for d in letters:
        table.add_row(
            d.id,
            _when(d.parked_at),
            d.consumer,
            f"{d.source_topic}[{d.source_partition}]@{d.source_offset}",
            d.type or "?",
            d.reason,
            d.retried_to or (f"discarded {_when(d.discarded_at)}" if d.discarded_at else ""),
        )
    console.print(table)


def retried(console: Console, r: RetryResult, shown: int = 20) -> None:
    """What ``dead-letters retry`` or ``discard`` did, letter by letter (the first few)."""
    for d in r.retried[:shown]:
        what = f"re-drove dead letter {d.id}" if d.retried_to else f"discarded dead letter {d.id}"
        where = f" to {d.retried_to}" if d.retried_to else ""
        console.print(f"{what} ({d.type or 'unparseable'}, {d.consumer}){where}", highlight=False)
    if len(r.retried) > shown:
        console.print(f"... and {len(r.retried) - shown} more (see `dead-letters --all`)")
    for d in r.already[:shown]:
        before = (
            f"re-driven to {d.retried_to} at {_when(d.retried_at)}"
            if d.retried_at
            else f"discarded at {_when(d.discarded_at)}"
        )
        console.print(f"dead letter {d.id} was already {before}; left alone", highlight=False)
    console.print(
        f"{len(r.retried)} done, {len(r.already)} already done before (nothing sent for "
        f"those), in {r.seconds:.2f}s ({r.per_second:,.0f} letters/s)",
        highlight=False,
    )


def status(console: Console, s: SystemStatus) -> None:
    console.print(
        f"database: {'reachable' if not s.database_error else '[red]' + s.database_error + '[/]'}"
        f"   broker: {'reachable' if not s.broker_error else '[red]' + s.broker_error + '[/]'}"
    )
    stores = Table(title="Service stores (relay backlog)")
    for column in ("service", "events", "outbox", "oldest unpublished", "last event"):
        stores.add_column(column)
    for st in s.stores:
        age = st.oldest_unpublished_seconds
        stores.add_row(
            st.service,
            f"{st.events:,}",
            str(st.outbox_backlog),
            f"{age:.1f}s" if age is not None else "-",
            _when(st.last_event_at),
        )
    console.print(stores)
    consumers = Table(title="Consumers")
    for column in ("consumer", "kind", "topic", "lag", "position", "last applied", "dead letters"):
        consumers.add_column(column)
    for c in s.consumers:
        consumers.add_row(
            c.consumer,
            c.kind,
            c.topic,
            str(c.lag),
            f"{c.position:,}/{c.highwater:,}",
            _when(c.last_applied_at),
            str(c.dead_letters),
        )
    console.print(consumers)
    console.print(f"pending dead letters (kept in PostgreSQL): {s.dead_letters}")
    if s.restarts:
        console.print(
            "worker restarts in the last minute: "
            + ", ".join(f"{w} {n}" for w, n in sorted(s.restarts.items()))
        )
    if s.healthy:
        console.print("[green]healthy[/]")
    for p in s.problems:
        console.print(f"[red]unhealthy[/]: {p.message}", highlight=False, soft_wrap=True)
