"""POST /v1/embeddings on the real default model, in-process."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
pytestmark = pytest.mark.anyio

TEXTS = ["The cat sat on the mat.", "向量检索很快。", "Embeddings map text to vectors."]


async def embed(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", **body})


def vectors_of(response: httpx.Response) -> np.ndarray:
    data = response.json()["data"]
    assert [row["index"] for row in data] == list(range(len(data)))
    rows = []
    for row in data:
        emb = row["embedding"]
        if isinstance(emb, str):
            rows.append(np.frombuffer(base64.b64decode(emb), dtype="<f4"))
        else:
            rows.append(np.asarray(emb, dtype=np.float64).astype(np.float32))
    return np.stack(rows)


def assert_error(response: httpx.Response, status: int, param: str | None, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["code"] == code
    assert error["message"]


async def test_matches_sentence_transformers(client: httpx.AsyncClient, minilm: Any) -> None:
    response = await embed(client, input=TEXTS)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == "all-minilm-l6-v2"
    assert response.headers["x-request-id"].startswith("req_")
    got = vectors_of(response)
    expected = minilm.encode(TEXTS, normalize_embeddings=True)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


async def test_usage_counts_real_tokenizer_tokens(client: httpx.AsyncClient, minilm: Any) -> None:
    response = await embed(client, input=TEXTS)
    expected = sum(len(minilm.tokenizer(text)["input_ids"]) for text in TEXTS)
    assert response.json()["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


async def test_base64_is_bit_identical_to_float(client: httpx.AsyncClient) -> None:
    as_float = vectors_of(await embed(client, input=TEXTS, encoding_format="float"))
    as_b64 = vectors_of(await embed(client, input=TEXTS, encoding_format="base64"))
    assert as_float.tobytes() == as_b64.tobytes()


async def test_dimensions_truncate_then_renormalise(client: httpx.AsyncClient) -> None:
    full = vectors_of(await embed(client, input=TEXTS))
    short = vectors_of(await embed(client, input=TEXTS, dimensions=64))
    assert short.shape == (3, 64)
    prefix = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, prefix, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("dimensions", [31, 385, 0, -1])
async def test_dimensions_out_of_range(client: httpx.AsyncClient, dimensions: int) -> None:
    response = await embed(client, input="x", dimensions=dimensions)
    assert_error(response, 400, "dimensions", "invalid_value")
    assert "between 32 and 384" in response.json()["error"]["message"]


async def test_batch_keeps_order_and_equals_singles(client: httpx.AsyncClient) -> None:
    texts = [f"document number {i} about topic {i % 7}" + " word" * (i % 13) for i in range(40)]
    batch = vectors_of(await embed(client, input=texts))
    singles = np.stack([vectors_of(await embed(client, input=t))[0] for t in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


async def test_token_id_inputs(client: httpx.AsyncClient, minilm: Any) -> None:
    ids = minilm.tokenizer(TEXTS[0])["input_ids"]
    from_text = vectors_of(await embed(client, input=TEXTS[0]))
    one_list = await embed(client, input=ids)
    many = await embed(client, input=[ids, ids])
    np.testing.assert_allclose(vectors_of(one_list), from_text, atol=1e-6)
    assert vectors_of(many).shape == (2, 384)
    assert one_list.json()["usage"]["prompt_tokens"] == len(ids)


async def test_model_defaults_and_unknown_model(client: httpx.AsyncClient) -> None:
    default = await client.post("/v1/embeddings", json={"input": "hello"})
    assert default.status_code == 200
    assert default.json()["model"] == "all-minilm-l6-v2"
    unknown = await embed(client, input="hello", model="text-embedding-3-large")
    assert_error(unknown, 404, "model", "model_not_found")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": [1, "mixed"]}, "input"),
        ({"input": [[1, 2], "mixed"]}, "input"),
        ({"input": [True, False]}, "input"),
        ({"input": 42}, "input"),
        ({"input": {"text": "x"}}, "input"),
        ({"input": [1.5, 2.5]}, "input"),
        ({}, "input"),
        ({"input": "x", "dimensions": "64"}, "dimensions"),
        ({"input": "x", "dimensions": 64.5}, "dimensions"),
        ({"input": "x", "encoding_format": "binary"}, "encoding_format"),
        ({"input": "x", "model": 7}, "model"),
        ({"input": "x", "instruction": 3}, "instruction"),
    ],
)
async def test_invalid_bodies_are_400_with_param(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_too_many_inputs(client: httpx.AsyncClient) -> None:
    response = await embed(client, input=["x"] * 2049)
    assert_error(response, 400, "input", "invalid_value")
    assert "2048" in response.json()["error"]["message"]


async def test_2048_inputs_are_accepted(client: httpx.AsyncClient) -> None:
    response = await embed(client, input=[f"item {i}" for i in range(2048)], dimensions=32)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2048


async def test_too_long_input_is_400(client: httpx.AsyncClient) -> None:
    response = await embed(client, input=["short", "word " * 400])
    assert_error(response, 400, "input", "context_length_exceeded")
    assert "input[1]" in response.json()["error"]["message"]
    assert "256" in response.json()["error"]["message"]


async def test_token_ids_outside_vocabulary(client: httpx.AsyncClient) -> None:
    response = await embed(client, input=[[101, 30522, 102]])
    assert_error(response, 400, "input", "invalid_value")
    negative = await embed(client, input=[101, -1, 102])
    assert_error(negative, 400, "input", "invalid_value")


async def test_instruction_refused_by_model_without_support(client: httpx.AsyncClient) -> None:
    response = await embed(client, input="x", instruction="Find similar questions")
    assert_error(response, 400, "instruction", "instruction_not_supported")


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"input": ', {"content-type": "application/json"}),
        (b'{"input": "x"', {}),
        (b"\xff\xfe{not utf8}", {"content-type": "application/json"}),
        (b'{"input": NaN}', {"content-type": "application/json"}),
        (b"[" * 5000 + b"]" * 5000, {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
    ],
)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/embeddings", content=content, headers=headers)
    assert_error(response, 400, None, "invalid_json")


async def test_json_without_content_type_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/embeddings",
        content=b'{"input": "hello"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize("body", [b'["hello"]', b"[1]", b'"hello"', b"3", b"null"])
async def test_body_must_be_an_object(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/v1/embeddings", content=body)
    assert_error(response, 400, None, "invalid_value")
    message = response.json()["error"]["message"]
    assert message.startswith("The request body must be a JSON object")


async def test_unknown_route_and_method_use_the_envelope(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing"), 404, None, "not_found")
    assert_error(await client.get("/v1/embeddings"), 405, None, "method_not_allowed")


async def test_truncation_setting(app_factory: Any) -> None:
    app = await app_factory(truncate_inputs=True, warmup=False)
    long_text = "word " * 400
    response = await app.http.post("/v1/embeddings", json={"input": [long_text, "ok"]})
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == 256 + 3
    ids = await app.http.post("/v1/embeddings", json={"input": [101] + [2773] * 500 + [102]})
    assert ids.json()["usage"]["prompt_tokens"] == 256


async def test_deadline_gives_504_and_frees_the_queue(app_factory: Any) -> None:
    app = await app_factory(request_timeout=0.05, warmup=False)
    texts = [f"a fairly long sentence number {i} " * 8 for i in range(512)]
    response = await app.http.post("/v1/embeddings", json={"input": texts})
    assert_error(response, 504, None, "timeout")
    for _ in range(200):
        health = (await app.http.get("/health", headers=ADMIN)).json()
        if health["models"]["all-minilm-l6-v2"]["queue_depth"] == 0:
            break
        await asyncio.sleep(0.05)
    assert health["models"]["all-minilm-l6-v2"]["queue_depth"] == 0


async def test_full_queue_gives_503_with_retry_after(app_factory: Any) -> None:
    app = await app_factory(max_queue_inputs=16, max_inputs_per_request=16, warmup=False)
    body = {"input": [f"queued text {i} " * 20 for i in range(16)]}
    responses = await asyncio.gather(
        *(app.http.post("/v1/embeddings", json=body) for _ in range(3))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200
    assert statuses[-1] == 503
    refused = next(r for r in responses if r.status_code == 503)
    assert_error(refused, 503, None, "overloaded")
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["retry-after-ms"] == "1000"


async def test_oversized_body_is_413(app_factory: Any) -> None:
    app = await app_factory(max_request_bytes=4096, warmup=False)
    response = await app.http.post("/v1/embeddings", json={"input": ["x" * 100] * 100})
    assert_error(response, 413, None, "request_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the stream is counted
        yield b'{"input": ["'
        for _ in range(100):
            yield b"x" * 100
        yield b'"]}'

    streamed = await app.http.post("/v1/embeddings", content=chunks())
    assert_error(streamed, 413, None, "request_too_large")
    ok = await app.http.post("/v1/embeddings", json={"input": ["x" * 100] * 10})
    assert ok.status_code == 200
