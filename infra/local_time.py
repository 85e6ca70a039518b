"""The alliance's one calendar: every date derived from an instant uses its time zone.

An instant (an aware ``datetime``) has no date until a time zone is chosen. The alliance
chooses one (``REFERRALNET_TIMEZONE``, default ``Europe/London``), and every date the
product derives — age at referral, report boundaries, days to first contact, per-month
figures — is read on that zone's calendar *for that date* (BST in July, GMT in January,
whatever today is), never on the caller's offset nor on the server's ``TZ``. So one
instant written with any offset gives one answer.

Text that names no zone (``2026-07-01`` or ``2026-07-01T09:30``) means the alliance's
local wall-clock time. A wall-clock time that does not exist (the hour skipped when the
clocks go forward) is read with the offset in force before the change (``fold=0``), and
one that happens twice (the hour repeated in autumn) as its first occurrence.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from referralnet.settings import settings

DEFAULT_TIMEZONE = "Europe/London"
TIMEZONE_VARIABLE = "REFERRALNET_TIMEZONE"

# ISO 8601 extended format only: a bare number ("20260701", "1700000000") is refused,
# since it is as likely to be a Unix time or a typo as a date.
_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
    r"(?P<offset>Z|z|[+-]\d{2}:?\d{2})?)?$"
)
EARLIEST_YEAR, LATEST_YEAR = 1900, 2999


class NotADate(ValueError):
    """Text that is not an ISO 8601 date or date-time; the message says what is expected."""


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` naming the setting if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{TIMEZONE_VARIABLE}: {name!r} is not an IANA time zone (e.g. Europe/London)"
        ) from None


def alliance_zone() -> ZoneInfo:
    """The alliance's time zone (setting ``REFERRALNET_TIMEZONE``).

    Asked each time (``ZoneInfo`` caches the zone itself), so every process of a stack and
    the CLI agree by inheriting one environment.
    """
    return zone_named(settings().timezone)


def local(instant: datetime, zone: ZoneInfo) -> datetime:
    """``instant`` as the alliance's wall-clock time; a naive instant is a bug (``ValueError``)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("an instant must carry its offset; naive datetimes have no date")
    return instant.astimezone(zone)


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    """The calendar date of ``instant`` in the alliance's zone."""
    return local(instant, zone).date()


def month_of(instant: datetime, zone: ZoneInfo) -> str:
    """``YYYY-MM`` of ``instant`` on the alliance's calendar."""
    return local(instant, zone).strftime("%Y-%m")


def start_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of ``day`` in the alliance's zone (an aware datetime)."""
    return datetime.combine(day, time(0), tzinfo=zone)


def add_local_days(instant: datetime, days: int, zone: ZoneInfo) -> datetime:
    """``days`` calendar days after ``instant`` at the same wall-clock time (7 days from
    09:00 on the Friday before the clocks change is 09:00, not 08:00 or 10:00)."""
    wall = local(instant, zone).replace(tzinfo=None) + timedelta(days=days)
    return wall.replace(tzinfo=zone)


MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)
"""The widest offset PostgreSQL stores in a timestamptz (and the API accepts)."""


def parse_instant(text: str, zone: ZoneInfo) -> datetime:
    """An ISO 8601 date or date-time as an aware instant.

    ``2026-07-01`` is the first instant of that day in ``zone``; ``2026-07-01T09:30`` is
    09:30 wall-clock in ``zone``; ``2026-07-01T09:30+02:00`` / ``...Z`` is that instant.
    Raises ``NotADate`` for anything else (bare numbers, other formats, years outside
    1900-2999, impossible dates).
    """
    match = _ISO.match(text.strip())
    if match is None:
        raise NotADate(f"not a date: {text[:24]!r} (use YYYY-MM-DD or ISO 8601 date-time)")
    try:
        day = date.fromisoformat(match["date"])
        if match["time"] is None:
            parsed = datetime.combine(day, time(0))
        else:
            offset = match["offset"] or ""
            parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}{offset.upper()}")
    except ValueError as exc:
        raise NotADate(f"not a real date or time: {text[:24]!r} ({exc})") from None
    if not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
        raise NotADate(f"{text[:24]!r} is outside {EARLIEST_YEAR}-{LATEST_YEAR}")
    offset = parsed.utcoffset()
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        # ISO 8601 allows up to ±23:59, PostgreSQL's timestamptz ±15:59, and the body
        # fields refuse beyond that too (web.fields): one rule for every time input.
        raise NotADate(f"{text[:32]!r}: the UTC offset must be within ±15:59")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)
