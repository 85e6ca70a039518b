"""The browser session: an organisation's token kept in an encrypted, expiring cookie.

- The cookie is a Fernet token (``cryptography``: AES-CBC + HMAC-SHA256 with a
  timestamp), so it is both signed and encrypted: the organisation's bearer token never
  travels in clear, and a cookie older than ``REFERRALNET_WEB_SESSION_SECONDS`` is
  refused on reading (``InvalidToken``), whatever the browser kept.
- Sent ``HttpOnly; SameSite=Strict; Path=/app`` (``Secure`` too when served over HTTPS).
- CSRF: each session carries a random ``csrf`` value that every form posts back in a
  hidden field (synchroniser token); the sign-in form, before any session exists, uses
  a double-submit cookie. ``SameSite=Strict`` alone would leave older browsers open.

Key: ``REFERRALNET_WEB_KEY`` or ``<home>/keys/web-session.key`` (created 0600), so a
restarted API process keeps every partner signed in.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from infra.keys import key_file
from referralnet.settings import settings

COOKIE = "rn_session"
LOGIN_CSRF_COOKIE = "rn_login_csrf"


@dataclass(frozen=True)
class Session:
    """Who is signed in: the organisation, its kind, its token and the form secret."""

    token: str
    org_id: str
    org_name: str
    kind: str
    csrf: str

    def __repr__(self) -> str:  # the token must never reach a log or a traceback
        return f"Session(org_id={self.org_id!r}, kind={self.kind!r})"


class Sessions:
    """Seal and open session cookies with one key."""

    def __init__(self, key: bytes, max_age: int | None = None) -> None:
        self._fernet = Fernet(key)
        # How long a sign-in lasts (default a working day, 8 h); then the browser signs in again.
        self.max_age = settings().web_session_seconds if max_age is None else max_age

    @classmethod
    def from_home(cls, home: Path) -> Sessions:
        return cls(key_file(home, "web-session.key", Fernet.generate_key, settings().web_key))

    def new(self, token: str, org_id: str, org_name: str, kind: str) -> Session:
        return Session(token, org_id, org_name, kind, secrets.token_urlsafe(24))

    def seal(self, session: Session, at: int | None = None) -> str:
        """The cookie value; ``at`` (Unix seconds, default now) is when it was issued."""
        data = json.dumps(asdict(session)).encode()
        return self._fernet.encrypt_at_time(data, int(time.time()) if at is None else at).decode()

    def open(self, cookie: str | None, at: int | None = None) -> Session | None:
        """The session in ``cookie``; None if absent, tampered with or older than
        ``max_age`` seconds at ``at`` (Unix seconds, default now)."""
        if not cookie:
            return None
        now = int(time.time()) if at is None else at
        try:
            data = json.loads(self._fernet.decrypt_at_time(cookie.encode(), self.max_age, now))
            return Session(**data)
        except (InvalidToken, ValueError, TypeError):
            return None


def same_secret(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of a CSRF value; absent on either side is a mismatch."""
    return bool(expected and given and hmac.compare_digest(expected, given))


def safe_next(target: str | None) -> str | None:
    """Where to go after signing in: only a path inside the app (no open redirect)."""
    if target and target.startswith("/app/") and not target.startswith("/app//"):
        return target if "\\" not in target else None
    return None
