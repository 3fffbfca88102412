"""The official `openai` SDK as the client: in-process, and against `embedgate serve`."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import AppClient
from tests.helpers import ServerProcess

TEXTS = ["first document", "second, longer document about vector search", "第三个文档"]


def as_matrix(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    return np.asarray([row.embedding for row in response.data], dtype=np.float64)


@pytest.mark.anyio
async def test_async_sdk_in_process(default_app: AppClient) -> None:
    transport = httpx.ASGITransport(app=default_app.app)
    async with httpx.AsyncClient(transport=transport) as http:
        sdk = openai.AsyncOpenAI(
            base_url="http://embedgate.test/v1", api_key=default_app.key, http_client=http
        )
        results = await asyncio.gather(
            *(sdk.embeddings.create(model="all-minilm-l6-v2", input=t) for t in TEXTS)
        )
        together = await sdk.embeddings.create(model="all-minilm-l6-v2", input=TEXTS)
        models = await sdk.models.list()
    singles = np.vstack([as_matrix(r) for r in results])
    np.testing.assert_allclose(as_matrix(together), singles, atol=1e-5)
    assert [m.id for m in models.data] == ["all-minilm-l6-v2"]


@pytest.mark.slow
def test_sdk_against_a_real_server(served: ServerProcess) -> None:
    sdk = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.key, max_retries=0)
    default_b64 = sdk.embeddings.create(model="all-minilm-l6-v2", input=TEXTS)
    floats = sdk.embeddings.create(model="all-minilm-l6-v2", input=TEXTS, encoding_format="float")
    # The SDK asks for base64 by default and decodes it: the same bits as the float path.
    assert as_matrix(default_b64).tobytes() == as_matrix(floats).tobytes()
    np.testing.assert_allclose(np.linalg.norm(as_matrix(floats), axis=1), 1.0, atol=1e-6)
    assert default_b64.usage.prompt_tokens == floats.usage.prompt_tokens > 0

    short = sdk.embeddings.create(model="all-minilm-l6-v2", input=TEXTS, dimensions=64)
    prefix = as_matrix(floats)[:, :64]
    prefix /= np.linalg.norm(prefix, axis=1, keepdims=True)
    np.testing.assert_allclose(as_matrix(short), prefix, atol=1e-6)

    singles = np.vstack(
        [as_matrix(sdk.embeddings.create(model="all-minilm-l6-v2", input=t)) for t in TEXTS]
    )
    np.testing.assert_allclose(as_matrix(floats), singles, atol=1e-5)


@pytest.mark.slow
def test_sdk_errors_from_a_real_server(served: ServerProcess) -> None:
    sdk = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.embeddings.create(model="all-minilm-l6-v2", input="x", dimensions=8)
    assert bad.value.code == "invalid_value"
    assert bad.value.param == "dimensions"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.embeddings.create(model="nope", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as instruction:
        sdk.embeddings.create(
            model="all-minilm-l6-v2", input="x", extra_body={"instruction": "Find answers"}
        )
    assert instruction.value.code == "instruction_not_supported"


@pytest.mark.slow
def test_the_server_writes_private_files(served: ServerProcess) -> None:
    data_dir = served.log_path.parent / served.log_path.name.removesuffix("-server.log")
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"embedgate.db", "secret.key"}  # admin key: from env
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.slow
def test_server_logs_no_inputs(served: ServerProcess) -> None:
    secret_text = "confidential-merger-plan-7781"
    auth = {"Authorization": f"Bearer {served.key}"}
    url = f"{served.url}/v1/embeddings"
    response = httpx.post(url, json={"input": secret_text}, headers=auth)
    assert response.status_code == 200
    bad = httpx.post(url, json={"input": [secret_text, 5]}, headers=auth)
    assert bad.status_code == 400
    log = served.log()
    assert "POST /v1/embeddings 200" in log
    assert f"tenant=test-tenant key={served.key[: len('tenant_test-tenant_') + 4]}" in log
    assert secret_text not in log
    assert served.key not in log
    assert served.key.split("_")[-1] not in log
    assert "API key authentication enabled" in log


@pytest.mark.slow
def test_ps_never_shows_the_admin_key(served: ServerProcess) -> None:
    from tests.conftest import ADMIN_KEY

    cmdline = Path(f"/proc/{served.process.pid}/cmdline").read_bytes()
    assert b"serve" in cmdline
    assert ADMIN_KEY.encode() not in cmdline
