"""What ``referralnet verify`` prints: one line per finding, then what was covered."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from rich.console import Console

from eventstore.anchor import AnchorError, AnchorPaths
from eventstore.checkpoint import CheckpointResult
from referralnet.ops.verify import Verification, checkpoint, verify_stores


async def _run(
    url: str, paths: AnchorPaths, verify: bool, take_checkpoint: bool
) -> tuple[CheckpointResult | None, Verification | None, str | None]:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        taken, problem = None, None
        if take_checkpoint:
            try:
                taken = await checkpoint(conn, paths)
            except AnchorError as exc:
                problem = f"anchor: cannot checkpoint: {exc}"
        checked = await verify_stores(conn, paths) if verify else None
        return taken, checked, problem


def run_verify(
    console: Console, url: str, home: Path, verify: bool, take_checkpoint: bool, as_json: bool
) -> int:
    """Checkpoint and/or verify; print; return the exit code (0 clean, 1 tampering)."""
    paths = AnchorPaths.under(home)
    taken, checked, problem = asyncio.run(_run(url, paths, verify, take_checkpoint))
    failed = bool(problem or (taken and taken.refused) or (checked and not checked.clean))
    if as_json:
        body: dict[str, Any] = {"clean": not failed}
        if problem:
            body["problem"] = problem
        if taken:
            body["checkpoint"] = {
                "taken_at": taken.taken_at,
                "written": taken.written,
                "added": taken.added,
                "refused": [{"store": s, "stream_id": str(i)} for s, i in taken.refused],
            }
        if checked:
            body["verification"] = checked.as_json()
        print(json.dumps(body, indent=2))
        return 1 if failed else 0
    if problem:
        console.print(problem, style="red", highlight=False, soft_wrap=True)
    if taken:
        _print_checkpoint(console, taken, paths)
    if checked:
        _print_verification(console, checked)
    return 1 if failed else 0


def _print_checkpoint(console: Console, taken: CheckpointResult, paths: AnchorPaths) -> None:
    for store, stream_id in taken.refused:
        console.print(
            f"{store} {stream_id}: refused by the checkpoint: it no longer extends what the "
            "anchor holds (tampered)",
            style="red",
            highlight=False,
            soft_wrap=True,
        )
    added = ", ".join(f"{s} {n}" for s, n in taken.added.items())
    if taken.written:
        console.print(
            f"checkpoint {taken.taken_at} signed into {paths.anchor}: new events {added}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print("checkpoint: nothing new since the last one")


def _print_verification(console: Console, checked: Verification) -> None:
    for line in checked.lines():
        console.print(line, style="red", highlight=False, soft_wrap=True)
    scope = (
        f"{checked.events} events in {checked.streams} streams; {checked.checkpointed_events} "
        f"covered by {checked.checkpoints} checkpoints (last {checked.last_checkpoint}), "
        f"{checked.after_checkpoint} after the last one (chain only)"
    )
    if checked.clean:
        console.print(f"[green]verified[/]: {scope}", highlight=False, soft_wrap=True)
    else:
        findings = len(checked.findings) + (1 if checked.anchor_problem else 0)
        console.print(f"[red]TAMPERED[/]: {findings} findings; {scope}", soft_wrap=True)
    if not checked.checkpoints and not checked.anchor_problem:
        console.print(
            "no checkpoint yet: only the hash chains were checked "
            "(`referralnet verify --checkpoint` takes one)",
            highlight=False,
            soft_wrap=True,
        )
