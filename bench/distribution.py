"""The distributor's decisions replayed in memory: which organisation gets which copy.

Used to rebuild views straight from the stores of record (replay benchmark) and to
work out, independently of the running distributor, what every view must hold (chaos
harness). Entitlements live in a dict instead of PostgreSQL; the decisions themselves
are ``services.distributor.policy.deliveries``, the running distributor's own code.
"""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from schemas.envelope import CloudEvent
from services.distributor.policy import Entitlements, deliveries


class MemoryDistributor:
    """Feed it every stored event in causal order; it returns the copies to deliver."""

    def __init__(self, commissioners: list[str], secret: bytes) -> None:
        self.commissioners = commissioners
        self.secret = secret
        self.entitlements: dict[str, Entitlements] = {}
        self.created: dict[str, CloudEvent] = {}
        # ce_orgsequence as the distributor gives it: per (organisation, subject), a copy
        # sent again keeping its number.
        self.numbers: dict[tuple[str, UUID], int] = {}
        self.last: dict[tuple[str, str], int] = {}

    def copies(self, event: CloudEvent) -> list[tuple[str, CloudEvent]]:
        """(organisation, copy) for every delivery of ``event``, as the distributor does."""
        data = event.data
        ent = self.entitlements.get(event.subject)
        created_copy = None
        if event.type == "referral-created":
            if ent is None:
                consent = data["consent"]
                ent = Entitlements(
                    str(data["referrer_org"]), bool(consent["share_outcomes_with_referrer"]), {}
                )
                self.entitlements[event.subject] = ent
                self.created[event.subject] = event
        elif ent is None:
            return []  # the distributor dead-letters these
        elif event.type == "referral-routed":
            ent.service_org = str(data["service_org"])
            created_copy = self.created[event.subject]
        elif event.type in ("referral-declined", "referral-escalated"):
            ent.service_org = None
        elif event.type == "activity-referred":
            if data["provider_org"] not in ent.providers:
                ent.providers.append(str(data["provider_org"]))
            created_copy = self.created[event.subject]
        return [
            (d.org_id, self._numbered(d.org_id, d.event))
            for d in deliveries(event, ent, self.commissioners, self.secret, created_copy)
        ]

    def _numbered(self, org: str, copy: CloudEvent) -> CloudEvent:
        number = self.numbers.get((org, copy.id))
        if number is None:
            stream = (org, copy.subject)
            number = self.numbers[(org, copy.id)] = self.last[stream] = self.last.get(stream, 0) + 1
        return replace(copy, orgsequence=number)
