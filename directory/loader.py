"""Read a directory file (YAML or JSON) and say exactly where it is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from directory.model import DirectoryFile, reference_problems


class DirectoryFileError(ValueError):
    """The file cannot be used; the message names the line and the field."""


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
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


def parse(text: str, name: str = "<directory>") -> DirectoryFile:
    """Validate directory text; raise ``DirectoryFileError`` naming line and field."""
    try:
        node = yaml.compose(text)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DirectoryFileError(f"{name}: not valid YAML/JSON: {exc}") from exc
    try:
        parsed = DirectoryFile.model_validate(data)
    except ValidationError as exc:
        located = [(tuple(err["loc"]), str(err["msg"])) for err in exc.errors()]
        raise DirectoryFileError(_describe(name, node, located)) from exc
    references = reference_problems(parsed)
    if references:
        raise DirectoryFileError(_describe(name, node, references))
    return parsed


def _describe(
    name: str, node: yaml.Node | None, problems: list[tuple[tuple[int | str, ...], str]]
) -> str:
    lines = []
    for loc, reason in problems:
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(node, loc)
        where = f"line {line}, " if line else ""
        lines.append(f"{name}: {where}{field}: {reason}")
    return "\n".join(lines)


def read(path: Path) -> DirectoryFile:
    """Read and validate a directory file from disk."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DirectoryFileError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse(text, str(path))
