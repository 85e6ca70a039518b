"""Per-organisation limits, so that no partner can crowd out another (issue 12, finding 7).

Two bounds per organisation, checked right after its token is known and before any
route does work; a request over either is answered 429 with ``Retry-After`` at once:

- a rate: a token bucket of ``burst`` requests refilled at ``rate`` per second
  (``REFERRALNET_API_RATE_PER_ORG``, ``REFERRALNET_API_BURST_PER_ORG``);
- requests in flight (``REFERRALNET_API_MAX_IN_FLIGHT_PER_ORG``): kept below the API's
  overall bound (``web.admission``), so one organisation's burst leaves room for the
  others instead of pushing them into 503.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from referralnet.settings import settings

DEFAULT_RATE = 300.0
DEFAULT_BURST = 600
DEFAULT_MAX_IN_FLIGHT = 24


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class OrgQuota:
    """The limits of every organisation, in one API process (asyncio: no locks needed)."""

    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)
    refused: int = 0

    @classmethod
    def from_env(cls) -> OrgQuota:
        given = settings()
        return cls(
            rate=given.api_rate_per_org,
            burst=given.api_burst_per_org,
            max_in_flight=given.api_max_in_flight_per_org,
        )

    def admit(self, org_id: str, now: float | None = None) -> tuple[str, int] | None:
        """Take one request's share for ``org_id``: None if admitted (call ``release``
        when it is done), else (why, seconds to wait) for a 429."""
        now = time.monotonic() if now is None else now
        if self.max_in_flight > 0 and self._in_flight.get(org_id, 0) >= self.max_in_flight:
            self.refused += 1
            return f"more than {self.max_in_flight} requests of yours in flight", 1
        if self.rate > 0:
            bucket = self._buckets.setdefault(org_id, _Bucket(float(self.burst), now))
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens < 1.0:
                self.refused += 1
                wait = max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
                return f"more than {self.rate:g} requests per second (burst {self.burst})", wait
            bucket.tokens -= 1.0
        self._in_flight[org_id] = self._in_flight.get(org_id, 0) + 1
        return None

    def release(self, org_id: str) -> None:
        left = self._in_flight.get(org_id, 0) - 1
        if left > 0:
            self._in_flight[org_id] = left
        else:
            self._in_flight.pop(org_id, None)
