"""The alliance's master keys: they wrap every person's data key (envelope encryption).

Where they come from: ``REFERRALNET_MASTER_KEYS`` (comma-separated, URL-safe base64 of
32 random bytes each), else ``<home>/keys/master.keys`` (one key a line, created 0600
with one key on first use). The first key is the current one (new data keys are wrapped
with it); the others only unwrap data keys not yet re-wrapped (``referralnet keys
rotate``). A key is named by its id: the first 8 bytes of its SHA-256, in hex, so the
store says which key wrapped each data key without holding the key.

The file is re-read when it changes, so ``keys rotate`` reaches running processes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from referralnet.settings import settings

ENV_MASTER_KEYS = "REFERRALNET_MASTER_KEYS"
FILE_NAME = "master.keys"
NONCE_BYTES = 12


class MasterKeyError(Exception):
    """No usable master key: malformed setting or file, or a key id nobody holds."""


def key_id(key: bytes) -> str:
    """The public name of a master key (16 hex digits)."""
    return hashlib.sha256(key).hexdigest()[:16]


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encode_keys(keys: list[bytes]) -> str:
    return "".join(base64.urlsafe_b64encode(k).decode() + "\n" for k in keys)


def parse_keys(text: str, where: str) -> list[bytes]:
    """Keys from comma- or line-separated base64; MasterKeyError naming ``where``."""
    keys = []
    for part in text.replace(",", "\n").split():
        try:
            key = base64.urlsafe_b64decode(part.encode())
        except ValueError:
            raise MasterKeyError(f"{where}: a key is not base64") from None
        if len(key) != 32:
            raise MasterKeyError(f"{where}: a key is {len(key)} bytes, not 32 (AES-256)")
        keys.append(key)
    if not keys:
        raise MasterKeyError(f"{where}: no key")
    return keys


def write_key_file(path: Path, keys: list[bytes]) -> None:
    """Replace the key file whole (written privately, then renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encode_keys(keys))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class MasterKeys:
    """A keyring: wrap with the current key, unwrap with whichever key wrapped."""

    keys: list[bytes]
    path: Path | None = None  # None: from the environment (or given), never re-read
    _stamp: tuple[int, int] | None = None

    @classmethod
    def from_home(cls, home: Path) -> MasterKeys:
        """From ``REFERRALNET_MASTER_KEYS``, else ``<home>/keys/master.keys`` (made once)."""
        given = settings().master_keys
        if given is not None:
            return cls(parse_keys(given.get_secret_value(), ENV_MASTER_KEYS))
        path = home / "keys" / FILE_NAME
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # link() fails if another process made the file first: exactly one key wins
            tmp = path.with_name(f".{FILE_NAME}.new.{os.getpid()}")
            write_key_file(tmp, [new_key()])
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            tmp.unlink()
        keyring = cls([], path)
        keyring.reload()
        return keyring

    @classmethod
    def ephemeral(cls) -> MasterKeys:
        """One fresh key held only in memory (tests, and vaults built without a home)."""
        return cls([new_key()])

    def reload(self, force: bool = False) -> None:
        """Re-read the file if it changed since the last read (cheap: one stat)."""
        if self.path is None:
            return
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if force or stamp != self._stamp:
            self.keys = parse_keys(self.path.read_text(), str(self.path))
            self._stamp = stamp

    @property
    def current_id(self) -> str:
        self.reload()
        return key_id(self.keys[0])

    def wrap(self, person_ref: str, data_key: bytes) -> tuple[str, bytes]:
        """(master key id, nonce + AES-GCM of the data key bound to ``person_ref``)."""
        self.reload()
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.keys[0]).encrypt(nonce, data_key, _aad(person_ref))
        return key_id(self.keys[0]), nonce + sealed

    def unwrap(self, master_id: str, person_ref: str, wrapped: bytes) -> bytes:
        """The data key; MasterKeyError if no key of this keyring has ``master_id``."""
        key = self._key(master_id)
        if key is None:
            self.reload(force=True)  # rotated by another process since we last looked
            key = self._key(master_id)
        if key is None:
            raise MasterKeyError(f"master key {master_id} is not in the keyring (retired?)")
        return AESGCM(key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _aad(person_ref))

    def _key(self, master_id: str) -> bytes | None:
        return next((k for k in self.keys if key_id(k) == master_id), None)


def _aad(person_ref: str) -> bytes:
    # binds a wrapped key to its person: swapping two rows' keys makes both unreadable
    return b"referralnet-person-key:" + person_ref.encode()
