"""The anchor: an append-only file of signed checkpoints, kept outside the database.

Each line is one checkpoint: for every store, the events (stream, version, event id,
hash) that reached it since the previous line, with totals, the hash of the previous
line and an Ed25519 signature over the rest. Folding the lines in order gives, per
store and stream, the event ids and hashes of every checkpointed version.

The database's own administrator can rewrite rows and recompute hashes, but cannot
rewrite this file (it is on the application's host, under ``REFERRALNET_HOME``) nor
sign a line (the private key is never in the database). A copy of the file and the
public key is all an auditor needs. Lines are written under an exclusive ``flock``, so
the relay's periodic checkpoints and ``referralnet verify --checkpoint`` can share it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eventstore.sealing import seal_key_path
from referralnet.settings import settings

FORMAT = "referralnet-anchor/1"


class AnchorError(Exception):
    """The anchor file or its key cannot be trusted or read (reason in the message)."""


@dataclass(frozen=True)
class AnchorPaths:
    """Where the signing key, its public half and the anchor file live.

    Defaults are under ``home`` (``keys/checkpoint.key``, ``keys/checkpoint.pub``,
    ``anchors/checkpoints.jsonl``); each can be moved by a setting (``referralnet.settings``), e.g.
    to keep the private key on another volume than the database's.
    """

    private_key: Path
    public_key: Path
    anchor: Path
    seal_key: Path | None = None
    """The services' seal key (``eventstore.sealing``); None: seals are not checked."""

    @classmethod
    def under(cls, home: Path) -> AnchorPaths:
        given = settings()
        return cls(
            given.checkpoint_key_file or home / "keys" / "checkpoint.key",
            given.checkpoint_public_key_file or home / "keys" / "checkpoint.pub",
            given.anchor_file or home / "anchors" / "checkpoints.jsonl",
            seal_key_path(home),
        )


