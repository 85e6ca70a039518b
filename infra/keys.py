"""Secrets kept as files under the data directory, created once, readable only by us."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr


def key_file(
    home: Path, name: str, generate: Callable[[], bytes], given: SecretStr | None
) -> bytes:
    """The key ``given`` (a setting), else ``<home>/keys/<name>`` (made 0600)."""
    if given is not None:
        return given.get_secret_value().encode()
    path = home / "keys" / name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        # Written whole to a private file, then linked into place: link() fails if the
        # key exists, so when processes start at once exactly one key wins and nobody
        # can read a half-written one.
        tmp = path.with_name(f".{name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(generate())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return path.read_bytes().strip()
