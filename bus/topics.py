"""Topic names (DESIGN §2), configurable with a prefix so alliances can share a cluster."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PARTITIONS = 6
"""The journey log and dead letters: spread by referral id over this many partitions."""
ORG_PARTITIONS = 1
"""A partner's topic: its one view consumer reads all of it, and one partition keeps each
fetch and each batch whole (with six, a view paid per-partition costs six times)."""


@dataclass(frozen=True)
class Topics:
    """The three kinds of topic: the journey log, one per partner, and dead letters."""

    prefix: str = ""
    partitions: int = PARTITIONS
    org_partitions: int = ORG_PARTITIONS

    @property
    def referral_events(self) -> str:
        return f"{self.prefix}referral-events"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead-letters"

    def org(self, org_id: str) -> str:
        """The topic carrying what one partner organisation may see."""
        return f"{self.prefix}org.{org_id}"

    def group(self, app_id: str) -> str:
        """A consumer group (a faust app id), prefixed like the topics and partner groups."""
        return f"{self.prefix}{app_id}"

    def partitions_of(self, name: str) -> int:
        """How many partitions the topic ``name`` is created with."""
        return self.org_partitions if name.startswith(f"{self.prefix}org.") else self.partitions

    def layout(self, names: Iterable[str]) -> dict[str, int]:
        """``{topic: partitions}`` for creating or repairing ``names``."""
        return {n: self.partitions_of(n) for n in names}
