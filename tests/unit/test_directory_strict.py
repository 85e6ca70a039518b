"""Strict directory files: YAML 1.1 traps and cross-field rules refuse the whole file,
one line per problem, each with its line number."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from directory.loader import DirectoryFileError, parse

HEAD = """\
alliance: Test alliance
organisations:
  - {id: gp-a, name: GP A, kind: gp-practice, areas: [north]}
  - id: lw-a
    name: Link workers A
    kind: link-worker-service
    areas: [north]
    link_worker_service:
      needs: [social-connection, stress]
      link_workers: 2
  - {id: vg-a, name: Walkers, kind: voluntary-group, areas: [north]}
  - {id: icb-a, name: ICB, kind: commissioner, areas: [north]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(DirectoryFileError) as refused:
        parse(textwrap.dedent(text), "f.yaml")
    lines = str(refused.value).splitlines()
    assert all(line.startswith("f.yaml: line ") for line in lines), lines
    return lines


def activity(extra: str) -> str:
    return (
        HEAD
        + "activities:\n  - id: walk-a\n    name: Walk\n    provider: vg-a\n"
        + "    kind: walking-group\n    needs: [stress]\n    area: north\n"
        + textwrap.indent(textwrap.dedent(extra), "    ")
    )


def test_an_unquoted_time_is_refused_with_its_line_and_the_fix() -> None:
    text = activity('schedule: {byday: [TU], opens_at: 10:00, closes_at: "11:30"}\n')
    (problem,) = problems(text)
    assert problem.startswith("f.yaml: line 20, ")
    assert "activities.0.schedule.opens_at" in problem and '"10:00"' in problem


def test_quoted_times_load() -> None:
    parsed = parse(activity('schedule: {opens_at: "10:00", closes_at: "11:30"}\n'))
    schedule = parsed.activities[0].schedule
    assert schedule is not None and str(schedule.opens_at) == "10:00:00"


def test_a_time_given_as_a_number_in_json_is_refused() -> None:
    (problem,) = problems(activity('schedule: {opens_at: 600, closes_at: "11:30"}\n'))
    assert 'quoted "HH:MM"' in problem


def test_a_second_organisations_block_is_refused() -> None:
    text = HEAD + "organisations:\n  - {id: gp-b, name: GP B, kind: gp-practice, areas: [north]}\n"
    (problem,) = problems(text)
    assert problem.startswith("f.yaml: line 13, organisations: repeated key (first at line 2)")


def test_a_repeated_key_inside_an_activity_is_refused() -> None:
    (problem,) = problems(activity("area: south\n"))
    assert problem.startswith("f.yaml: line 20, area: repeated key (first at line 19)")


@pytest.mark.parametrize(
    ("extra", "line", "says"),
    [
        ('schedule: {opens_at: "12:00", closes_at: "11:00"}\n', 20, "not before closes_at"),
        ('schedule: {opens_at: "12:00"}\n', 20, "both opens_at and closes_at"),
        ('schedule: {opens_at: "25:00", closes_at: "26:00"}\n', 20, 'quoted "HH:MM"'),
        ("schedule: {byday: [MO, MO]}\n", 20, "byday lists a day twice"),
    ],
)
def test_schedules_must_make_sense(extra: str, line: int, says: str) -> None:
    found = problems(activity(extra))
    assert any(p.startswith(f"f.yaml: line {line}, ") and says in p for p in found), found


def test_a_service_nobody_could_be_routed_to_is_refused() -> None:
    text = HEAD.replace(
        "      link_workers: 2\n", "      link_workers: 2\n      min_age: 70\n      max_age: 60\n"
    )
    (problem,) = problems(text)
    assert problem.startswith("f.yaml: line 9, organisations.1.link_worker_service: ")
    assert "nobody could ever be routed" in problem


@pytest.mark.parametrize(
    ("before", "after", "line", "says"),
    [
        ("provider: vg-a", "provider: vg-zz", 16, "unknown provider"),
        ("provider: vg-a", "provider: icb-a", 16, "is a commissioner"),
        ("area: north", "area: atlantis", 19, "not among the areas"),
        ("needs: [stress]", "needs: [stress, stress]", 18, "listed twice"),
    ],
)
def test_cross_references_must_resolve(before: str, after: str, line: int, says: str) -> None:
    found = problems(activity("").replace(before, after))
    assert any(p.startswith(f"f.yaml: line {line}, ") and says in p for p in found), found


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = activity("schedule: {opens_at: 10:00, closes_at: 09:00}\narea: south\n")
    found = problems(text)
    assert len(found) == 3, found  # two unquoted times and a repeated key
    assert [int(p.split("line ")[1].split(",")[0]) for p in found] == [20, 20, 21]


def test_the_cli_refuses_the_whole_file_with_one_line_per_problem(tmp_path: Path) -> None:
    bad = tmp_path / "alliance-with-a-very-long-file-name-so-lines-would-wrap.yaml"
    bad.write_text(activity("schedule: {opens_at: 10:00, closes_at: 09:00}\narea: south\n"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"  # never reached
    done = subprocess.run(
        [sys.executable, "-m", "referralnet.cli", "directory", "load", str(bad)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    out = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 2, out
    assert len(out) == 3 and all(str(bad) in line for line in out), out


@pytest.mark.parametrize(
    ("value", "kind"), [("NO", "bool"), ("0123", "int"), ("2026-01-01", "date")]
)
def test_text_yaml_reads_as_something_else_says_how_to_quote_it(value: str, kind: str) -> None:
    (problem,) = problems(activity("").replace("area: north", f"area: {value}"))
    assert problem.startswith("f.yaml: line 19, activities.0.area: ")
    assert f"unquoted {value} as {kind}" in problem and f'write "{value}"' in problem
