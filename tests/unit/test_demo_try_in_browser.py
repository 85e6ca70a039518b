"""``make demo`` ends with the web app's address and a sign-in token per role (issue 15)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from referralnet.demo import DEMO_ROLES, demo_directory, try_in_browser


def test_the_demo_ends_with_the_app_and_a_token_per_role(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    tokens = {org: f"rn_token-of-{org}" for _, org in DEMO_ROLES}
    try_in_browser(console, tmp_path, tokens)
    text = console.export_text()
    assert "http://127.0.0.1:8000/app/" in text and f"REFERRALNET_HOME={tmp_path}" in text
    for role, org in DEMO_ROLES:
        assert f"rn_token-of-{org}" in text and role in text


def test_every_demo_role_is_an_organisation_of_the_demo_alliance_of_that_kind() -> None:
    kinds = {o.id: o.kind.value for o in demo_directory().organisations}
    assert [kinds[org] for _, org in DEMO_ROLES] == [
        "gp-practice",
        "link-worker-service",
        "voluntary-group",
        "commissioner",
    ]
