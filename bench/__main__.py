"""``python -m bench [BENCHMARK ...]``: measure, then write docs/benchmarks.md and .json.

Benchmarks: append, command, peer, e2e (with load safety and memory), replay (with
scaling). With none named, all run. ``--quick`` shrinks every size to prove the
benchmarks work in about two minutes; ``make bench`` runs the defaults.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench import append, command, e2e, peer, replay, report
from bench.common import Section, bench_stack, console, machine
from bench.workload import check_against_schemas

ALL = ("append", "command", "peer", "e2e", "replay")


def _numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("benchmarks", nargs="*", help=f"any of {', '.join(ALL)} (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes: prove it works")
    p.add_argument("--events", type=int, default=200_000, help="append: events per round")
    p.add_argument("--batch", type=int, default=10_000, help="append: events per transaction")
    p.add_argument("--repeat", type=int, default=3, help="append: rounds (median)")
    p.add_argument("--clients", type=int, default=16, help="command: concurrent clients")
    p.add_argument("--seconds", type=float, default=10.0, help="command/e2e: seconds per run")
    p.add_argument("--streams", type=int, default=5000, help="peer: streams of 8 events")
    p.add_argument("--loads", type=_numbers, default=[50.0, 100.0, 200.0], help="e2e: per s")
    p.add_argument("--seed-events", type=int, default=1_000_000, help="e2e/memory: stored history")
    p.add_argument("--max-in-flight", type=int, default=64, help="e2e: API admission bound")
    p.add_argument("--replay-events", type=int, default=1_000_000, help="replay: stored events")
    p.add_argument(
        "--scaling",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[10_000, 100_000],
        help="replay: sizes for the scaling section (the replay size is added)",
    )
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--note", action="append", default=[], help="a note for the report")
    args = p.parse_args(argv)
    unknown = set(args.benchmarks) - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    if args.quick:
        args.events, args.repeat, args.seconds, args.streams = 12_000, 1, 3.0, 300
        args.loads, args.seed_events = [20.0, 40.0], 6_000
        args.replay_events, args.scaling = 6_000, [3_000]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    chosen = args.benchmarks or list(ALL)
    check_against_schemas()
    run: dict[str, Any] = {"command": "python -m bench " + shlex.join(argv), "machine": machine()}
    started = time.monotonic()
    sections: list[Section] = []
    with bench_stack() as stack:
        run["postgres"] = stack.server_version
        for name in chosen:
            console.rule(name)
            if name == "append":
                sections.append(append.run(stack, args.events, args.batch, args.repeat, 6_000))
            elif name == "command":
                sections.append(command.run(stack, args.clients, min(args.seconds, 10.0)))
            elif name == "peer":
                sections.append(peer.run(stack, args.streams))
            elif name == "e2e":
                sections += e2e.run(
                    stack, args.loads, args.seconds, args.seed_events, args.max_in_flight
                )
            elif name == "replay":
                sections += replay.run(stack, args.replay_events, args.scaling)
    notes = list(args.note)
    if args.quick:
        notes.append("`--quick`: sizes shrunk to prove the benchmarks run; not for citing.")
    run["seconds"] = round(time.monotonic() - started, 1)
    report.write(args.out, sections, run, notes)
    console.print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {run['seconds']}s")
    for s in sections:
        for row in s.rows:
            if row.met is False:
                console.print(f"[yellow]target missed[/]: {row.benchmark}: {row.metric}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
