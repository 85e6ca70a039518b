"""Why a command was refused, in domain words; the web layer maps it to a status code.

Shared by every service (it carries no service's logic), so that a domain module can
refuse without knowing about HTTP.
"""

from __future__ import annotations

from typing import Any


class Refusal(Exception):
    """A command that cannot be carried out, with a reason a partner can act on."""

    status = 400
    error = "refused"

    def __init__(
        self, reason: str, *, field: str | None = None, state: dict[str, Any] | None = None
    ) -> None:
        super().__init__(reason)
        self.reason, self.field, self.state = reason, field, state


class Invalid(Refusal):
    status, error = 422, "invalid"


class Forbidden(Refusal):
    status, error = 403, "forbidden"


class NotFound(Refusal):
    status, error = 404, "not-found"


class Conflict(Refusal):
    """Not possible in the current state; the state is returned so the caller can see why."""

    status, error = 409, "conflict"


class NotYet(Refusal):
    """The service has not yet heard of what the caller did elsewhere; retry shortly."""

    status, error = 409, "not-yet-known"
