"""Two different people never share a pseudonym unless they share a real NHS number.

Hypothesis draws a crowd of different people, some sharing a real (issued-range) number,
some typing a placeholder or a test-range number, some with none; each goes through the
request model (which refuses numbers that identify nobody) and intake's real
``person_ref_for`` against PostgreSQL. Pseudonyms must be equal exactly for the people
who gave the same accepted number.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.intake import store as intake
from services.intake.pii import PersonVault, person_ref_for
from services.intake.requests import Person
from services.privacy import store as privacy

pytestmark = pytest.mark.infra

REAL = ["9434765919", "4010232137", "6000000014", "4505577104"]
NOBODY = ["9999999999", "0000000000", "1111111111", "9990000018", "5555555555"]
numbers = st.one_of(st.none(), st.sampled_from(REAL), st.sampled_from(NOBODY))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(numbers, min_size=2, max_size=8))
def test_pseudonyms_are_shared_only_through_a_real_nhs_number(
    database_url: str, crowd: list[str | None]
) -> None:
    vault = PersonVault(Fernet.generate_key())  # a fresh key: no links from other examples

    async def refs() -> list[str | None]:
        out: list[str | None] = []
        conn: psycopg.AsyncConnection[Any]
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await privacy.create(conn)  # the keys intake seals people under
            await intake.create(conn)
            for i, number in enumerate(crowd):
                try:
                    person = Person(
                        name=f"Person {i}",
                        date_of_birth=f"19{50 + i}-01-01",  # type: ignore[arg-type]
                        nhs_number=number,
                    )
                except ValidationError:
                    assert number in NOBODY
                    out.append(None)
                    continue
                out.append(await person_ref_for(conn, vault, person.model_dump(mode="json")))
        return out

    pseudonyms = asyncio.run(refs())
    for i, (a, ref_a) in enumerate(zip(crowd, pseudonyms, strict=True)):
        for b, ref_b in list(zip(crowd, pseudonyms, strict=True))[i + 1 :]:
            if ref_a is None or ref_b is None:
                continue
            same_real_number = a is not None and a == b and a in REAL
            assert (ref_a == ref_b) == same_real_number, (a, b)
