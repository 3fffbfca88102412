"""The per-request caps on characters and token ids of /v1/embeddings."""

from __future__ import annotations

from typing import Any

import pytest

from embedgate.api.input_caps import RequestCaps, measure
from embedgate.errors import EmbedgateError

pytestmark = pytest.mark.anyio


def test_measure_counts_every_input_shape() -> None:
    assert measure("hello") == (5, 0)
    assert measure(["ab", "cde"]) == (5, 0)
    assert measure([1, 2, 3]) == (0, 3)
    assert measure([[1, 2], [3]]) == (0, 3)
    assert measure(None) == (0, 0)
    assert measure([]) == (0, 0)
    assert measure(["x"] * 5000) == (0, 0)  # too many inputs: validation refuses it


@pytest.mark.parametrize(
    ("data", "what"),
    [({"input": "x" * 11}, "characters"), ({"input": [[1] * 6, [2] * 6]}, "token ids"),
     ({"input": ["x" * 6, "y" * 6]}, "characters"), ({"input": [7] * 11}, "token ids")],
)  # fmt: skip
def test_over_a_cap_is_a_400_on_input(data: dict[str, Any], what: str) -> None:
    with pytest.raises(EmbedgateError) as refused:
        RequestCaps(max_chars=10, max_token_ids=10).check(data)
    error = refused.value
    assert (error.status, error.code, error.param) == (400, "input_too_large", "input")
    assert what in error.message


def test_at_the_cap_passes() -> None:
    caps = RequestCaps(max_chars=10, max_token_ids=10)
    caps.check({"input": "x" * 10})
    caps.check({"input": [[1] * 5, [2] * 5]})
    caps.check({"input": 12})  # not an input shape: left to validation
    caps.check([1, 2])


async def test_caps_are_settings_checked_before_validation(app_factory: Any) -> None:
    app = await app_factory(warmup=False, max_request_chars=100, max_request_token_ids=50)
    over = await app.http.post("/v1/embeddings", json={"input": ["a" * 60, "b" * 60]})
    assert over.status_code == 400
    assert over.json()["error"]["code"] == "input_too_large"
    ids = await app.http.post("/v1/embeddings", json={"input": [[1] * 30, [2] * 30]})
    assert ids.json()["error"]["code"] == "input_too_large"
    assert (await app.http.post("/v1/embeddings", json={"input": "a" * 90})).status_code == 200
    big = {"input": [[1] * 40], "pad": "x" * 100_000}  # a large body: parsed on the pool
    assert (await app.http.post("/v1/embeddings", json=big)).status_code == 200
    bad = {"input": [[1, 99_999_999]], "pad": "x" * 100_000}
    refused = await app.http.post("/v1/embeddings", json=bad)
    assert refused.status_code == 400
    assert "outside the vocabulary" in refused.json()["error"]["message"]


@pytest.mark.parametrize("bad", [-1, 30522, 2**63])
async def test_the_vocabulary_check_names_the_input(app_factory: Any, bad: int) -> None:
    app = await app_factory(warmup=False)
    refused = await app.http.post("/v1/embeddings", json={"input": [[1, 2], [3, bad, 4]]})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["message"].startswith("input[1] has token ids outside")
