"""Speeds in ``tests/unit``: every test here is ``domain`` (pure) unless its module says
``service`` (handlers over in-memory fakes); ``make unit`` runs both, no I/O either way."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("service") is None and "tests/unit/" in item.nodeid:
            item.add_marker(pytest.mark.domain)
