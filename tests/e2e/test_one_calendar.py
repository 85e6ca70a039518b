"""One calendar end to end: GET /report and `referralnet report` read dates in the
alliance's zone (Europe/London), whatever the machine's TZ, and agree figure for figure.

A session at 00:30 BST on 1 July (23:30 UTC on 30 June) belongs to July; a date range
typed without a zone, once outcomes exist, is a report (it was a 500).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from referralnet.system import RunningSystem
from tests.conftest import Alliance, referral_body, wait_until

pytestmark = pytest.mark.infra


def _cli_report(system: RunningSystem, tz: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **system.env, "DATABASE_URL": system.database_url, "TZ": tz}
    env.pop("REFERRALNET_TIMEZONE", None)  # the default, Europe/London
    return subprocess.run(
        [sys.executable, "-m", "referralnet.cli", "report", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _journey_across_midnight(alliance: Alliance) -> str:
    """Referred 23:00 BST on 30 June; session 00:30 BST on 1 July; two outcome scores."""
    referrer, lw = alliance.client("referrer"), alliance.client("link_worker")
    body = referral_body(area=f"area-{alliance.suffix}", referred_at="2026-06-30T22:00:00Z")
    created = referrer.post("/referrals", json=body)
    assert created.status_code == 201, created.text
    rid = str(created.json()["referral_id"])
    wait_until(
        lambda: (
            lw.post(
                f"/referrals/{rid}/accept", json={"accepted_at": "2026-06-30T22:10:00Z"}
            ).status_code
            == 200
        ),
    )
    steps: list[tuple[str, dict[str, Any]]] = [
        ("contacts", {"contacted_at": "2026-06-30T22:20:00Z", "mode": "phone"}),
        (
            "sessions",
            {"kind": "longer-appointment", "minutes": 60, "mode": "phone",
             "held_at": "2026-06-30T23:30:00Z"},
        ),
        (
            "outcomes",
            {"measure": "ucla3", "timepoint": "baseline", "items": [3, 3, 3],
             "recorded_at": "2026-06-30T22:30:00Z"},
        ),
        (
            "outcomes",
            {"measure": "ucla3", "timepoint": "follow-up", "items": [2, 2, 1],
             "recorded_at": "2026-08-30T10:00:00+01:00"},
        ),
    ]  # fmt: skip
    for path, payload in steps:
        answer = lw.post(f"/referrals/{rid}/{path}", json=payload)
        assert answer.status_code == 201, answer.text
    return rid


def test_api_and_cli_read_dates_on_the_alliance_calendar(
    system: RunningSystem, alliance: Alliance
) -> None:
    commissioner = alliance.client("commissioner")
    _journey_across_midnight(alliance)
    wait_until(
        lambda: (
            commissioner.get("/report").json()["outcome_changes"] != []
            and commissioner.get("/report").json()["sessions"] == 1
        )
    )

    # A plain date range once outcomes exist: a report, not a 500.
    old = commissioner.get("/report", params={"from": "2020-01-01", "to": "2021-01-01"})
    assert old.status_code == 200, old.text
    assert old.json()["referrals"] == 0

    july = commissioner.get("/report", params={"from": "2026-07-01", "to": "2026-08-01"})
    assert july.status_code == 200, july.text
    assert (july.json()["sessions"], july.json()["referrals"]) == (1, 0)
    june = commissioner.get("/report", params={"from": "2026-06-01", "to": "2026-07-01"})
    assert (june.json()["sessions"], june.json()["referrals"]) == (0, 1)

    # The commissioner's own view carries the same figures as GET /report.
    whole = commissioner.get("/report").json()
    assert commissioner.get("/view").json()["aggregates"] == whole
    (severe,) = [
        b for b in whole["outcome_changes_by_baseline_band"]
        if (b["measure"], b["band"]) == ("ucla3", "most-severely-lonely")
    ]  # fmt: skip
    assert (severe["people"], severe["percent_improved"]) == (1, 100.0)
    assert [m["month"] for m in july.json()["monthly"]] == ["2026-07"]

    # The CLI gives the same figures whatever the machine's TZ.
    for tz in ("Europe/London", "America/New_York", "Pacific/Auckland", "UTC"):
        cli = _cli_report(
            system, tz, "--from", "2026-07-01", "--to", "2026-08-01",
            "--commissioner", alliance.ids["commissioner"],
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == july.json(), tz


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-08-01", "to": "2026-07-01"}, "to"),
        ({"from": "2026-07-01", "to": "2026-07-01"}, "to"),
        ({"from": "1700000000"}, "from"),
        ({"to": "next week"}, "to"),
    ],
)
def test_a_nonsense_range_is_422_naming_the_field(
    system: RunningSystem, alliance: Alliance, params: dict[str, str], field: str
) -> None:
    answer = alliance.client("commissioner").get("/report", params=params)
    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["fields"]] == [field]
    args = [a for k, v in params.items() for a in (f"--{k}", v)]
    cli = _cli_report(system, "UTC", *args, "--commissioner", alliance.ids["commissioner"])
    out = cli.stdout + cli.stderr
    assert cli.returncode == 2, out
    assert f"--{field}" in out and "Traceback" not in out and len(out.splitlines()) == 1
