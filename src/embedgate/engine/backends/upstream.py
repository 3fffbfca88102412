"""Forward to OpenAI-compatible servers (SGLang, vLLM, TEI, Infinity, Ollama, embedgate).

embedgate formats prompts and truncates dimensions itself, so the upstream only ever sees
plain inputs and is asked for full-size float vectors: every backend gives the same answer.
The base URLs, their windows and their health are an ``EndpointPool``; the model's
scheduler (``engine/dispatch.py``) decides what goes where and when.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from embedgate.config.models import UpstreamModel
from embedgate.engine.backends.base import BackendInfo, Embedded, ModelInput, Vectors, l2_normalize
from embedgate.engine.backends.decoding import TokenDecoder
from embedgate.engine.backends.http import ConnectionLost, ReadTimeout, Unreachable, UpstreamHttp
from embedgate.engine.backends.tokenizing import TokenizerRunner
from embedgate.engine.endpoints import (
    EndpointPool,
    UpstreamFailed,
    UpstreamRefused,
    UpstreamUnreachable,
    WindowConfig,
    send,
)
from embedgate.errors import EmbedgateError
from embedgate.keyfiles import read_secret_file

log = logging.getLogger("embedgate.engine.backends.upstream")

REFUSING_STATUS = frozenset({429, 503})  # the engine is busy: send it less, try another
FAILING_STATUS = frozenset({502, 504})  # something between us and it failed: try another


class UpstreamBackend:
    """A pool of base URLs: the least loaded healthy one first, fail over on errors."""

    coalesce = False
    lanes = 1  # requests pass through; the upstream engine schedules them
    pipelined = False
    answers = "embeddings"  # what the engines answer, for error messages
    inputs_param = "input"  # the request field an engine's 4xx is about

    def __init__(self, name: str, spec: UpstreamModel) -> None:
        self.name = name
        self._spec = spec
        initial = min(max(spec.max_batch_size, spec.min_in_flight), spec.max_in_flight)
        window = WindowConfig(spec.min_in_flight, spec.max_in_flight, initial,
                              max_tokens=spec.max_tokens_in_flight)  # fmt: skip
        self.pool = EndpointPool([url.rstrip("/") for url in spec.base_urls], window)
        self._client: UpstreamHttp | None = None
        self._tokenizer: TokenizerRunner | None = None
        self._decoder: TokenDecoder | None = None
        self._info = BackendInfo(
            dimensions=spec.dimensions,
            max_tokens=spec.max_tokens or 8192,
            family="qwen3" if spec.family == "qwen3" else "generic",
            vocab_size=None,
            device="upstream",
        )

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def max_retries(self) -> int:
        return self._spec.max_retries

    @property
    def batch_size(self) -> int:
        """Most inputs in one upstream request."""
        return self._spec.max_batch_size

    async def start(self) -> None:
        headers = {"User-Agent": "embedgate"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = UpstreamHttp(
            headers, timeout=self._spec.timeout, connect_timeout=min(5.0, self._spec.timeout)
        )
        await self._client.start()
        if self._spec.tokenizer:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self._spec.tokenizer)
            self._tokenizer = TokenizerRunner(tokenizer, self.name)
            self._decoder = TokenDecoder(tokenizer, self.name)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        for runner in (self._tokenizer, self._decoder):
            if runner is not None:
                runner.close()

    def can_tokenize(self) -> bool:
        return self._tokenizer is not None

    async def tokenize(
        self, texts: Sequence[str], truncate_to: int | None, tenant: str = ""
    ) -> list[list[int]]:
        assert self._tokenizer is not None, "no tokenizer configured"
        return await self._tokenizer(texts, truncate_to, tenant)

    async def decode(self, id_lists: Sequence[Sequence[int]]) -> list[str]:
        assert self._decoder is not None, "no tokenizer configured"
        return await self._decoder(id_lists)

    async def embed(self, inputs: Sequence[ModelInput], *, lane: int = 0) -> Embedded:
        """Without the scheduler (warm-up, tests): chunks of ``max_batch_size``, each to the
        least loaded URL, whatever its window."""
        size = self._spec.max_batch_size
        chunks = [inputs[i : i + size] for i in range(0, len(inputs), size)]
        parts = await asyncio.gather(*(self._embed_chunk(chunk) for chunk in chunks))
        vectors = np.concatenate([part.vectors for part in parts])
        return Embedded(vectors, sum(part.prompt_tokens for part in parts))

    async def embed_at(self, url: str, inputs: Sequence[ModelInput]) -> Embedded:
        """One upstream request; ``UpstreamRefused``/``UpstreamFailed`` where another URL
        may succeed."""
        payload = {
            "model": self._spec.upstream_model or self.name,
            "input": _wire_inputs(inputs),
            "encoding_format": "base64",
        }
        return self._parse(await self._post(url, "/embeddings", payload), len(inputs), inputs)

    def health(self) -> dict[str, Any]:
        up = {url: entry["healthy"] for url, entry in self.pool.status().items()}
        return {"backend": "openai", "ready": any(up.values()), "upstreams": up}

    def _api_key(self) -> str | None:
        if self._spec.api_key_env:
            value = os.environ.get(self._spec.api_key_env, "").strip()
            if not value:
                raise ValueError(
                    f"model {self.name}: api_key_env names {self._spec.api_key_env}, "
                    "which is not set"
                )
            return value
        if self._spec.api_key_file:
            return read_secret_file(self._spec.api_key_file)
        return None

    async def _embed_chunk(self, chunk: Sequence[ModelInput]) -> Embedded:
        endpoint = self.pool.pick() or self.pool.fallback(frozenset())
        full = self.pool.sent(endpoint, len(chunk), sum(item.n_tokens for item in chunk))
        return await send(self.pool, self.embed_at, endpoint, chunk, full=full,
                          retries=self._spec.max_retries)  # fmt: skip

    async def _post(self, url: str, path: str, payload: dict[str, Any]) -> Any:
        assert self._client is not None, "backend not started"
        try:
            status, body = await self._client.post(url + path, orjson.dumps(payload))
        except Unreachable as exc:
            log.warning("upstream %s unreachable: %s", url, exc)
            raise UpstreamUnreachable("connection refused or timed out") from exc
        except ReadTimeout as exc:
            raise EmbedgateError(
                504, f"The upstream server did not answer within {self._spec.timeout:g}s.",
                code="upstream_timeout",
            ) from exc  # fmt: skip
        except ConnectionLost as exc:  # reset or closed mid-request: safe to resend
            log.warning("upstream %s failed: %s", url, exc)
            raise UpstreamFailed("connection lost") from exc
        if status in REFUSING_STATUS | FAILING_STATUS:
            log.warning("upstream %s answered %d", url, status)
            failure = UpstreamRefused if status in REFUSING_STATUS else UpstreamFailed
            raise failure(f"HTTP {status}")
        if status >= 500:
            raise EmbedgateError(
                502, f"The upstream server failed (HTTP {status}).", code="upstream_error"
            )
        if status >= 400:
            raise _client_error(status, body, self.inputs_param)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise malformed(self.answers) from exc

    def _parse(self, body: Any, expected: int, chunk: Sequence[ModelInput]) -> Embedded:
        try:
            rows = sorted(body["data"], key=lambda row: row["index"])
            vectors = np.stack([_decode(row["embedding"]) for row in rows])
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed(self.answers) from exc
        if vectors.shape != (expected, self._info.dimensions):
            raise EmbedgateError(
                502,
                f"The upstream server returned vectors of shape {vectors.shape}, expected "
                f"({expected}, {self._info.dimensions}); check `dimensions` in the model config.",
                code="upstream_error",
            )
        return Embedded(l2_normalize(vectors), _prompt_tokens(body, chunk))


def _wire_inputs(chunk: Sequence[ModelInput]) -> list[str] | list[list[int]]:
    """Texts, unless one input must travel as token ids (sent as such, or truncated): then
    all do, as OpenAI's API takes no mix. Text is only missing where ids exist for all."""
    if all(item.text is not None for item in chunk):
        return [item.text or "" for item in chunk]
    return [list(item.token_ids or ()) for item in chunk]


