"""Helpers for the deployment tests: the console script run in-process."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass

from referralnet.cli import main


@dataclass(frozen=True)
class CliResult:
    """What a user of the console script sees: exit code and output."""

    exit_code: int
    output: str


def run_cli(env: dict[str, str], *args: str) -> CliResult:
    """Run ``referralnet ARGS`` through the console-script entry point with ``env`` set.

    ``main`` (not typer's runner) is what maps bad input to one line and exit 2.
    """
    out = io.StringIO()
    saved_env, saved_argv = dict(os.environ), sys.argv
    os.environ.update(env)
    sys.argv = ["referralnet", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return CliResult(code, out.getvalue())
