"""Field types every request model uses, so that no input can reach the database unchecked.

- ``WorldTime``: when something happened, with its UTC offset. Offsets beyond ±15:59
  (which PostgreSQL refuses) and years before 2000 or more than 5 minutes in the future
  are 422 here, naming the field, instead of a 500 from the database later.
- ``BirthDate``: not before 1900-01-01, not in the future.
- ``Count``/``Flag``/``Score``: strict JSON types: ``true`` is not a number of minutes
  and ``"45"`` is not an integer (no silent coercion).
- ``Slug``: an identifier from the directory (lower-case letters, digits, ``-``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StrictBool

EARLIEST_WORLD_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""Nothing in a social-prescribing journey this product records predates 2000."""
EARLIEST_BIRTH = date(1900, 1, 1)
CLOCK_SKEW = timedelta(minutes=5)
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)
"""PostgreSQL's limit for a timestamptz offset (ISO 8601 allows ±23:59)."""


def plausible_time(value: datetime) -> datetime:
    """Refuse an instant PostgreSQL cannot store or no journey can contain."""
    offset = value.utcoffset()
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        raise ValueError("UTC offset must be within ±15:59")
    if value < EARLIEST_WORLD_TIME:
        raise ValueError("must not be before 2000-01-01")
    if value > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError("must not be in the future")
    return value


def plausible_birth(value: date) -> date:
    if value < EARLIEST_BIRTH:
        raise ValueError("must not be before 1900-01-01")
    if value > datetime.now(UTC).date():
        raise ValueError("must not be in the future")
    return value


def text_only(value: object) -> object:
    """Dates and times arrive as ISO 8601 text: a number (a Unix time?) is refused."""
    if not isinstance(value, str | datetime | date):
        raise ValueError("must be ISO 8601 text")
    return value


def number_only(value: object) -> object:
    """A JSON number: ``true`` and ``"45"`` are refused (no silent coercion)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


WorldTime = Annotated[
    AwareDatetime,
    BeforeValidator(text_only),
    AfterValidator(plausible_time),
    Field(description="ISO 8601 with a UTC offset within ±15:59; from 2000 on, not in the future"),
]
BirthDate = Annotated[
    date,
    BeforeValidator(text_only),
    AfterValidator(plausible_birth),
    Field(description="1900-01-01 to today"),
]
Count = Annotated[int, BeforeValidator(number_only)]
"""An integer; 45.0 is accepted (JSON Schema counts it as an integer), 45.5 is not."""
Flag = StrictBool
Score = Annotated[float, BeforeValidator(number_only)]
Slug = Annotated[str, Field(min_length=2, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
"""The directory's id spelling (``directory.model.SLUG``)."""
