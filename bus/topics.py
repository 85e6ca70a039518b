"""Topic names (DESIGN §2), configurable with a prefix so alliances can share a cluster."""

from __future__ import annotations

from dataclasses import dataclass

PARTITIONS = 6


@dataclass(frozen=True)
class Topics:
    """The three kinds of topic: the journey log, one per partner, and dead letters."""

    prefix: str = ""
    partitions: int = PARTITIONS

    @property
    def referral_events(self) -> str:
        return f"{self.prefix}referral-events"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead-letters"

    def org(self, org_id: str) -> str:
        """The topic carrying what one partner organisation may see."""
        return f"{self.prefix}org.{org_id}"
