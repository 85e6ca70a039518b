"""Events stored under chain format 1 (before every column was covered) still verify,
and a store created then takes format 2 events after them in the same streams."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from eventstore.chain import DOWNGRADED, check_chain
from eventstore.records import GENESIS_HASH, canonical_json, hash_of, link_hash_v1
from eventstore.store import EventStore
from referralnet.ops.verify import verify_stores
from tests.store.test_event_store import event
from tests.store.test_tamper_detection import anchor_paths

pytestmark = pytest.mark.infra

OLD_DDL = """
CREATE SCHEMA {s};
CREATE TABLE {s}.events (
    position bigint GENERATED ALWAYS AS IDENTITY UNIQUE, stream_id uuid NOT NULL,
    version integer NOT NULL CHECK (version > 0), event_id uuid NOT NULL UNIQUE,
    type text NOT NULL, schema_version integer NOT NULL, occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(), actor text NOT NULL,
    correlation_id uuid NOT NULL, causation_id uuid, data jsonb NOT NULL,
    prev_hash bytea NOT NULL, hash bytea NOT NULL, PRIMARY KEY (stream_id, version)
);
"""


async def test_format_1_history_verifies_and_format_2_follows_it(
    conn: psycopg.AsyncConnection[Any], tmp_path: Any
) -> None:
    store = EventStore(f"old_{uuid.uuid4().hex[:8]}", "/services/old")
    s = sql.Identifier(store.schema)
    await conn.execute(sql.SQL(OLD_DDL).format(s=s))
    stream_id, prev = uuid.uuid4(), GENESIS_HASH
    for version in (1, 2):  # written the way the old code wrote them
        new = event(version)
        digest = link_hash_v1(prev, stream_id, version, new, canonical_json(new.data))
        await conn.execute(
            sql.SQL(
                "INSERT INTO {}.events (stream_id, version, event_id, type, schema_version, "
                "occurred_at, actor, correlation_id, causation_id, data, prev_hash, hash) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(s),
            (
                stream_id, version, new.event_id, new.type, new.schema_version,
                new.occurred_at, new.actor, new.correlation_id, new.causation_id,
                Jsonb(new.data), prev, digest,
            ),
        )  # fmt: skip
        prev = digest
    try:
        await store.create(conn)  # the migration: adds chain_format, old rows get 1
        await store.append(conn, uuid.uuid4(), 0, [event(9)])
        await store.append(conn, stream_id, 2, [event(3)])
        events = await store.read_stream(conn, stream_id)
        assert [e.chain_format for e in events] == [1, 1, 2]
        assert all(hash_of(e) == e.hash for e in events)
        assert check_chain(store.schema, events) == []
        assert (await verify_stores(conn, anchor_paths(tmp_path), [store])).clean

        # A DBA cannot pass an event off under the old, weaker rule after the cut-over.
        forged = events[2]
        downgraded = link_hash_v1(forged.prev_hash, stream_id, 3, forged)
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            sql.SQL("UPDATE {}.events SET chain_format = 1, hash = %s WHERE event_id = %s").format(
                s
            ),
            (downgraded, forged.event_id),
        )
        found = (await verify_stores(conn, anchor_paths(tmp_path), [store])).findings
        assert DOWNGRADED in {f.kind for f in found}
    finally:
        await conn.execute("RESET session_replication_role")
        await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))
