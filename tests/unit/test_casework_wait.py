"""When a casework call waits for routing's answer to reach outcomes, and when not."""

from __future__ import annotations


def test_casework_waits_for_routing_only_while_the_case_can_still_become_yours() -> None:
    from datetime import UTC, datetime
    from uuid import uuid4

    from services.outcomes.domain import Case
    from services.outcomes.domain import may_still_become_yours as _may_still_become_yours

    def case(status: str, service: str | None) -> Case:
        at = datetime(2026, 1, 5, tzinfo=UTC)
        return Case(uuid4(), "gp", at, service, status, None, None, None, False, None)

    # outcomes' own spelling of a case it has only seen created is "new"
    for waiting in (case("new", None), case("routed", "lw"), case("routed", None)):
        assert _may_still_become_yours(waiting, "lw"), waiting.status
    for done in (
        case("accepted", "lw"),
        case("closed", "lw"),
        case("closed", "other"),
        case("escalated", None),
        case("accepted", "other"),
    ):
        assert not _may_still_become_yours(done, "lw"), (done.status, done.service_org)
