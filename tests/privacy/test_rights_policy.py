"""Who receives consent-withdrawn and person-erased, and what withdrawal changes for
outcomes: the distributor's pure policy, no I/O."""

from __future__ import annotations

from services.distributor.policy import Entitlements, deliveries, model_of
from tests.unit.test_distributor_policy import COMMISSIONERS, SECRET, event


def _ent(share: bool) -> Entitlements:
    return Entitlements(
        referrer_org="gp",
        share_outcomes_with_referrer=share,
        created={},
        service_org="lw",
        providers=("walks",),
    )


def _orgs(event_type: str, ent: Entitlements, **data: object) -> set[str]:
    sent = deliveries(event(event_type, **data), ent, COMMISSIONERS, SECRET)
    return {d.org_id for d in sent} - set(COMMISSIONERS)


def test_withdrawal_reaches_referrer_and_service_and_outcomes_then_stop() -> None:
    withdrawal = {
        "consent": "share-outcomes-with-referrer",
        "recorded_by": "gp",
        "withdrawn_at": "2026-01-09T09:00:00+00:00",
    }
    assert _orgs("consent-withdrawn", _ent(True), **withdrawal) == {"gp", "lw"}
    # the lifecycle's parties, which the distributor keeps, stop the sharing
    after = _ent(True).after(model_of(event("consent-withdrawn", **withdrawal)))
    assert after.share_outcomes_with_referrer is False
    outcome = {
        "measure": "ucla3",
        "timepoint": "baseline",
        "items": [2, 2, 2],
        "score": 6,
        "recorded_at": "2026-01-08T09:00:00+00:00",
    }
    assert "gp" in _orgs("outcome-recorded", _ent(True), **outcome)
    # after the withdrawal the distributor holds share=False: the referrer gets no outcome
    assert _orgs("outcome-recorded", _ent(False), **outcome) == {"lw"}


def test_erasure_reaches_everyone_entitled_to_the_referral() -> None:
    erased = {"reason": "objection", "requested_by": "lw", "erased_at": "2026-01-09T09:00:00Z"}
    assert _orgs("person-erased", _ent(False), **erased) == {"gp", "lw", "walks"}
    everyone = deliveries(event("person-erased", **erased), _ent(False), COMMISSIONERS, SECRET)
    assert set(COMMISSIONERS) <= {d.org_id for d in everyone}  # pseudonymised, for counts
