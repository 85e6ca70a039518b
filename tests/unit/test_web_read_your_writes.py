"""The web app's read-your-own-writes wait (issue 15): poll the caller's view for the
event just written, with a deadline; past it the page says "still arriving"."""

from __future__ import annotations

import time

from web.app.client import Answer, has_event, poll

EVENT = "5f0c3f7e-0000-4000-8000-000000000001"


def _detail(*event_ids: str) -> Answer:
    timeline = [{"event_id": e, "type": "session-held"} for e in event_ids]
    return Answer(200, {"view": {"details": {"timeline": timeline}}})


async def test_the_wait_ends_when_the_view_holds_the_event() -> None:
    answers = iter([Answer(409, {"reason": "not yet"}), _detail(), _detail("other", EVENT)])
    reads = 0

    async def read() -> Answer:
        nonlocal reads
        reads += 1
        return next(answers)

    answer = await poll(read, has_event(EVENT), seconds=5)
    assert has_event(EVENT)(answer) and reads == 3


async def test_past_the_deadline_the_last_answer_comes_back_not_arrived() -> None:
    async def read() -> Answer:
        return _detail("other")

    started = time.monotonic()
    answer = await poll(read, has_event(EVENT), seconds=0.3)
    assert not has_event(EVENT)(answer)
    assert 0.3 <= time.monotonic() - started < 2


def test_field_reasons_come_from_the_api_error_body() -> None:
    refused = Answer(
        422,
        {
            "error": "invalid-request",
            "reason": "the request has invalid fields",
            "fields": [{"field": "person.date_of_birth", "reason": "must not be in the future"}],
        },
    )
    assert refused.fields == {"person.date_of_birth": "must not be in the future"}
    assert not refused.ok and refused.reason == "the request has invalid fields"
