"""Who may see what about one referral, decided from the referral's lifecycle (DESIGN §4).

One pure function, ``access``, used by every route that returns something about an
individual referral (``GET /referrals/{id}``, the rows of ``GET /view``), so the rule
cannot drift between routes. Its input is what the caller's own view holds; the view is
fed by the distributor, which applies the same rules to topics, so what a route may
show and what the topic delivered agree.

| caller, for this referral                         | role             | person details  |
| ------------------------------------------------- | ---------------- | --------------- |
| a commissioner (any referral, any id)             | refused (403)    | -               |
| the service it is routed to, while open           | ``link-worker``  | all             |
| that service once it closed the referral          | ``link-worker``  | none            |
| the referrer (it supplied the details)            | ``referrer``     | all             |
| provider of one of its activities, while open     | ``provider``     | name only       |
| provider, once the referral is closed             | ``provider``     | none            |
| a service that declined it or saw it escalate     | ``former-service`` | none          |
| anyone whose view does not hold it                | refused (404)    | -               |

Access ends when the role ends: a service that declined, or whose referral escalated
away, keeps the history it received (its view row) but never the person again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from directory.model import OrgKind
from domain.lifecycle import OPEN_WITH_SERVICE, Referral, Status

Role = Literal["referrer", "link-worker", "provider", "former-service"]

ALL_PERSON_FIELDS: tuple[str, ...] = (
    "name",
    "date_of_birth",
    "nhs_number",
    "phone",
    "email",
    "address",
    "notes",
)


@dataclass(frozen=True)
class ReferralFacts:
    """What the caller's view holds of one referral: enough to decide its role."""

    referrer_org: str | None
    service_org: str | None
    status: str
    providers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Access:
    """The caller's role for one referral and which person fields it may be shown."""

    role: Role
    person_fields: tuple[str, ...]

    @property
    def person_level(self) -> bool:
        return bool(self.person_fields)


def individual_rows_allowed(kind: OrgKind) -> bool:
    """Commissioners receive aggregates only: no route returns them an individual referral
    (not even by its pseudonymous id from their own topic)."""
    return kind is not OrgKind.COMMISSIONER


def access(org_id: str, kind: OrgKind, facts: ReferralFacts | None) -> Access | None:
    """The caller's access to one referral its view holds (``facts``); None: no access.

    Pure: decided only from the arguments, so tests can enumerate journeys cheaply.
    """
    if facts is None or not individual_rows_allowed(kind):
        return None
    closed = facts.status == Status.CLOSED
    if facts.service_org == org_id and facts.status in OPEN_WITH_SERVICE:
        return Access("link-worker", ALL_PERSON_FIELDS)
    if facts.service_org == org_id and closed:
        return Access("link-worker", ())
    if facts.referrer_org == org_id:
        return Access("referrer", ALL_PERSON_FIELDS)
    if org_id in facts.providers:
        return Access("provider", () if closed else ("name",))
    return Access("former-service", ())


def facts_of(row: dict[str, object], providers: Iterable[str]) -> ReferralFacts:
    """``ReferralFacts`` from a ``{schema}.referrals`` row and its activities' providers."""
    return ReferralFacts(
        referrer_org=_text(row.get("referrer_org")),
        service_org=_text(row.get("service_org")),
        status=str(row.get("status") or ""),
        providers=frozenset(providers),
    )


def facts_of_state(state: Referral) -> ReferralFacts:
    """``ReferralFacts`` from a referral's folded lifecycle (``domain.lifecycle``): what a
    view holding exactly those events would show."""
    p = state.parties
    return ReferralFacts(
        referrer_org=p.referrer_org,
        service_org=p.service_org,
        status=str(state.status or Status.REFERRED),
        providers=frozenset(p.providers),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)
