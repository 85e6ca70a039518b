"""Read a directory file (YAML or JSON) and say exactly where it is wrong.

Strict about YAML 1.1's traps, since a directory file is typed by hand:

- a key repeated in one mapping (including a second top-level ``organisations:``) is
  refused with both lines, where PyYAML would silently keep the last one;
- an unquoted ``10:00`` is refused with the fix (YAML 1.1 reads it as the base-60
  integer 600, which became 00:10); times are quoted ``"HH:MM"`` strings;
- several documents in one file are refused.

Every problem (YAML, field or cross-field) is collected and reported, one line each,
``<file>: line N, <field path>: <reason>``; nothing is returned, so nothing is
registered, when any line is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from directory.model import DirectoryFile, reference_problems

Location = tuple[int | str, ...]

# YAML 1.1 sexagesimal int / float (``10:00``, ``1:30:00``, ``190:20:30.15``).
_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")


class DirectoryFileError(ValueError):
    """The file cannot be used; the message names the line and the field, one a line."""


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that records repeated keys instead of letting the last one win."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[tuple[int, str, int]] = []  # (line, key, first line)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    self.repeated.append((line, str(key), first[key]))
                else:
                    first[key] = line
            except TypeError:  # an unhashable key; the base class reports it
                pass
        return super().construct_mapping(node, deep=deep)


def _line_of(node: yaml.Node | None, loc: Location) -> int | None:
    """Line (1-based) of the node at pydantic's error location, as deep as it resolves."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if getattr(k, "value", None) == part]
            if not match:
                break
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _node_at(node: yaml.Node | None, loc: Location) -> yaml.Node | None:
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            return None
    return node


def _yaml_hint(node: yaml.Node | None, loc: Location, err: Any) -> str:
    """For text YAML 1.1 turned into something else (NO -> false, 0123 -> 83, a date):
    say so, and how to keep it as text."""
    if err.get("type") != "string_type":
        return ""
    scalar = _node_at(node, loc)
    if isinstance(scalar, yaml.ScalarNode) and scalar.style is None:
        return (
            f"; YAML reads unquoted {scalar.value} as {type(err.get('input')).__name__}, "
            f'write "{scalar.value}"'
        )
    return ""


def _unquoted_sexagesimals(node: yaml.Node | None, path: Location = ()) -> list[tuple[int, str]]:
    """(line, problem) for every plain scalar YAML 1.1 would read as a base-60 number."""
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found += _unquoted_sexagesimals(value, (*path, str(getattr(key, "value", "?"))))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _unquoted_sexagesimals(item, (*path, i))
    elif (
        isinstance(node, yaml.ScalarNode) and node.style is None and _SEXAGESIMAL.match(node.value)
    ):
        field = ".".join(str(p) for p in path) or "(top level)"
        found.append(
            (
                node.start_mark.line + 1,
                f"{field}: {node.value} unquoted is read by YAML 1.1 as a base-60 "
                f'number; write it quoted: "{node.value}"',
            )
        )
    return found


def _load(text: str, name: str) -> tuple[yaml.Node | None, Any, list[tuple[int, str]]]:
    """The node tree, the data and the YAML-level problems (line, text) of ``text``."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise DirectoryFileError(f"{name}: not valid YAML/JSON: {exc}") from exc
    finally:
        loader.dispose()
    problems = [
        (line, f"{key}: repeated key (first at line {first}); each key may appear once")
        for line, key, first in loader.repeated
    ]
    problems += _unquoted_sexagesimals(node)
    return node, data, problems


def parse(text: str, name: str = "<directory>") -> DirectoryFile:
    """Validate directory text; raise ``DirectoryFileError`` listing every problem."""
    node, data, yaml_problems = _load(text, name)
    lines = [f"{name}: line {line}, {reason}" for line, reason in sorted(yaml_problems)]
    seen_lines = {line for line, _ in yaml_problems}
    try:
        parsed = DirectoryFile.model_validate(data)
    except ValidationError as exc:
        located = [
            (loc, str(err["msg"]).removeprefix("Value error, ") + _yaml_hint(node, loc, err))
            for err in exc.errors()
            if _line_of(node, loc := tuple(err["loc"])) not in seen_lines
        ]
        raise DirectoryFileError("\n".join([*lines, *_describe(name, node, located)])) from exc
    if lines:  # cross-field rules on values the author did not mean would only confuse
        raise DirectoryFileError("\n".join(lines))
    problems = _describe(name, node, reference_problems(parsed))
    if problems:
        raise DirectoryFileError("\n".join(problems))
    return parsed


def _describe(name: str, node: yaml.Node | None, problems: list[tuple[Location, str]]) -> list[str]:
    lines = []
    for loc, reason in problems:
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(node, loc)
        where = f"line {line}, " if line else ""
        lines.append(f"{name}: {where}{field}: {reason}")
    return lines


def read(path: Path) -> DirectoryFile:
    """Read and validate a directory file from disk."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DirectoryFileError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise DirectoryFileError(f"{path}: not UTF-8 text: {exc.reason}") from exc
    return parse(text, str(path))
