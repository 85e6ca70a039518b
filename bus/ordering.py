"""The gap-safe rule every tracked consumer applies per stream: pure, no I/O.

A stream is what a producer numbers 1, 2, 3 ...: (referral id, producing service) on
``referral-events`` (``ce_streamversion``), (subject, partner topic) on ``org.<id>``
(``ce_orgsequence``, assigned by the distributor). With ``v`` the stream's last applied
version, a record with version ``n`` is:

- ``n == v + 1``: applied, then every held ``v + 2, v + 3 ...`` after it, in order;
- ``n <= v`` and the same digest as what was applied at ``n``: an exact duplicate
  (re-delivery, ``republish``), ignored;
- ``n <= v`` with another digest: a dead letter, "conflicting duplicate";
- ``n > v + 1``: held (stored durably by the caller) until the versions before it arrive.

Two different records claiming the same version before the stream reaches it (a forged
far-ahead event, then the real one) are both dead-lettered as conflicting duplicates:
the consumer cannot tell which is real, so neither wins. The stream is then parked: its
later versions stay held behind the missing one until ops re-drives the right record
(``dead-letters retry``), which arrives as the next version and drains the rest.
What it cannot catch: a forged record that is the only claimant of a version when the
stream reaches it is applied (nothing distinguishes it then); the real one, arriving
later, becomes a "conflicting duplicate" dead letter, so the conflict is visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

StreamKey = tuple[str, str]
"""(stream id, source): (referral id, ce_source) or (subject, partner topic)."""

T = TypeVar("T")


@dataclass(frozen=True)
class Candidate(Generic[T]):
    """One record placed in its stream: ``item`` is the caller's (record, event, ...)."""

    stream: StreamKey
    version: int
    digest: int
    item: T
    held: bool = False  # it comes from the held table, not from this fetch


@dataclass
class Plan(Generic[T]):
    """What to do with a batch, in order; the caller executes it in one transaction."""

    apply: list[Candidate[T]] = field(default_factory=list)
    duplicates: list[Candidate[T]] = field(default_factory=list)
    dead: list[tuple[Candidate[T], str]] = field(default_factory=list)
    hold: list[Candidate[T]] = field(default_factory=list)
    unhold: list[Candidate[T]] = field(default_factory=list)
    heads: dict[StreamKey, int] = field(default_factory=dict)


def plan(
    incoming: Iterable[Candidate[T]],
    heads: Mapping[StreamKey, int],
    applied_digests: Mapping[tuple[StreamKey, int], int],
    held: Iterable[Candidate[T]],
) -> Plan[T]:
    """Apply the rule to ``incoming`` (in fetch order) given each stream's state.

    ``heads``: last applied version per stream (absent: 0). ``applied_digests``: digest
    of what was applied at (stream, version), for the versions at or below a head that
    ``incoming`` names (absent: unknown, e.g. applied before digests were kept; then
    the record counts as a duplicate). ``held``: every held candidate of these streams.
    """
    result: Plan[T] = Plan()
    head = dict(heads)
    digests = dict(applied_digests)
    waiting: dict[StreamKey, dict[int, Candidate[T]]] = {}
    for c in held:
        waiting.setdefault(c.stream, {})[c.version] = c
    for c in incoming:
        v = head.get(c.stream, 0)
        waits = waiting.setdefault(c.stream, {})
        if c.version <= v:
            known = digests.get((c.stream, c.version))
            if known is None or known == c.digest:
                result.duplicates.append(c)
            else:
                result.dead.append((c, _conflict(c, "was applied with other content")))
            continue
        rival = waits.get(c.version)
        if rival is not None:
            if rival.digest == c.digest:
                result.duplicates.append(c)
                _drain(result, head, digests, waits, c.stream)
                continue
            # Two claims for one version before it was due: neither may win.
            del waits[c.version]
            if rival.held:
                result.unhold.append(rival)
            else:
                result.hold.remove(rival)
            result.dead.append((rival, _conflict(rival, "is claimed by another record too")))
            result.dead.append((c, _conflict(c, "is claimed by another record too")))
            continue
        if c.version > v + 1:
            waits[c.version] = c
            result.hold.append(c)
            continue
        _apply(result, head, digests, c)
        _drain(result, head, digests, waits, c.stream)
    result.heads = {k: n for k, n in head.items() if n != heads.get(k, 0)}
    return result


def _drain(
    result: Plan[T],
    head: dict[StreamKey, int],
    digests: dict[tuple[StreamKey, int], int],
    waits: dict[int, Candidate[T]],
    stream: StreamKey,
) -> None:
    """Apply the held versions that follow the stream's head, in order."""
    while (nxt := waits.pop(head.get(stream, 0) + 1, None)) is not None:
        if nxt.held:
            result.unhold.append(nxt)
        else:
            result.hold.remove(nxt)
        _apply(result, head, digests, nxt)


def _apply(
    result: Plan[T],
    head: dict[StreamKey, int],
    digests: dict[tuple[StreamKey, int], int],
    c: Candidate[T],
) -> None:
    result.apply.append(c)
    head[c.stream] = c.version
    digests[(c.stream, c.version)] = c.digest


def _conflict(c: Candidate[T], why: str) -> str:
    stream, source = c.stream
    return f"conflicting duplicate: version {c.version} of stream {stream} from {source} {why}"
