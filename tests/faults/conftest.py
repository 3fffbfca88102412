"""Fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.helpers import FakeEngine


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngine]:
    """The embeddings engine behind the servers under test, where the model does not matter."""
    fake = FakeEngine()
    yield fake
    fake.close()
