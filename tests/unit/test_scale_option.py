"""``referralnet up --scale``: parsed into instances per worker kind, or refused in one line."""

from __future__ import annotations

import sys

import pytest

from referralnet import cli
from referralnet.cli import main
from referralnet.services_table import WORKERS
from referralnet.supervisor import BadScale, instance_names, parse_scale


def test_scale_names_instances_per_kind() -> None:
    assert parse_scale("") == {}
    assert parse_scale("views=2, routing=3") == {"views": 2, "routing": 3}
    names = instance_names(WORKERS, {"views": 2, "routing": 3})
    assert [n for n, k in names if k == "views"] == ["views", "views-2"]
    assert [n for n, k in names if k == "routing"] == ["routing", "routing-2", "routing-3"]
    assert [n for n, k in names if k == "api"] == ["api"]


@pytest.mark.parametrize(
    "text", ["viewz=2", "views", "views=0", "views=17", "views=two", "views=2,views=3"]
)
def test_a_bad_scale_is_refused(text: str) -> None:
    with pytest.raises(BadScale):
        parse_scale(text)


def test_up_with_a_bad_scale_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["referralnet", "up", "--scale", "views=0"])
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)
    with pytest.raises(SystemExit) as exited:
        main()
    out = capsys.readouterr()
    printed = (out.out + out.err).strip().splitlines()
    assert exited.value.code == 2
    assert len(printed) == 1 and "--scale views" in printed[0], printed
