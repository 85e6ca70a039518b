"""Configuration from the environment (DESIGN §6).

Unset ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` mean "start the embedded broker /
database"; the same code then runs against Apache Kafka and a managed PostgreSQL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from infra.local_time import DEFAULT_TIMEZONE, TIMEZONE_VARIABLE, zone_named


@dataclass(frozen=True)
class Settings:
    """Where the bus, the store and the data directory are, and how topics are named."""

    kafka_bootstrap_servers: str | None = None
    database_url: str | None = None
    home: Path = field(default_factory=lambda: Path(".referralnet"))
    topic_prefix: str = ""
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    timezone: str = DEFAULT_TIMEZONE
    """The alliance's IANA time zone: every date derived from an instant (age at referral,
    report boundaries, per-month figures) is read on its calendar (``infra.local_time``)."""

    @classmethod
    def from_env(cls) -> Settings:
        """Read the documented environment variables; unset means embedded."""
        return cls(
            kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            database_url=os.environ.get("DATABASE_URL") or None,
            home=Path(os.environ.get("REFERRALNET_HOME", ".referralnet")).absolute(),
            topic_prefix=os.environ.get("REFERRALNET_TOPIC_PREFIX", ""),
            api_host=os.environ.get("REFERRALNET_API_HOST", "127.0.0.1"),
            api_port=int(os.environ.get("REFERRALNET_API_PORT", "8000")),
            timezone=zone_named(os.environ.get(TIMEZONE_VARIABLE) or DEFAULT_TIMEZONE).key,
        )
