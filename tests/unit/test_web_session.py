"""The web app's session cookie and CSRF helpers (issue 15), no browser or stack."""

from __future__ import annotations

from cryptography.fernet import Fernet

from web.app.session import Sessions, safe_next, same_secret


def _sessions(max_age: int = 60) -> Sessions:
    return Sessions(Fernet.generate_key(), max_age=max_age)


def test_a_sealed_session_opens_with_its_key_and_hides_the_token() -> None:
    sessions = _sessions()
    session = sessions.new("rn_secret-token", "gp-1", "GP One", "gp-practice")
    cookie = sessions.seal(session)
    assert "rn_secret-token" not in cookie  # encrypted, not only signed
    assert sessions.open(cookie) == session
    assert "rn_secret" not in repr(session)


def test_expired_tampered_or_foreign_cookies_do_not_open() -> None:
    sessions = _sessions(max_age=60)
    session = sessions.new("t", "gp-1", "GP One", "gp-practice")
    cookie = sessions.seal(session, at=1_000_000)
    assert sessions.open(cookie, at=1_000_059) == session
    assert sessions.open(cookie, at=1_000_061) is None  # expired
    assert sessions.open(cookie[:-2] + "xx", at=1_000_001) is None  # tampered
    assert _sessions().open(cookie, at=1_000_001) is None  # another key
    assert sessions.open(None) is None and sessions.open("") is None


def test_csrf_values_compare_and_missing_ones_never_match() -> None:
    assert same_secret("abc", "abc")
    assert not same_secret("abc", "abd")
    assert not same_secret("", "")
    assert not same_secret(None, None)


def test_only_paths_inside_the_app_are_returned_to_after_sign_in() -> None:
    assert safe_next("/app/referrals/1?x=2") == "/app/referrals/1?x=2"
    for bad in ("https://evil.example/", "//evil.example", "/app//evil.example", "/docs", None):
        assert safe_next(bad) is None
