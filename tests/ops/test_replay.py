"""``referralnet replay``: rebuild a view from its topic and swap it in atomically."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from referralnet.ops.replay import REPLAY_SUFFIX, ReplayResult, replay_view
from referralnet.system import RunningSystem
from tests.conftest import Alliance, wait_until
from tests.ops.conftest import (
    accepted_referral,
    add_session,
    caught_up,
    checksums,
    journeys,
    query,
    run_cli,
)
from views.schema import schema_name

pytestmark = pytest.mark.infra


def _replay(system: RunningSystem, org: str, progress: object = None) -> ReplayResult:
    return asyncio.run(
        replay_view(
            system.database_url,
            system.bootstrap_servers,
            system.topics,
            org,
            progress,  # type: ignore[arg-type]
        )
    )


def _schema_exists(system: RunningSystem, schema: str) -> bool:
    return bool(query(system, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)))


def test_replay_equals_the_live_view_and_twice_gives_the_same_checksum(
    system: RunningSystem, alliance: Alliance
) -> None:
    journeys(alliance, 3, sessions=2)
    caught_up(system)
    org = alliance.ids["link_worker"]
    live = checksums(system, [org])[org]

    first = run_cli(system, "replay", org, "--json")
    assert first.exit_code == 0, first.output
    [result] = json.loads(first.stdout)
    assert result["view"] == schema_name(org)
    assert result["matches"] and result["checksum"] == result["live_checksum"] == live
    assert result["events"] > 0

    second = run_cli(system, "replay", schema_name(org), "--json")  # the schema name works too
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)[0]["checksum"] == live
    assert checksums(system, [org])[org] == live
    assert not _schema_exists(system, schema_name(org, REPLAY_SUFFIX))


def test_replay_all_prints_a_table_with_events_per_second(
    system: RunningSystem, alliance: Alliance
) -> None:
    journeys(alliance, 1)
    caught_up(system)
    before = checksums(system, list(alliance.ids.values()))
    result = run_cli(system, "replay", "--all")
    assert result.exit_code == 0, result.output
    assert "events/s" in result.output
    assert "side effects" in result.output
    assert checksums(system, list(alliance.ids.values())) == before


def test_unknown_view_and_bad_arguments_exit_2(system: RunningSystem) -> None:
    unknown = run_cli(system, "replay", "no-such-org")
    assert unknown.exit_code == 2
    assert "no view 'no-such-org'" in unknown.output
    assert run_cli(system, "replay").exit_code == 2  # neither VIEW nor --all
    assert run_cli(system, "replay", "x", "--all").exit_code == 2


def test_ctrl_c_leaves_the_live_view_untouched_and_drops_the_half_built_one(
    system: RunningSystem, alliance: Alliance
) -> None:
    journeys(alliance, 1)
    caught_up(system)
    org = alliance.ids["referrer"]
    live_schema, replay_schema = schema_name(org), schema_name(org, REPLAY_SUFFIX)
    before = checksums(system, [org])[org]
    positions = query(system, f"SELECT * FROM {live_schema}.positions ORDER BY partition")
    seen: list[bool] = []

    def interrupt(done: int, total: int) -> None:
        if done > 0:
            seen.append(_schema_exists(system, replay_schema))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _replay(system, org, interrupt)
    assert seen == [True], "the interrupt came while the replay schema was being built"
    assert not _schema_exists(system, replay_schema)
    assert checksums(system, [org])[org] == before
    assert query(system, f"SELECT * FROM {live_schema}.positions ORDER BY partition") == positions


def test_replay_while_events_keep_arriving_has_no_gap_and_no_double_count(
    system: RunningSystem, alliance: Alliance
) -> None:
    rid, service = accepted_referral(alliance)
    for day in range(1, 6):
        add_session(service, rid, minutes=20 + day, day=day + 7)
    caught_up(system)
    org = _service_org(system, rid)
    posted = [5]
    stop = threading.Event()

    def keep_posting() -> None:
        day = 13
        while not stop.is_set() and day < 28:
            add_session(service, rid, minutes=day, day=day)
            posted[0] += 1
            day += 1

    writer = threading.Thread(target=keep_posting, daemon=True)

    def during(done: int, total: int) -> None:
        # Make sure events arrive while the replay is under way, before the swap.
        if done > 0 and not writer.is_alive() and not stop.is_set():
            start = posted[0]
            writer.start()
            wait_until(lambda: posted[0] >= start + 3, timeout=30)

    try:
        result = _replay(system, org, during)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert posted[0] > 8
    caught_up(system)
    sessions = query(
        system,
        f"SELECT count(*), sum(minutes) FROM {schema_name(org)}.sessions WHERE referral_id = %s",
        (rid,),
    )[0]
    row = query(
        system, f"SELECT sessions FROM {schema_name(org)}.referrals WHERE referral_id = %s", (rid,)
    )[0]
    assert sessions[0] == posted[0] == row[0], "every session exactly once"
    assert result.events > 0
    again = _replay(system, org)
    assert again.matches, "the swapped-in view went on consuming exactly like a live one"


def _service_org(system: RunningSystem, rid: str) -> str:
    return str(
        query(system, "SELECT service_org FROM outcomes.cases WHERE referral_id = %s", (rid,))[0][0]
    )


def test_a_rebuild_that_differs_is_not_swapped_in_unless_forced(
    system: RunningSystem, alliance: Alliance
) -> None:
    """The live view holds an event its topic no longer has (a log that lost it): the
    rebuild would lose it too, so replay keeps the live view and says so."""
    rid, service = accepted_referral(alliance)
    add_session(service, rid)
    caught_up(system)
    org = _service_org(system, rid)
    live = schema_name(org)
    query(
        system,
        f"INSERT INTO {live}.timeline SELECT gen_random_uuid(), referral_id, type, at, actor "
        f"FROM {live}.timeline WHERE referral_id = %s AND type = 'session-held' RETURNING 1",
        (rid,),
    )
    before = checksums(system, [org])[org]

    refused = run_cli(system, "replay", org)
    assert refused.exit_code == 1, refused.output
    assert f"view {live}" in refused.output
    assert "1 events only in the live view" in " ".join(refused.output.split())
    assert checksums(system, [org])[org] == before, "the live view was kept"
    assert not _schema_exists(system, schema_name(org, REPLAY_SUFFIX))

    as_json = run_cli(system, "replay", org, "--json")
    assert as_json.exit_code == 1
    [body] = json.loads(as_json.stdout)
    assert body == {
        "view": live,
        "matches": False,
        "swapped": False,
        "rows_only_live": {t: int(t == "timeline") for t in body["rows_only_live"]},
        "rows_only_rebuilt": {t: 0 for t in body["rows_only_rebuilt"]},
    }

    forced = run_cli(system, "replay", org, "--force", "--json")
    assert forced.exit_code == 0, forced.output
    [swapped] = json.loads(forced.stdout)
    assert swapped["swapped"] and not swapped["matches"]
    assert checksums(system, [org])[org] == swapped["checksum"] != before