def _prompt_tokens(body: Any, chunk: Sequence[ModelInput]) -> int:
    """Our own exact count when a local tokenizer made one, else what the upstream says."""
    if all(item.token_ids is not None for item in chunk):
        return sum(item.n_tokens for item in chunk)
    usage = body.get("usage") if isinstance(body, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else sum(item.n_tokens for item in chunk)


def _decode(embedding: Any) -> Vectors:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)


def malformed(answers: str) -> EmbedgateError:
    return EmbedgateError(
        502, f"The upstream server sent a malformed {answers} response.", code="upstream_error"
    )


def _client_error(status: int, body: bytes, param: str) -> EmbedgateError:
    if status in (401, 403):
        return EmbedgateError(
            502, "The upstream server refused embedgate's credentials; check the upstream key.",
            code="upstream_auth_error",
        )  # fmt: skip
    message = _error_message(body) or f"HTTP {status}"
    return EmbedgateError(400, f"The upstream server rejected the input: {message}",
                          param=param, code="upstream_rejected")  # fmt: skip


def _error_message(body: bytes) -> str | None:
    """The engine's own words: OpenAI's ``{"error": {"message"}}``, TEI's ``{"error": str}``,
    or vLLM's older ``{"message"}``."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    error = parsed.get("error")
    message = error.get("message") if isinstance(error, dict) else error or parsed.get("message")
    return str(message)[:500] if message else None
