"""The directory file loader says where a file is wrong: line number and field path."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from directory.loader import DirectoryFileError, parse, read
from directory.model import OrgKind

GOOD = """\
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
      caseload_per_worker: 30
  - {id: vg-a, name: Walkers, kind: voluntary-group, areas: [north]}
activities:
  - {id: walk-a, name: Walk, provider: vg-a, kind: walking-group, needs: [stress], area: north}
"""


def problem(text: str) -> str:
    with pytest.raises(DirectoryFileError) as refused:
        parse(textwrap.dedent(text), "alliance.yaml")
    message = str(refused.value)
    assert message.startswith("alliance.yaml: "), message
    return message


def line_of(message: str) -> int:
    found = re.search(r"line (\d+)", message)
    assert found, message
    return int(found.group(1))


def test_a_good_file_parses() -> None:
    parsed = parse(GOOD)
    assert [o.id for o in parsed.organisations] == ["gp-a", "lw-a", "vg-a"]
    lw = parsed.organisations[1]
    assert lw.kind is OrgKind.LINK_WORKER_SERVICE
    assert lw.link_worker_service is not None and lw.link_worker_service.caseload_limit == 60
    assert parsed.activities[0].provider == "vg-a"


def test_the_demo_alliance_file_parses() -> None:
    demo = Path(__file__).parents[2] / "referralnet" / "data" / "demo-alliance.yaml"
    parsed = read(demo)
    assert len(parsed.organisations) >= 10
    assert len({o.kind for o in parsed.organisations}) >= 6


def test_a_link_worker_service_without_link_worker_service_names_its_line() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - {id: gp-a, name: GP, kind: gp-practice}
          - id: lw-a
            name: LW
            kind: link-worker-service
            areas: [north]
        """
    )
    assert "organisations.1" in message
    assert "link_worker_service" in message
    assert line_of(message) == 4  # where the second organisation starts


def test_link_worker_service_on_another_kind_is_refused() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - id: gp-a
            name: GP
            kind: gp-practice
            link_worker_service: {needs: [stress], link_workers: 1}
        """
    )
    assert "organisations.0" in message and "only a link-worker-service" in message
    assert line_of(message) == 3


def test_a_link_worker_service_must_list_its_areas() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - id: lw-a
            name: LW
            kind: link-worker-service
            link_worker_service: {needs: [stress], link_workers: 1}
        """
    )
    assert "organisations.0" in message and "areas" in message


def test_nested_field_errors_name_the_full_path_and_the_line_of_the_value() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - id: lw-a
            name: LW
            kind: link-worker-service
            areas: [north]
            link_worker_service:
              needs: [stress, astrology]
              link_workers: 0
        """
    )
    lines = message.splitlines()
    assert len(lines) == 2, message  # every problem, one per line
    needs = next(m for m in lines if "needs" in m)
    workers = next(m for m in lines if "link_workers" in m)
    assert "organisations.0.link_worker_service.needs.1" in needs
    assert line_of(needs) == 8
    assert "organisations.0.link_worker_service.link_workers" in workers
    assert line_of(workers) == 9
    assert "greater than or equal to 1" in workers


def test_an_unknown_kind_names_field_line_and_allowed_values() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - id: gp-a
            name: GP
            kind: wizard
        """
    )
    assert "organisations.0.kind" in message
    assert line_of(message) == 5
    assert "gp-practice" in message


def test_a_bad_id_names_its_line() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - {id: gp-a, name: GP, kind: gp-practice}
          - {id: Bad Id!, name: X, kind: pharmacy}
        """
    )
    assert "organisations.1.id" in message
    assert line_of(message) == 4


def test_duplicate_ids_are_refused_naming_the_id() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - {id: gp-a, name: GP, kind: gp-practice}
          - {id: gp-b, name: GP B, kind: gp-practice}
          - {id: gp-a, name: GP again, kind: gp-practice}
        """
    )
    assert "unique" in message and "gp-a" in message and "gp-b" not in message


def test_an_unknown_activity_provider_is_refused_naming_activity_and_provider() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - {id: gp-a, name: GP, kind: gp-practice}
        activities:
          - {id: walk, name: Walk, provider: vg-x, kind: walking-group, needs: [stress], area: n}
        """
    )
    assert "'walk'" in message and "unknown provider 'vg-x'" in message


@pytest.mark.parametrize(
    ("text", "line", "path"),
    [
        (
            """\
            alliance: A
            organisations:
              - {id: gp-a, name: GP, kind: gp-practice}
              - {id: gp-a, name: GP again, kind: gp-practice}
            """,
            4,
            "organisations.1.id",
        ),
        (
            """\
            alliance: A
            organisations:
              - {id: gp-a, name: GP, kind: gp-practice}
            activities:
              - {id: walk, name: Walk, provider: vg-x, kind: walk, needs: [stress], area: n}
            """,
            5,
            "activities.0.provider",
        ),
    ],
    ids=["duplicate-id", "unknown-provider"],
)
def test_cross_reference_errors_name_the_offending_line_and_path(
    text: str, line: int, path: str
) -> None:
    message = problem(text)
    assert path in message
    assert line_of(message) == line


def test_bad_yaml_names_line_and_column() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - {id: gp-a, name: GP
        """
    )
    assert "not valid YAML" in message
    assert "line 3, column 5" in message


def test_a_file_that_is_not_a_mapping_is_refused() -> None:
    assert "(top level)" in problem("- a\n- b\n")
    assert "(top level)" in problem("")


def test_missing_required_fields_are_named() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - {id: gp-a, kind: gp-practice}
        """
    )
    assert "organisations.0.name" in message and "Field required" in message
    assert line_of(message) == 3
    assert "organisations" in problem("alliance: A\n")


def test_unknown_fields_are_refused_with_their_path() -> None:
    message = problem(
        """\
        alliance: A
        organisations:
          - {id: gp-a, name: GP, kind: gp-practice}
          - id: vg-a
            name: VG
            kind: voluntary-group
            capacity: 12
        """
    )
    assert "organisations.1.capacity" in message
    assert line_of(message) == 7


def test_json_is_read_too() -> None:
    parsed = parse(
        '{"alliance": "A", "organisations": [{"id": "gp-a", "name": "GP", "kind": "police"}]}'
    )
    assert parsed.organisations[0].kind is OrgKind.POLICE


def test_reading_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFileError, match="cannot read"):
        read(tmp_path / "nope.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("alliance: A\norganisations: []\n", encoding="utf-8")
    with pytest.raises(DirectoryFileError) as refused:
        read(path)
    assert str(refused.value).startswith(str(path))
    assert "line 2" in str(refused.value) and "organisations" in str(refused.value)
