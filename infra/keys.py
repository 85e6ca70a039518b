"""Secrets kept as files under the data directory, created once, readable only by us."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def key_file(home: Path, name: str, generate: Callable[[], bytes], env: str) -> bytes:
    """The key from environment variable ``env``, else ``<home>/keys/<name>`` (made 0600)."""
    value = os.environ.get(env)
    if value:
        return value.encode()
    path = home / "keys" / name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: when several processes start at once, exactly one key is ever written.
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(generate())
    return path.read_bytes().strip()
