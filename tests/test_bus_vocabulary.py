"""Nothing on the bus is free text outside the contract (issue 11, item 9).

Walks every committed JSON Schema (what partners validate against) and fails on any
string property that could carry a name, an address or a note: every string must be an
enum/const, a uuid/date/date-time, or match a pattern with a bounded length.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.events.base import AREA_PATTERN, MACHINE_TEXT_PATTERN

SCHEMAS = sorted((Path(__file__).parent.parent / "schemas" / "jsonschema").glob("*.json"))
FORMATS = {"uuid", "date-time", "date"}
MAX_PATTERNED_LENGTH = 128


def strings(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node that admits a string, with its JSON pointer."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "string" or (isinstance(kind, list) and "string" in kind):
            yield path, node
        for key, value in node.items():
            yield from strings(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}/{i}")


def unbounded(node: dict[str, Any]) -> str | None:
    """Why a string node admits free text, or None if it is closed."""
    if "enum" in node or "const" in node or node.get("format") in FORMATS:
        return None
    pattern = node.get("pattern")
    if pattern is None:
        return "no enum, format or pattern"
    if not (pattern.startswith("^") and pattern.endswith("$")):
        return f"pattern {pattern!r} is not anchored"
    bound = node.get("maxLength")
    quantified = re.findall(r"\{\d+,(\d+)\}", pattern)
    if bound is None and not quantified:
        return f"pattern {pattern!r} without a length bound"
    longest = min(int(bound or 10**9), *(int(q) + 1 for q in quantified or ["999999999"]))
    if longest > MAX_PATTERNED_LENGTH:
        return f"up to {longest} characters"
    return None


def test_there_are_schemas_to_walk() -> None:
    assert len(SCHEMAS) >= 12


@pytest.mark.parametrize("schema_file", SCHEMAS, ids=[p.name for p in SCHEMAS])
def test_no_string_on_the_bus_is_unbounded_free_text(schema_file: Path) -> None:
    schema = json.loads(schema_file.read_text())
    problems = [f"{path}: {why}" for path, node in strings(schema) if (why := unbounded(node))]
    assert problems == [], f"{schema_file.name}: {problems}"


def test_the_walk_catches_free_text() -> None:
    assert unbounded({"type": "string", "maxLength": 64}) is not None
    assert unbounded({"type": "string", "pattern": "^.*$"}) is not None
    assert unbounded({"type": "string", "pattern": "^[a-z]{1,500}$"}) is not None
    assert unbounded({"type": "string", "format": "uuid"}) is None
    assert unbounded({"type": "string", "pattern": AREA_PATTERN, "maxLength": 63}) is None


@pytest.mark.parametrize(
    "text", ["Flat 3, 12 Acacia Avenue RT1 9QX", "Jane Smith", "north\u0000", "North"]
)
def test_an_address_or_a_name_is_neither_an_area_nor_machine_text(text: str) -> None:
    assert re.fullmatch(AREA_PATTERN.strip("^$"), text) is None
    assert re.fullmatch(MACHINE_TEXT_PATTERN.strip("^$"), text) is None or text == "north"
