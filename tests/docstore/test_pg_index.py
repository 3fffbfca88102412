"""The backoff of HNSW index builds that crashed the database server (pg_index)."""

from __future__ import annotations

import pytest

from embedgate.docstore.pgvector.index import MAX_RETRY_S, IndexBackoff
from embedgate.errors import EmbedgateError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_doubles_up_to_an_hour_and_a_success_ends_it() -> None:
    clock = Clock()
    backoff = IndexBackoff(60.0, clock)
    backoff.check(384)  # nothing crashed yet
    waits = []
    for _ in range(9):
        error = backoff.failed(384, "OperationalError: server closed the connection")
        waits.append(int(error.headers["Retry-After"]))
        with pytest.raises(EmbedgateError) as refused:
            backoff.check(384)
        assert refused.value.code == "vector_index_unavailable"
        backoff.check(768)  # other dimension counts are not held back
        clock.now += waits[-1] - 1
        with pytest.raises(EmbedgateError):
            backoff.check(384)  # still a second to go
        clock.now += 1
        backoff.check(384)  # over: the next build may run
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert MAX_RETRY_S == 3600
    assert backoff.state() == [{"dimensions": 384, "crashes": 9, "retry_in_s": 0}]
    backoff.succeeded(384)
    assert backoff.state() == []
    assert int(backoff.failed(384, "again").headers["Retry-After"]) == 60  # starts over
