"""The running distributor's decisions, replayed in memory: which organisation gets which copy.

Used to rebuild views straight from the stores of record (replay benchmark) and to
work out what every view must hold (chaos harness). Only the bookkeeping is here
(entitlements in a dict instead of PostgreSQL, ``ce_orgsequence`` numbers); every
decision is ``services.distributor.policy.distribute``, the distributor's own code,
over the lifecycle's parties (``domain.lifecycle``).
"""

from __future__ import annotations

from bus.tracking import Rejected
from schemas.envelope import CloudEvent, evolve
from services.distributor.policy import Entitlements, distribute, model_of


class MemoryDistributor:
    """Feed it every stored event in causal order; it returns the copies to deliver."""

    def __init__(self, commissioners: list[str], secret: bytes) -> None:
        self.commissioners = commissioners
        self.secret = secret
        self.entitlements: dict[str, Entitlements] = {}
        self.created: dict[str, CloudEvent] = {}
        # ce_orgsequence as the distributor gives it: per (organisation, subject), a copy
        # sent again keeping its number.
        self.numbers: dict[tuple[str, int], int] = {}
        self.last: dict[tuple[str, str], int] = {}

    def copies(self, event: CloudEvent) -> list[tuple[str, CloudEvent]]:
        """(organisation, copy) for every delivery of ``event``, as the distributor does;
        none for an event the distributor dead-letters (its referral was never created)."""
        before = self.entitlements.get(event.subject)
        created = self.created.setdefault(event.subject, event)
        try:
            ent, deliveries = distribute(
                before,
                event,
                model_of(event),
                self.commissioners,
                self.secret,
                thaw_created=lambda _: created,
                keep_created=lambda _: {},  # kept in self.created instead
            )
        except Rejected:
            del self.created[event.subject]
            return []
        self.entitlements[event.subject] = ent
        return [(d.org_id, self._numbered(d.org_id, d.event)) for d in deliveries]

    def _numbered(self, org: str, copy: CloudEvent) -> CloudEvent:
        key = (org, copy.id.int)  # the id's int: a UUID's own hash is a Python call
        number = self.numbers.get(key)
        if number is None:
            stream = (org, copy.subject)
            number = self.numbers[key] = self.last[stream] = self.last.get(stream, 0) + 1
        return evolve(copy, orgsequence=number)
