"""The search playground's rerank option in headless Chromium, against a real
`embedgate serve` with two tiny rerank models (and against one with none)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
import yaml
from playwright.sync_api import Page, expect

from tests.conftest import ADMIN_KEY
from tests.console.conftest import Console, Watch, make_tenant, screenshot
from tests.console.test_console_browser import KNOWLEDGE_BASE, log_in
from tests.helpers import start_server
from tests.rerank.conftest import rerank_models
from tests.rerank_tiny import build_tiny_cross_encoder, build_tiny_qwen3_reranker

pytestmark = pytest.mark.slow
QUERY = "How many days of paid leave do employees get?"


@pytest.fixture(scope="module")
def reranking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A server whose registry has the bundled model and two rerank models."""
    root = tmp_path_factory.mktemp("console-rerank")
    qwen3 = build_tiny_qwen3_reranker(root / "qwen3-reranker")
    cross = build_tiny_cross_encoder(root / "cross-encoder")
    config = root / "embedgate.yaml"
    config.write_text(yaml.safe_dump({"models": rerank_models(qwen3, cross)}, sort_keys=False))
    env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_CONFIG": str(config)}
    with start_server(root / "data", env=env) as server:
        acme = make_tenant(server.url, "acme")
        yield Console(server, acme, make_tenant(server.url, "other"))


def rerank_scores(page: Page) -> list[float]:
    return [float(s) for s in page.get_by_test_id("search-result").evaluate_all(
        "items => items.map(item => item.dataset.rerankScore)")]  # fmt: skip


def build_handbook(page: Page) -> None:
    page.get_by_test_id("collection-name").fill("handbook")
    page.get_by_test_id("collection-create").click()
    expect(page.get_by_test_id("collection-select")).to_have_value("handbook")
    page.get_by_test_id("kb-input").fill("\n".join(KNOWLEDGE_BASE))
    page.get_by_test_id("kb-submit").click()
    expect(page.get_by_test_id("kb-status")).to_contain_text(f"Indexed {len(KNOWLEDGE_BASE)}")


def test_the_playground_reranks_with_a_chosen_model(
    page: Page, reranking: Console, watch: Watch
) -> None:
    log_in(page, reranking, reranking.acme_key)
    # A collection embeds: its model list leaves the rerank models out.
    options = page.get_by_test_id("collection-model").locator("option")
    expect(options).to_have_text([re.compile("^all-minilm-l6-v2")])
    build_handbook(page)

    model = page.get_by_test_id("rerank-model")
    expect(model.locator("option")).to_have_text(["Off", "qwen3-rerank", "cross"])
    expect(page.get_by_test_id("rerank-candidates")).to_be_disabled()
    model.select_option("qwen3-rerank")
    expect(page.get_by_test_id("rerank-note")).to_contain_text("rerank score")
    page.get_by_test_id("rerank-candidates").fill("6")
    page.get_by_test_id("top-k").fill("3")
    page.get_by_test_id("query-input").fill(QUERY)
    page.get_by_test_id("query-input").press("Enter")
    results = page.get_by_test_id("search-result")
    expect(results).to_have_count(3)
    expect(results.first.get_by_test_id("rerank-score")).to_be_visible()
    expect(results.first.get_by_test_id("score")).to_be_visible()  # the retrieval score too
    expect(page.locator(".results-summary")).to_contain_text("reranking")

    # The page shows what the API answers for the same request.
    api = httpx.post(
        f"{reranking.url}/v1/collections/handbook/search", timeout=60,
        headers={"Authorization": f"Bearer {reranking.acme_key}"},
        json={"query": QUERY, "top_k": 3, "mode": "vector",
              "rerank": {"model": "qwen3-rerank", "candidates": 6}},
    ).json()["data"]  # fmt: skip
    shown = results.evaluate_all("items => items.map(item => item.dataset.id)")
    assert shown == [hit["id"] for hit in api]
    assert rerank_scores(page) == pytest.approx([hit["rerank_score"] for hit in api], abs=1e-6)
    texts = results.get_by_test_id("rerank-score").all_inner_texts()
    assert texts == [f"{hit['rerank_score']:.3f}" for hit in api]
    retrieval = results.get_by_test_id("score").all_inner_texts()
    assert retrieval == [f"{hit['score']:.3f}" for hit in api]
    screenshot(page, "tenant-rerank")
    page.set_viewport_size({"width": 375, "height": 812})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the narrow layout scrolls sideways"
    screenshot(page, "tenant-rerank-narrow")
    page.set_viewport_size({"width": 1440, "height": 1000})

    # Fewer candidates than results: the server's 400, shown as it says.
    watch.expected.add((400, "/v1/collections/handbook/search"))
    page.get_by_test_id("rerank-candidates").fill("2")
    page.get_by_test_id("search-submit").click()
    expect(page.locator(".search-card .notice.error")).to_contain_text("rerank.candidates")

    # Off: a plain search again, one score per result.
    model.select_option("")
    expect(page.get_by_test_id("rerank-candidates")).to_be_disabled()
    page.get_by_test_id("search-submit").click()
    expect(results.first.get_by_test_id("rerank-score")).to_have_count(0)
    expect(results).to_have_count(3)
    assert all(value is None for value in results.evaluate_all(
        "items => items.map(item => item.dataset.rerankScore ?? null)"))  # fmt: skip


def test_a_plan_sees_only_the_rerank_models_it_allows(page: Page, reranking: Console) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    policy = {"policy": {"allowed_models": ["all-minilm-l6-v2", "cross"]}}
    httpx.patch(f"{reranking.url}/admin/tenants/other", json=policy,
                headers=admin).raise_for_status()  # fmt: skip
    log_in(page, reranking, reranking.other_key)
    options = page.get_by_test_id("rerank-model").locator("option")
    expect(options).to_have_text(["Off", "cross"])


def test_without_a_rerank_model_the_option_says_why(page: Page, console: Console) -> None:
    log_in(page, console, console.acme_key)
    expect(page.get_by_test_id("rerank-model")).to_be_disabled()
    expect(page.get_by_test_id("rerank-candidates")).to_be_disabled()
    expect(page.get_by_test_id("rerank-note")).to_contain_text("no rerank model")
