"""Bad command-line input is one line and exit 2, whichever parser refuses it.

typer parses options with its own copy of click, whose exceptions are not click's:
``--grace -1`` or a missing argument used to end in a 40-line traceback and exit 1.
"""

from __future__ import annotations

import sys

import pytest

from referralnet import cli
from referralnet.cli import main

BAD = [
    ["token", "rotate", "some-org", "--grace", "-1"],
    ["token", "revoke"],
    ["token", "rotate", "some-org", "--expires-in", "0"],
    ["infra", "plan", "--replication-factor", "0"],
    ["report", "--from", "not-a-date"],
    ["replay"],
    ["verify"],
    ["no-such-command"],
    ["status", "--no-such-option"],
]


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(a))
def test_bad_arguments_are_one_line_and_exit_2(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["referralnet", *args])
    # main() points structlog at the stderr of the moment, which capsys closes after
    # this test: later tests' logging would then fail. Logging is not what is tested here.
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)
    with pytest.raises(SystemExit) as exited:
        main()
    out = capsys.readouterr()
    printed = (out.out + out.err).strip().splitlines()
    assert exited.value.code == 2, printed
    assert len(printed) == 1 and "Traceback" not in printed[0], printed
