"""Structured JSON logs, with a last line of defence against personal data."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from referralnet.settings import settings

PERSONAL_KEYS = frozenset(
    {"name", "nhs_number", "phone", "email", "address", "notes", "date_of_birth", "person"}
)


def redact_personal(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace any value logged under a personal-data key with a marker."""
    for key in PERSONAL_KEYS & event_dict.keys():
        event_dict[key] = "<redacted>"
    return event_dict


def configure_logging(level: str | None = None) -> None:
    """JSON lines on stderr; level from ``REFERRALNET_LOG_LEVEL`` (default info)."""
    name = (level or settings().log_level).upper()
    numeric = getattr(logging, name, logging.INFO)
    logging.basicConfig(level=max(numeric, logging.WARNING), format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_personal,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
