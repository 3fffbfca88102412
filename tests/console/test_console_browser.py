"""The web console end to end, in headless Chromium against a real `embedgate serve`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

import embedgate
from embedgate.cli.ingest import detect_format, read_documents
from tests.conftest import ADMIN_KEY
from tests.console.conftest import Console, Watch, screenshot

pytestmark = pytest.mark.slow

KNOWLEDGE_BASE = [
    "Employees get 25 days of paid leave every year.",
    "Expenses are reimbursed within 30 days of submission.",
    "员工每年享有二十五天带薪年假。",
    "报销申请在三十天内处理完毕。",
    "The office opens at 9 am and closes at 6 pm.",
    "hi",
    "Parking is free for staff in the basement garage.",
    "New laptops are ordered through the IT service desk.",
]


def log_in(page: Page, console: Console, key: str) -> None:
    page.goto(console.url)
    page.get_by_test_id("login-key").fill(key)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("logout")).to_be_visible()
    assert key not in page.url


def scores(page: Page) -> list[float]:
    return [float(s) for s in page.get_by_test_id("search-result").evaluate_all(
        "items => items.map(item => item.dataset.score)")]  # fmt: skip


def test_tenant_builds_a_knowledge_base_and_searches_it(
    page: Page, console: Console, watch: Watch
) -> None:
    page.goto(console.url)
    expect(page.get_by_test_id("login-key")).to_be_focused()
    screenshot(page, "login")
    log_in(page, console, console.acme_key)
    expect(page.get_by_test_id("session-who")).to_have_text("acme")

    # A new tenant has no collection: the create form is open, with the bundled model.
    expect(page.get_by_test_id("collection-model")).to_contain_text("all-minilm-l6-v2")
    page.get_by_test_id("collection-name").fill("handbook")
    page.get_by_test_id("collection-create").click()
    expect(page.get_by_test_id("collection-select")).to_have_value("handbook")

    page.get_by_test_id("kb-input").fill("\n".join(KNOWLEDGE_BASE))
    warning = page.get_by_test_id("kb-warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("shorter than 5 characters")
    expect(warning.locator("q")).to_have_text(["hi"])
    page.get_by_test_id("kb-submit").click()
    expect(page.get_by_test_id("kb-status")).to_contain_text(
        f"Indexed {len(KNOWLEDGE_BASE)} entries into handbook"
    )
    expect(page.get_by_test_id("kb-progress")).to_be_hidden()
    expect(page.locator(".collection-summary")).to_contain_text(f"{len(KNOWLEDGE_BASE)} documents")

    # Keyboard: Enter in the query box searches.
    page.get_by_test_id("query-input").fill("How many days of paid leave do employees get?")
    page.get_by_test_id("query-input").press("Enter")
    results = page.get_by_test_id("search-result")
    expect(results).to_have_count(5)
    ranked = scores(page)
    assert ranked == sorted(ranked, reverse=True)
    expect(results.first).to_contain_text("25 days of paid leave")
    expect(results.first).to_have_class(re.compile(r"\babove\b"))  # green: over 0.4
    expect(results.last).to_have_class(re.compile(r"\bbelow\b"))  # grey
    widths = results.locator(".score-fill").evaluate_all(
        "bars => bars.map(bar => bar.getBoundingClientRect().width)"
    )
    assert widths[0] > widths[-1] > 0
    colours = results.locator(".score-fill").evaluate_all(
        "bars => bars.map(bar => getComputedStyle(bar).backgroundColor)"
    )
    assert colours[0] != colours[-1]

    page.get_by_test_id("search-submit").click()  # and the button does too
    expect(results).to_have_count(5)
    results.first.click()
    dims = page.get_by_test_id("vector-dims").locator("li")
    expect(dims).to_have_count(50)
    values = [float(v) for v in dims.all_inner_texts()]
    assert all(-1 <= v <= 1 for v in values)
    assert any(v != 0 for v in values)
    expect(page.get_by_test_id("vector-view")).to_contain_text("First 50 of 384 dimensions")

    # The sidebar: this month's usage now counts the indexing and the searches.
    expect(page.get_by_test_id("plan-card")).to_contain_text("No limit")
    assert int(page.locator(".stat-value").first.inner_text().replace(",", "")) > 0
    screenshot(page, "tenant")

    page.set_viewport_size({"width": 375, "height": 812})
    expect(page.get_by_test_id("kb-input")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the narrow layout scrolls sideways"
    screenshot(page, "tenant-narrow")
    screenshot(page, "tenant-narrow-top", full_page=False)
    assert all(console.acme_key not in url for url in watch.urls)


def test_uploaded_file_is_indexed(page: Page, console: Console) -> None:
    log_in(page, console, console.other_key)  # it has a collection: the create form is closed
    expect(page.get_by_test_id("collection-select")).to_have_value("secret-notes")
    page.get_by_test_id("collection-new").click()
    page.get_by_test_id("collection-name").fill("faq")
    page.get_by_test_id("collection-create").click()
    expect(page.get_by_test_id("collection-select")).to_have_value("faq")
    jsonl = '{"id": "a", "text": "Reset your password from the login page."}\n' + (
        '{"id": "b", "text": "VPN access needs a ticket.", "metadata": {"team": "it"}}\n'
    )
    page.get_by_test_id("kb-file").set_input_files(
        files=[{"name": "faq.jsonl", "mimeType": "application/x-ndjson", "buffer": jsonl.encode()}]
    )
    expect(page.locator(".file-chip")).to_contain_text("2 entries")
    page.get_by_test_id("kb-input").press("Control+Enter")  # keyboard submit
    expect(page.get_by_test_id("kb-status")).to_contain_text("Indexed 2 entries into faq")
    page.get_by_test_id("query-input").fill("VPN")
    page.get_by_test_id("query-input").press("Enter")
    expect(page.get_by_test_id("search-result").first).to_contain_text("team: it")


def test_operator_creates_a_tenant_and_a_working_key(page: Page, console: Console) -> None:
    log_in(page, console, ADMIN_KEY)
    expect(page.get_by_test_id("session-who")).to_have_text("Admin")
    expect(page.get_by_test_id("system-model")).to_contain_text("all-minilm-l6-v2")
    expect(page.get_by_test_id("system-device")).to_contain_text(re.compile("CPU|CUDA"))

    page.get_by_test_id("create-tenant-id").fill("globex")
    page.get_by_test_id("create-tenant-submit").click()
    row = page.locator("[data-testid=tenant-row][data-tenant=globex]")
    expect(row).to_be_visible()
    row.click()
    expect(page.get_by_test_id("tenant-detail")).to_contain_text("globex")
    page.get_by_test_id("key-name").fill("notebooks")
    page.get_by_test_id("create-key-submit").click()
    secret = page.get_by_test_id("new-key").inner_text().strip()
    assert secret.startswith("tenant_globex_")
    expect(page.get_by_test_id("new-key-box")).to_contain_text("will not be shown again")
    assert secret not in page.url
    assert secret not in page.evaluate("JSON.stringify({...localStorage, ...sessionStorage})")
    assert "embedgate_session" not in page.evaluate("document.cookie")  # HttpOnly

    me = httpx.get(f"{console.url}/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    assert me.json()["id"] == "globex"

    # Some usage for the chart, then the tenant opened again.
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": "all-minilm-l6-v2", "input": ["a cat", "a dog", "一只猫"]}
    httpx.post(f"{console.url}/v1/embeddings", json=body, headers=headers).raise_for_status()
    page.locator("[data-testid=tenant-row][data-tenant=acme]").press("Enter")  # keyboard
    expect(page.get_by_test_id("tenant-detail")).to_contain_text("acme")
    expect(page.get_by_test_id("usage-chart").locator("rect.bar")).to_have_count(30)
    expect(page.get_by_test_id("key-row")).to_have_count(1)
    row.click()
    expect(page.get_by_test_id("key-row")).to_have_count(1)
    page.get_by_test_id("key-name").fill("ci")
    page.get_by_test_id("create-key-submit").click()
    expect(page.get_by_test_id("new-key")).to_contain_text("tenant_globex_")
    expect(page.get_by_test_id("key-row")).to_have_count(2)

    audit = page.get_by_test_id("audit-card")
    audit.get_by_test_id("audit-tenant").fill("globex")
    audit.get_by_test_id("audit-event").fill("key.created")
    audit.get_by_test_id("audit-apply").click()
    expect(audit.get_by_test_id("audit-row")).to_have_count(2)
    screenshot(page, "admin")

    page.set_viewport_size({"width": 375, "height": 812})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the narrow layout scrolls sideways"
    screenshot(page, "admin-narrow-top", full_page=False)


def test_operator_suspends_edits_and_deletes_a_tenant(page: Page, console: Console) -> None:
    make = {"id": "doomed", "name": "Short-lived"}
    httpx.post(f"{console.url}/admin/tenants", json=make, headers={
        "Authorization": f"Bearer {ADMIN_KEY}"}).raise_for_status()  # fmt: skip
    log_in(page, console, ADMIN_KEY)
    row = page.locator("[data-testid=tenant-row][data-tenant=doomed]")
    row.click()
    detail = page.get_by_test_id("tenant-detail")
    detail.get_by_test_id("tenant-suspend").click()
    expect(row).to_contain_text("suspended")
    expect(detail.get_by_test_id("tenant-suspend")).to_have_text("Resume")

    policy = detail.get_by_test_id("tenant-policy")
    policy.fill('{"rpm": ')
    expect(detail.get_by_test_id("tenant-save")).to_be_disabled()
    policy.fill('{"rpm": 120, "blocked_terms": ["Project Falcon"]}')
    detail.get_by_test_id("tenant-save").click()
    expect(detail.locator(".effective")).to_contain_text("120")
    tenant = httpx.get(f"{console.url}/admin/tenants/doomed", headers={
        "Authorization": f"Bearer {ADMIN_KEY}"}).json()  # fmt: skip
    assert tenant["policy"] == {"rpm": 120, "blocked_terms": ["Project Falcon"]}
    assert tenant["status"] == "suspended"

    detail.get_by_test_id("tenant-delete").click()
    confirm = page.get_by_test_id("dialog-confirm")
    expect(confirm).to_be_disabled()
    page.get_by_test_id("dialog-input").fill("doome")
    expect(confirm).to_be_disabled()
    page.get_by_test_id("dialog-input").fill("doomed")
    confirm.click()
    expect(row).to_have_count(0)
    gone = httpx.get(f"{console.url}/admin/tenants/doomed", headers={
        "Authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip
    assert gone.status_code == 404


# A request from the page with its cookie; with `csrf`, the session's token too (the script
# can read it from /console/session, as the console does; another site cannot).
FETCH = """async ([url, method, csrf]) => {
  const headers = {"Content-Type": "application/json"};
  if (csrf) headers["X-CSRF-Token"] = (await (await fetch("/console/session")).json()).csrf_token;
  const body = method === "GET" ? undefined : JSON.stringify({query: "note"});
  const r = await fetch(url, {method, credentials: "same-origin", headers, body});
  return [r.status, await r.text()];
}"""


def test_a_tenant_session_reaches_only_its_own_tenant(
    page: Page, console: Console, watch: Watch
) -> None:
    watch.expected |= {(401, "/admin/tenants"), (401, "/admin/system"), (404, "/secret-notes"),
                       (404, "/secret-notes/search"), (403, "/secret-notes/search"),
                       (401, "/v1/me")}  # fmt: skip
    log_in(page, console, console.acme_key)
    expect(page.get_by_test_id("create-tenant-id")).to_have_count(0)

    for url in ("/admin/tenants", "/admin/system"):
        status, _ = page.evaluate(FETCH, [url, "GET", False])
        assert status == 401
    response = page.goto(f"{console.url}/admin/tenants")
    assert response is not None
    assert response.status == 401
    page.goto(console.url)
    expect(page.get_by_test_id("session-who")).to_have_text("acme")  # still the tenant view
    expect(page.get_by_test_id("create-tenant-id")).to_have_count(0)

    status, _ = page.evaluate(FETCH, ["/v1/collections/secret-notes", "GET", False])
    assert status == 404
    status, _ = page.evaluate(FETCH, ["/v1/collections/secret-notes/search", "POST", True])
    assert status == 404
    status, body = page.evaluate(FETCH, ["/v1/collections/secret-notes/search", "POST", False])
    assert status == 403
    assert "csrf_failed" in body

    cookie = next(c for c in page.context.cookies() if c["name"] == "embedgate_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-key")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "embedgate_session"]
    stale = {"embedgate_session": cookie["value"]}
    assert httpx.get(f"{console.url}/console/session", cookies=stale).status_code == 401
    assert httpx.get(f"{console.url}/v1/me", cookies=stale).status_code == 401
    assert all(console.acme_key not in url for url in watch.urls)


def test_an_ended_session_returns_to_login(page: Page, console: Console, watch: Watch) -> None:
    watch.expected |= {(401, "/search"), (401, "/v1/me")}
    log_in(page, console, console.other_key)
    expect(page.get_by_test_id("collection-select")).to_be_enabled()
    page.context.clear_cookies()  # as when the session expires on the server
    page.get_by_test_id("query-input").fill("paid leave")
    page.get_by_test_id("search-submit").click()
    expect(page.get_by_test_id("login-key")).to_be_visible()
    expect(page.locator(".login-form")).to_contain_text("session has expired")


def test_the_page_leaves_a_session_when_it_expires(page: Page, console: Console) -> None:
    """The console returns to the login page at `expires_at`, without waiting for a 401."""
    log_in(page, console, console.other_key)
    session = page.evaluate("fetch('/console/session').then(r => r.json())")
    soon = datetime.now(UTC) + timedelta(seconds=2)
    session["expires_at"] = soon.isoformat().replace("+00:00", "Z")
    page.route("**/console/session", lambda route: route.fulfill(json=session))
    page.reload()
    expect(page.get_by_test_id("logout")).to_be_visible()
    expect(page.get_by_test_id("login-key")).to_be_visible(timeout=10_000)
    expect(page.locator(".login-form")).to_contain_text("session has expired")


def test_a_bad_key_is_refused(page: Page, console: Console, watch: Watch) -> None:
    watch.expected.add((401, "/console/login"))
    page.goto(console.url)
    page.get_by_test_id("login-key").fill("tenant_acme_not-a-real-key-000000000000000000000")
    page.get_by_test_id("login-key").press("Enter")
    expect(page.locator(".login-form [role=status]")).to_contain_text("not valid")
    expect(page.get_by_test_id("logout")).to_have_count(0)
    assert "key" not in page.url


def test_pages_carry_security_headers(console: Console) -> None:
    page = httpx.get(console.url + "/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    asset = httpx.get(console.url + "/static/js/main.js")
    assert asset.status_code == 200
    assert "javascript" in asset.headers["content-type"]
    assert asset.headers["cache-control"] == "no-cache"
    assert httpx.get(console.url + "/static/%2e%2e/%2e%2e/api/admin.py").status_code == 404
    assert "http://" not in page.text
    assert "https://" not in page.text


def test_assets_reference_nothing_outside_the_server() -> None:
    """The console runs offline: no CDN, no web font, no external script."""
    static = Path(embedgate.__file__).parent / "console"
    files = [p for p in static.rglob("*") if p.is_file()]
    assert any(p.name == "main.js" for p in files)
    for path in files:
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")  # SVG namespace
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), path


SPLIT = """async ([name, text]) => {
  const entries = await import("/static/js/entries.js");
  return entries.fromFile(new File([text], name));
}"""
FILES = {
    "guide.md": "# Leave\nEmployees get 25 days.\nAsk HR first.\n\nCarry-over ends in March.\n"
    "## 报销\n报销在三十天内完成。\n",
    "kb.txt": "  first line\n\nthird line \r\nfourth\n",
    "faq.jsonl": '{"id": "a", "text": "Reset it.", "metadata": {"team": "it"}}\n\n'
    '{"text": "VPN"}\n',
}


@pytest.mark.parametrize("name", FILES)
def test_files_split_as_embedgate_ingest_splits_them(
    page: Page, console: Console, tmp_path: Path, name: str
) -> None:
    page.goto(console.url)
    in_browser = page.evaluate(SPLIT, [name, FILES[name]])
    path = tmp_path / name
    path.write_bytes(FILES[name].encode())
    by_cli = list(read_documents(path, detect_format(path, "auto"), name))
    assert in_browser == by_cli


CUDA_SYSTEM = {
    "object": "system", "version": "0.1.0", "uptime_s": 93784.2,
    "models": [{"name": "qwen3-embedding-0.6b", "backend": "local", "device": "cuda:0",
                "dimensions": 1024, "ready": True, "queue_depth": 12}],
    "device": {"type": "cuda", "id": "cuda:0", "name": "NVIDIA H100 80GB HBM3",
               "gpu_memory": {"allocated_mb": 1310.2, "reserved_mb": 2048.0,
                              "used_mb": 3521.0, "total_mb": 81559.0}},
    "queue_depth": 12,
    "cache": {"enabled": True, "entries": 9000, "bytes": 14680064, "max_bytes": 268435456,
              "hits": 7200, "misses": 1800, "hit_ratio": 0.8},
}  # fmt: skip


def test_system_status_shows_gpu_memory_on_cuda(page: Page, console: Console) -> None:
    """This machine has no GPU: the status a CUDA server reports is played back to the page."""
    page.route("**/admin/system", lambda route: route.fulfill(json=CUDA_SYSTEM))
    log_in(page, console, ADMIN_KEY)
    device = page.get_by_test_id("system-device")
    expect(device).to_contain_text("CUDA")
    expect(device).to_contain_text("NVIDIA H100 80GB HBM3")
    expect(device).to_contain_text("GPU memory: 3.4 GiB of 79.6 GiB used")
    expect(page.get_by_test_id("system-queue")).to_contain_text("12")
    expect(page.get_by_test_id("system-cache")).to_contain_text("80.0%")
    expect(page.get_by_test_id("system-status")).to_contain_text("up 1 d 2 h")
    screenshot(page, "admin-cuda-status", full_page=False)
