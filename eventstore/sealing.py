"""Seals: each appended event's hash, MACed with a key the database never holds.

Checkpoints cannot vouch for an event appended after the last one: a DBA who knows
the chain's rule can append a forged event with a perfect chain, and the next
checkpoint would take it in. The appending services therefore seal every event they
write: ``seal = BLAKE2b-256 keyed with the seal key, over the hash``, stored beside
the hash. The key is a
file under ``REFERRALNET_HOME/keys`` (``seal.key``, created on first use, mode 0600)
that every service process and the verifier read; the database only ever sees seals.
An event without a valid seal where seals are due is a forgery.

A process without ``REFERRALNET_HOME`` (a test or a tool using a store directly)
writes no seals; verification then requires them only from the first sealed event of
a store on (or from where the anchor says sealing began).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from referralnet.settings import settings


def seal_key_path(home: Path) -> Path:
    """Where the seal key of the stack at ``home`` lives (``REFERRALNET_SEAL_KEY_FILE``
    moves it)."""
    return settings().seal_key_file or home / "keys" / "seal.key"


def load_seal_key(path: Path, create: bool = False) -> bytes | None:
    """The key at ``path``; created (O_EXCL, 0600) when ``create`` and absent."""
    if path.exists():
        return path.read_bytes()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    return path.read_bytes()


@functools.cache
def _key_for(home: Path, override: Path | None) -> bytes | None:
    return load_seal_key(override or home / "keys" / "seal.key", True)


def appending_seal_key() -> bytes | None:
    """The key this process seals its appends with: its ``REFERRALNET_HOME``'s (read
    once), or None when the process has no home (nothing is sealed then)."""
    given = settings()
    return _key_for(given.home, given.seal_key_file) if given.given("home") else None


def seal(key: bytes, digest: bytes) -> bytes:
    """The seal of an event whose chain hash is ``digest``: keyed BLAKE2b-256, a MAC by
    design (no HMAC construction needed) and about three times cheaper than
    HMAC-SHA256 here (0.8 against 2.5 us per event)."""
    return hashlib.blake2b(digest, key=key, digest_size=32).digest()


def seal_holds(key: bytes, digest: bytes, sealed: bytes | None) -> bool:
    return sealed is not None and hmac.compare_digest(seal(key, digest), sealed)
