"""A simulated year of an alliance's work, driven only through the public HTTP API.

Each referral's journey runs as its own task (bounded concurrency), with world times
spread over the year: referral, routing (waited for in the referrer's view), an
occasional decline, first contact, baseline measures, sessions, onward activities with
attendance recorded by the provider, follow-up measures, closing. The measures of one
review are recorded together (``POST /referrals/{id}/assessments``), as a link worker
enters them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp

AREA_REFERRERS: dict[str, list[str]] = {
    "north": ["gp-riverside", "hospital-general", "fire-county", "council-adult-care"],
    "south": ["gp-hillview", "housing-homes", "hospital-general", "police-county"],
    "central": [
        "gp-market-street",
        "pharmacy-high-street",
        "jobcentre-town",
        "housing-homes",
        "council-adult-care",
    ],
    "coast": ["fire-county", "police-county", "housing-homes"],
}
AREA_WEIGHTS = {"north": 30, "south": 25, "central": 35, "coast": 10}
NEEDS = [
    "social-connection",
    "stress",
    "financial-insecurity",
    "housing-instability",
    "physical-activity",
    "mental-wellbeing",
    "long-term-condition",
]
SESSION_KINDS = [
    ("longer-appointment", 48, (45, 75)),
    ("short-conversation", 49, (10, 20)),
    ("group", 2, (60, 90)),
    ("accompanied-visit", 1, (60, 120)),
]


class ApiFailure(RuntimeError):
    """The API answered something the simulation did not expect."""


@dataclass
class SimulationStats:
    referrals: int = 0
    routed: int = 0
    declined: int = 0
    escalated: int = 0
    sessions: int = 0
    activities: int = 0
    attendances: int = 0
    outcomes: int = 0
    closed: int = 0
    requests: int = 0
    retries: int = 0
    first_referral: str | None = None
    latencies: list[float] = field(default_factory=list)


class AllianceSimulation:
    """Plays every partner's part against a running API."""

    def __init__(
        self,
        client: aiohttp.ClientSession,
        tokens: dict[str, str],
        activities: list[dict[str, Any]],
        *,
        referrals: int,
        year: int,
        seed: int = 2020,
        concurrency: int = 24,
    ) -> None:
        self.client = client
        self.tokens = tokens
        self.activities = activities
        self.total = referrals
        self.year_start = datetime(year, 1, 1, 9, tzinfo=UTC)
        self.rng = random.Random(seed)
        self.concurrency = concurrency
        self.stats = SimulationStats()
        self.done = 0

    async def _call(
        self, method: str, path: str, org: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One API call as ``org``; a 409 'not-yet-known' (Retry-After) is retried."""
        for _attempt in range(50):
            self.stats.requests += 1
            async with self.client.request(
                method,
                path,
                json=body,
                headers={"Authorization": f"Bearer {self.tokens[org]}"},
            ) as response:
                if response.status in (409, 429, 503) and "Retry-After" in response.headers:
                    self.stats.retries += 1
                    await asyncio.sleep(float(response.headers["Retry-After"]) / 10)
                    continue
                if response.status >= 400:
                    text = await response.text()
                    raise ApiFailure(f"{method} {path} as {org}: {response.status} {text}")
                result: dict[str, Any] = await response.json()
                return result
        raise ApiFailure(f"{method} {path}: still not ready after retries")

    async def _routed(
        self, referral_id: str, referrer: str, previous: str | None
    ) -> dict[str, Any]:
        """Wait (polling the referrer's own view, with a deadline) for routing's answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        pause = 0.4  # routing's answer takes a few hops: asking at once only adds load
        while loop.time() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 1.0)
            view: dict[str, Any] = {}
            with contextlib.suppress(ApiFailure):  # 409 not-yet until the view has it
                path = f"/referrals/{referral_id}?person=false"
                view = (await self._call("GET", path, referrer))["view"]
            status, service = view.get("status"), view.get("service_org")
            if status == "escalated" or (status in ("routed", "accepted") and service != previous):
                return view
        raise ApiFailure(f"referral {referral_id} was not routed within 60s")

    async def journey(self, index: int) -> None:
        rng = random.Random(self.rng.random() + index)
        area = rng.choices(list(AREA_WEIGHTS), weights=list(AREA_WEIGHTS.values()))[0]
        referrer = rng.choice(AREA_REFERRERS[area])
        referred_at = self.year_start + timedelta(
            days=index * 300 / max(1, self.total), minutes=rng.randint(0, 480)
        )
        age = rng.choices([19, 30, 42, 57, 70, 82], weights=[8, 12, 20, 25, 20, 15])[0]
        needs = rng.sample(NEEDS, k=rng.choice([1, 1, 2, 3]))
        nhs = _nhs_number(rng)
        created = await self._call(
            "POST",
            "/referrals",
            referrer,
            {
                "person": {
                    "name": f"Person {index}",
                    "date_of_birth": str(
                        date(referred_at.year - age, 1 + index % 12, 1 + index % 28)
                    ),
                    "nhs_number": nhs,
                    "phone": f"07700 9{index:05d}",
                    "notes": "lives alone since bereavement",
                },
                "needs": needs,
                "consent": {
                    "share_with_link_worker": True,
                    "share_outcomes_with_referrer": rng.random() < 0.7,
                },
                "area": area,
                "urgency": rng.choices(["routine", "urgent"], weights=[9, 1])[0],
                "referred_at": referred_at.isoformat(),
            },
        )
        rid = created["referral_id"]
        self.stats.referrals += 1
        self.stats.first_referral = self.stats.first_referral or rid
        view = await self._routed(rid, referrer, None)
        t = referred_at + timedelta(hours=rng.randint(2, 30))
        while view["status"] != "escalated" and rng.random() < 0.08:
            await self._call(
                "POST",
                f"/referrals/{rid}/decline",
                view["service_org"],
                {
                    "reason": rng.choice(["not-eligible", "person-declined"]),
                    "declined_at": t.isoformat(),
                },
            )
            self.stats.declined += 1
            view = await self._routed(rid, referrer, view["service_org"])
            t += timedelta(hours=6)
        if view["status"] == "escalated":
            self.stats.escalated += 1
            return
        self.stats.routed += 1
        await self._casework(rid, view["service_org"], area, needs, t, rng)

    async def _casework(
        self, rid: str, lw: str, area: str, needs: list[str], t: datetime, rng: random.Random
    ) -> None:
        await self._call("POST", f"/referrals/{rid}/accept", lw, {"accepted_at": t.isoformat()})
        t += timedelta(days=rng.choice([1, 2, 3, 4, 5, 6, 9, 12]))
        await self._call(
            "POST",
            f"/referrals/{rid}/contacts",
            lw,
            {"contacted_at": t.isoformat(), "mode": "phone"},
        )
        baseline = _baseline(rng, needs)
        await self._assessment(rid, lw, "baseline", baseline, t)
        for _ in range(rng.randint(1, 4)):
            t += timedelta(days=rng.randint(5, 14))
            kind = rng.choices(SESSION_KINDS, weights=[k[1] for k in SESSION_KINDS])[0]
            await self._call(
                "POST",
                f"/referrals/{rid}/sessions",
                lw,
                {
                    "kind": kind[0],
                    "minutes": rng.randint(*kind[2]),
                    "mode": rng.choice(["in-person", "in-person", "phone", "video"]),
                    "held_at": t.isoformat(),
                },
            )
            self.stats.sessions += 1
        options = [a for a in self.activities if a["area"] == area and set(a["needs"]) & set(needs)]
        for activity in rng.sample(options, k=min(len(options), rng.randint(1, 2))):
            await self._call(
                "POST",
                f"/referrals/{rid}/activities",
                lw,
                {"activity_id": activity["id"], "referred_at": t.isoformat()},
            )
            self.stats.activities += 1
            at = t
            for _ in range(rng.randint(0, 3)):
                at += timedelta(days=7)
                await self._call(
                    "POST",
                    f"/referrals/{rid}/activities/{activity['id']}/attendance",
                    activity["provider"],
                    {"attended_at": at.isoformat(), "attended": rng.random() < 0.85},
                )
                self.stats.attendances += 1
        t += timedelta(days=rng.randint(20, 60))
        follow_up = {m: _follow_up(m, items, rng) for m, items in baseline.items()}
        await self._assessment(rid, lw, "follow-up", follow_up, t)
        if rng.random() < 0.9:
            await self._call(
                "POST",
                f"/referrals/{rid}/close",
                lw,
                {
                    "reason": rng.choices(["completed", "disengaged"], weights=[9, 1])[0],
                    "closed_at": (t + timedelta(days=1)).isoformat(),
                },
            )
            self.stats.closed += 1

    async def _assessment(
        self, rid: str, lw: str, timepoint: str, taken: dict[str, list[int]], at: datetime
    ) -> None:
        """The measures of one review, recorded together (one outcome event each)."""
        measures = [
            {"measure": m, "score": items[0]} if m == "activity-minutes" else
            {"measure": m, "items": items}
            for m, items in taken.items()
        ]  # fmt: skip
        body = {"timepoint": timepoint, "recorded_at": at.isoformat(), "measures": measures}
        await self._call("POST", f"/referrals/{rid}/assessments", lw, body)
        self.stats.outcomes += len(measures)

    async def run(self, progress: Any = None) -> SimulationStats:
        """Run every journey, ``concurrency`` at a time; ``progress(done)`` after each."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(i: int) -> None:
            async with gate:
                await self.journey(i)
                self.done += 1
                if progress is not None:
                    progress(self.done)

        await asyncio.gather(*(one(i) for i in range(self.total)))
        return self.stats


def _baseline(rng: random.Random, needs: list[str]) -> dict[str, list[int]]:
    """Measures chosen as link workers do: wellbeing always, the rest by need."""
    measures = {"swemwbs": [rng.randint(1, 4) for _ in range(7)]}
    if "social-connection" in needs or rng.random() < 0.3:
        measures["ucla3"] = [rng.randint(1, 3) for _ in range(3)]
    if "physical-activity" in needs or rng.random() < 0.2:
        measures["activity-minutes"] = [rng.choice([0, 10, 20, 30, 45, 60, 90, 120])]
    if rng.random() < 0.2:
        measures["ons4"] = [
            rng.randint(2, 7),
            rng.randint(2, 7),
            rng.randint(2, 7),
            rng.randint(3, 9),
        ]
    return measures


def _follow_up(measure: str, items: list[int], rng: random.Random) -> list[int]:
    """Most people improve a little; some do not (West Kent: ~2/3 improve)."""
    better = rng.random() < 0.68
    if measure == "activity-minutes":
        return [max(0, items[0] + (rng.randint(30, 150) if better else -rng.randint(0, 20)))]
    if measure == "ucla3":
        return [max(1, v - 1) if better else v for v in items]
    if measure == "ons4":
        return [min(10, v + 1) if better else v for v in items[:3]] + [
            max(0, items[3] - 1) if better else items[3]
        ]
    return [min(5, v + 1) if better and rng.random() < 0.6 else v for v in items]


def _nhs_number(rng: random.Random) -> str:
    """A random number with a valid modulus-11 check digit in an issued range (4xx), so
    intake accepts it (it refuses placeholders and the 999 test range)."""
    while True:
        digits = [4, *(rng.randint(0, 9) for _ in range(8))]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            return "".join(map(str, digits)) + str(check)
