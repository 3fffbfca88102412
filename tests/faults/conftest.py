"""Fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.helpers import FakeEngine, PrivatePostgres


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngine]:
    """The embeddings engine behind the servers under test, where the model does not matter."""
    fake = FakeEngine()
    yield fake
    fake.close()


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server for one test, to stop, crash and restart."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()