def signing_key(paths: AnchorPaths) -> Ed25519PrivateKey:
    """The checkpoint signing key, created (mode 0600, public half beside it) if absent."""
    if paths.private_key.exists():
        loaded = serialization.load_pem_private_key(paths.private_key.read_bytes(), None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise AnchorError(f"{paths.private_key} is not an Ed25519 private key")
        if not paths.public_key.exists():
            _write_public(paths.public_key, loaded.public_key())
        return loaded
    key = Ed25519PrivateKey.generate()
    paths.private_key.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: two processes creating the key at once must not end up with two keys.
    try:
        fd = os.open(paths.private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return signing_key(paths)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    _write_public(paths.public_key, key.public_key())
    return key


def _write_public(path: Path, key: Ed25519PublicKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    tmp.replace(path)


def public_key(paths: AnchorPaths) -> Ed25519PublicKey:
    """The key that checks checkpoint signatures (``AnchorError`` when missing)."""
    if not paths.public_key.exists():
        raise AnchorError(f"no checkpoint public key at {paths.public_key}")
    loaded = serialization.load_pem_public_key(paths.public_key.read_bytes())
    if not isinstance(loaded, Ed25519PublicKey):
        raise AnchorError(f"{paths.public_key} is not an Ed25519 public key")
    return loaded


Entry = tuple[UUID, int, UUID, bytes]
"""One checkpointed event: stream id, version, event id, hash."""


@dataclass
class AnchorState:
    """Everything the anchor's lines say, folded: per store and stream, the version and
    hash of its last checkpointed event (``heads``) and, when ``keep_events`` (for a
    verifier, not for the writer, whose memory must not grow with the history), the
    (event id, hash) of every checkpointed version 1..n (``streams``)."""

    keep_events: bool = True
    heads: dict[str, dict[UUID, tuple[int, bytes]]] = field(default_factory=dict)
    streams: dict[str, dict[UUID, list[tuple[UUID, bytes]]]] = field(default_factory=dict)
    sealed_from: dict[str, int] = field(default_factory=dict)
    """Per store, the position of the first sealed event a checkpoint took in: from
    there on every event must carry a valid seal, whatever the database says."""
    lines: int = 0
    last_line_hash: str = ""
    last_taken_at: str | None = None
    offset: int = 0
    torn_tail: bool = False
    """The file ends in a line without its newline: a writer died mid-line (the next
    writer cuts it off; it was never a checkpoint)."""

    def stream(self, store: str, stream_id: UUID) -> list[tuple[UUID, bytes]]:
        return self.streams.get(store, {}).get(stream_id, [])

    def head(self, store: str, stream_id: UUID) -> tuple[int, bytes] | None:
        return self.heads.get(store, {}).get(stream_id)

    def events(self, store: str) -> int:
        return sum(v for v, _ in self.heads.get(store, {}).values())


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signed_line(
    key: Ed25519PrivateKey,
    state: AnchorState,
    taken_at: str,
    new: dict[str, list[Entry]],
    totals: dict[str, tuple[int, int]],
    sealed_from: dict[str, int] | None = None,
) -> bytes:
    """The next line for ``state``: new entries per store, totals (streams, events) per
    store after them, linked to the previous line and signed."""
    body: dict[str, Any] = {
        "format": FORMAT,
        "seq": state.lines + 1,
        "prev": state.last_line_hash,
        "taken_at": taken_at,
        "stores": {
            store: {
                "streams": totals[store][0],
                "events": totals[store][1],
                "new": [[str(s), v, str(e), h.hex()] for s, v, e, h in entries],
                **(
                    {"sealed_from": sealed_from[store]}
                    if sealed_from and store in sealed_from
                    else {}
                ),
            }
            for store, entries in new.items()
        },
    }
    body["sig"] = base64.b64encode(key.sign(_canonical(body))).decode()
    return _canonical(body) + b"\n"


def fold_line(state: AnchorState, raw: bytes, key: Ed25519PublicKey) -> None:
    """Check one line (signature, sequence, link, contiguous versions, totals) and add
    its entries to ``state``; ``AnchorError`` says what is wrong with it."""
    where = f"anchor line {state.lines + 1}"
    try:
        body = json.loads(raw)
        sig = base64.b64decode(body.pop("sig"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AnchorError(f"{where} is not a checkpoint: {exc}") from None
    try:
        key.verify(sig, _canonical(body))
    except InvalidSignature:
        raise AnchorError(f"{where}: signature does not verify (altered or foreign)") from None
    if body.get("format") != FORMAT or body.get("seq") != state.lines + 1:
        raise AnchorError(f"{where}: out of sequence (a line was removed or reordered)")
    if body.get("prev") != state.last_line_hash:
        raise AnchorError(f"{where}: does not link to the line before it")
    for store, part in body["stores"].items():
        heads = state.heads.setdefault(store, {})
        streams = state.streams.setdefault(store, {})
        for s, version, e, h in part["new"]:
            stream_id, digest = UUID(s), bytes.fromhex(h)
            if version != heads.get(stream_id, (0, b""))[0] + 1:
                raise AnchorError(f"{where}: {store} {s} version {version} is not contiguous")
            heads[stream_id] = (version, digest)
            if state.keep_events:
                streams.setdefault(stream_id, []).append((UUID(e), digest))
        if (len(heads), state.events(store)) != (part["streams"], part["events"]):
            raise AnchorError(f"{where}: {store} totals do not add up")
        if "sealed_from" in part:
            state.sealed_from[store] = min(
                part["sealed_from"], state.sealed_from.get(store, part["sealed_from"])
            )
    state.lines += 1
    state.last_line_hash = hashlib.sha256(raw.rstrip(b"\n")).hexdigest()
    state.last_taken_at = body["taken_at"]


def read_new(state: AnchorState, handle: IO[bytes], key: Ed25519PublicKey) -> None:
    """Fold the complete lines appended since ``state.offset``; a last line without its
    newline (a writer killed mid-write) is left out and flagged in ``torn_tail``."""
    handle.seek(state.offset)
    state.torn_tail = False
    for raw in handle:
        if not raw.endswith(b"\n"):
            state.torn_tail = True
            return
        fold_line(state, raw, key)
        state.offset += len(raw)


def read_anchor(paths: AnchorPaths, keep_events: bool = True) -> AnchorState | None:
    """The anchor's folded state, or None when no checkpoint was ever written."""
    if not paths.anchor.exists() or paths.anchor.stat().st_size == 0:
        return None
    key = public_key(paths)
    state = AnchorState(keep_events=keep_events)
    with paths.anchor.open("rb") as handle:
        read_new(state, handle, key)
    return state


@contextlib.asynccontextmanager
async def locked_anchor_async(paths: AnchorPaths) -> AsyncIterator[IO[bytes]]:
    """``locked_anchor`` for an event loop: waiting for the lock (another writer may hold
    it through a long checkpoint) happens in a thread, so the loop's other work (the
    outbox relays) goes on meanwhile."""
    paths.anchor.parent.mkdir(parents=True, exist_ok=True)
    with paths.anchor.open("a+b") as handle:
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked_anchor(paths: AnchorPaths) -> Iterator[IO[bytes]]:
    """The anchor file opened for appending under an exclusive lock (created if absent)."""
    paths.anchor.parent.mkdir(parents=True, exist_ok=True)
    with paths.anchor.open("a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_line(handle: IO[bytes], state: AnchorState, line: bytes, key: Ed25519PublicKey) -> None:
    """Write ``line`` durably at the end of the (locked) anchor and fold it; a torn
    tail left by a writer that died mid-line is cut off first."""
    handle.truncate(state.offset)  # no-op unless a torn tail follows the last line
    handle.seek(0, os.SEEK_END)
    handle.write(line)
    handle.flush()
    os.fsync(handle.fileno())
    read_new(state, handle, key)
