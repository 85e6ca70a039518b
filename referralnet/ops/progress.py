"""The rich progress bar the long-running operations share: done / total and events/s."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class EventsPerSecond(ProgressColumn):
    """Average rate since the task started (rich's own speed needs a longer window)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} events/s", style="progress.data.speed")


def event_progress(console: Console, disable: bool = False) -> Progress:
    """A progress display for counting events (``disable`` for machine-readable output)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        EventsPerSecond(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=disable,
    )
