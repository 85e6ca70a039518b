"""The distributor reads entitlements once per batch: a referral's whole start in one batch.

When created, routed and activity-referred arrive in one transaction, the later events
must see the entitlements the earlier ones set (held in memory, written once at the
end), an event of a never-created referral is dead-lettered alone, and the next batch
reads back what the first one stored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from bus.topics import Topics
from bus.tracking import Outgoing, Record, apply_batch, stored_positions
from directory import store as directory
from schemas.envelope import CloudEvent, to_kafka
from schemas.registry import dataschema_uri
from services.distributor import store
from services.distributor.projection import DistributorProjection

pytestmark = pytest.mark.infra

T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
TOPICS = Topics()


def event(
    rid: UUID, event_type: str, source: str, version: int, data: dict[str, Any], schema: int = 1
) -> Any:
    return CloudEvent(
        id=uuid4(),
        source=f"/services/{source}",
        type=event_type,
        subject=str(rid),
        time=T0 + timedelta(hours=version),
        dataschema=dataschema_uri(event_type, schema),
        data={"referral_id": str(rid), **data},
        streamversion=version,
        correlationid=rid,
        causationid=None,
        actor="test",
    )


def created(rid: UUID, referrer: str) -> Any:
    return event(
        rid,
        "referral-created",
        "intake",
        1,
        {
            "person_ref": "p_batch",
            "referrer_org": referrer,
            "referrer_kind": "gp-practice",
            "needs": ["stress"],
            "urgency": "routine",
            "consent": {"share_with_link_worker": True, "share_outcomes_with_referrer": False},
            "area": "north",
            "age_band": "35-49",
            "referred_at": T0.isoformat(),
        },
    )


def as_records(events: list[CloudEvent], first: int) -> list[Record]:
    return [
        Record(TOPICS.referral_events, 0, first + i, *to_kafka(e)) for i, e in enumerate(events)
    ]


async def register(conn: psycopg.AsyncConnection[Any], *orgs: str) -> None:
    """Partners in the directory: the distributor sends copies only to those."""
    for org in orgs:
        await conn.execute(
            "INSERT INTO directory.organisations (id, name, kind, areas, spec) "
            "VALUES (%s, %s, 'voluntary-group', '{}', '{}')",
            (org, org),
        )


def copies(published: list[Outgoing]) -> dict[str, list[str]]:
    """Event types each org topic received, in order."""
    out: dict[str, list[str]] = {}
    for o in published:
        out.setdefault(o.topic.removeprefix("org."), []).append(o.event.type)
    return out


async def test_a_batch_sees_its_own_entitlement_changes_and_stores_them_once(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    await directory.create(conn)
    await store.create(conn)
    tag = uuid4().hex[:6]
    gp, lw, vg, icb = (f"{k}-{tag}" for k in ("gp", "lw", "vg", "icb"))
    await conn.execute(
        "INSERT INTO directory.organisations (id, name, kind, areas, spec) "
        "VALUES (%s, 'ICB', 'commissioner', '{}', '{}')",
        (icb,),
    )
    await register(conn, gp, lw, vg)
    rid, orphan = uuid4(), uuid4()
    session = {
        "session_id": str(uuid4()),
        "kind": "longer-appointment",
        "duration_minutes": 45,
        "mode": "in-person",
        "held_at": (T0 + timedelta(days=2)).isoformat(),
    }
    first = [
        created(rid, gp),
        event(
            rid, "referral-routed", "routing", 1, {"service_org": lw, "attempt": 1, "reason": "t"}
        ),
        event(
            orphan,
            "referral-routed",
            "routing",
            1,
            {"service_org": lw, "attempt": 1, "reason": "t"},
        ),
        event(
            rid,
            "activity-referred",
            "outcomes",
            1,
            {
                "activity_id": "walk",
                "provider_org": vg,
                "activity_kind": "walking-group",
                "referred_at": (T0 + timedelta(days=1)).isoformat(),
            },
        ),
    ]
    projection = DistributorProjection(TOPICS, b"secret")
    published: list[Outgoing] = []

    async def publish(outgoing: Any) -> None:
        published.extend(outgoing)

    async with conn.transaction():
        result = await apply_batch(
            conn, projection, TOPICS.referral_events, 0, as_records(first, 0), publish
        )
    assert (result.applied, result.dead) == (3, 1)  # the orphan alone is dead-lettered
    got = copies(published)
    assert got[gp] == ["referral-created", "referral-routed", "activity-referred"]
    assert got[lw] == ["referral-created", "referral-routed", "activity-referred"]
    assert got[vg] == ["referral-created", "activity-referred"]  # the created copy, late
    assert got[icb] == ["referral-created", "referral-routed", "activity-referred"]
    cur = await conn.execute(
        "SELECT referrer_org, service_org, providers FROM distributor.entitlements "
        "WHERE referral_id = ANY(%s)",
        ([str(rid), str(orphan)],),
    )
    assert await cur.fetchall() == [(gp, lw, [vg])]

    published.clear()
    second = [event(rid, "session-held", "outcomes", 2, session, schema=2)]
    async with conn.transaction():
        result = await apply_batch(
            conn, projection, TOPICS.referral_events, 0, as_records(second, 4), publish
        )
    assert result.applied == 1
    assert set(copies(published)) == {gp, lw, icb}  # read back: the service, not the provider


async def test_every_copy_is_numbered_per_partner_topic_and_keeps_its_number(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    """ce_orgsequence: 1, 2, 3 ... per (partner topic, subject), whatever the holes in
    stream versions the filtering leaves; a copy sent again keeps its number."""
    await directory.create(conn)
    await store.create(conn)
    tag = uuid4().hex[:6]
    gp, lw, vg = (f"{k}-{tag}" for k in ("gp", "lw", "vg"))
    await register(conn, gp, lw, vg)
    rid = uuid4()
    activity = {
        "activity_id": "walk",
        "provider_org": vg,
        "activity_kind": "walking-group",
        "referred_at": (T0 + timedelta(days=1)).isoformat(),
    }
    session = {
        "session_id": str(uuid4()),
        "kind": "longer-appointment",
        "duration_minutes": 45,
        "mode": "in-person",
        "held_at": (T0 + timedelta(days=2)).isoformat(),
    }
    journey = [
        created(rid, gp),
        event(
            rid, "referral-routed", "routing", 1, {"service_org": lw, "attempt": 1, "reason": "t"}
        ),
        event(rid, "session-held", "outcomes", 1, session, schema=2),
        event(rid, "activity-referred", "outcomes", 2, activity),
    ]
    projection = DistributorProjection(TOPICS, b"secret")
    published: list[Outgoing] = []

    async def publish(outgoing: Any) -> None:
        published.extend(outgoing)

    # The partition's position is shared with the other tests of this database.
    at = (await stored_positions(conn, "distributor", "distributor")).get(
        (TOPICS.referral_events, 0), 0
    )
    records = as_records(journey, at)
    await apply_batch(conn, projection, TOPICS.referral_events, 0, records[:2], publish)
    await apply_batch(conn, projection, TOPICS.referral_events, 0, records[2:], publish)
    numbers: dict[str, list[tuple[str, int | None]]] = {}
    for o in published:
        numbers.setdefault(o.topic.removeprefix("org."), []).append(
            (o.event.type, o.event.orgsequence)
        )
    assert numbers[vg] == [("referral-created", 1), ("activity-referred", 2)]
    assert numbers[lw] == [
        ("referral-created", 1),
        ("referral-routed", 2),
        ("session-held", 3),
        ("activity-referred", 4),
    ]
    # Sent again (the distributor forgot what it applied, as republish makes it do):
    # every copy keeps its number, so each partner's consumer sees a re-delivery.
    first = {(o.topic, o.event.id): o.event.orgsequence for o in published}
    await conn.execute("DELETE FROM distributor.applied")
    await conn.execute("DELETE FROM distributor.entitlements")
    published.clear()
    await apply_batch(
        conn, projection, TOPICS.referral_events, 0, as_records(journey, at + 4), publish
    )
    assert {(o.topic, o.event.id): o.event.orgsequence for o in published} == first


async def test_an_event_naming_an_organisation_outside_the_directory_is_dead_lettered(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    """Its copy would go to a topic that does not exist: refused, with the reason, and
    the stream waits for it; nothing is sent anywhere."""
    await directory.create(conn)
    await store.create(conn)
    tag = uuid4().hex[:6]
    gp = f"gp-{tag}"
    await register(conn, gp)
    rid = uuid4()
    routed = event(
        rid, "referral-routed", "routing", 1, {"service_org": f"ghost-{tag}", "attempt": 1,
                                               "reason": "t"}
    )  # fmt: skip
    projection = DistributorProjection(TOPICS, b"secret")
    published: list[Outgoing] = []

    async def publish(outgoing: Any) -> None:
        published.extend(outgoing)

    at = (await stored_positions(conn, "distributor", "distributor")).get(
        (TOPICS.referral_events, 0), 0
    )
    result = await apply_batch(
        conn, projection, TOPICS.referral_events, 0, as_records([created(rid, gp), routed], at),
        publish,
    )  # fmt: skip
    assert (result.applied, result.dead) == (1, 1)
    assert all(o.event.type == "referral-created" for o in published)
    assert not any(o.topic.endswith(f"ghost-{tag}") for o in published)
