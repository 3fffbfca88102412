"""A real `embedgate serve` and a headless Chromium driving its web console.

Chromium is Debian's (`apt-get install chromium`, as `.ci/run` does); `playwright install`
is never needed. Screenshots go to test-artifacts/console/ for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.conftest import ADMIN_KEY
from tests.helpers import ServerProcess, start_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Console:
    """The running server, with a tenant `acme` (empty) and a tenant `other` that owns a
    collection `secret-notes`."""

    server: ServerProcess
    acme_key: str
    other_key: str

    @property
    def url(self) -> str:
        return self.server.url


def make_tenant(url: str, tenant_id: str) -> str:
    httpx.post(f"{url}/admin/tenants", json={"id": tenant_id}, headers=ADMIN).raise_for_status()
    issued = httpx.post(f"{url}/admin/tenants/{tenant_id}/keys", json={}, headers=ADMIN)
    issued.raise_for_status()
    return str(issued.json()["key"])


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    data_dir = tmp_path_factory.mktemp("console") / "data"
    with start_server(data_dir, env={"EMBEDGATE_ADMIN_KEY": ADMIN_KEY}) as server:
        acme = make_tenant(server.url, "acme")
        other = make_tenant(server.url, "other")
        tenant = {"Authorization": f"Bearer {other}"}
        base = f"{server.url}/v1/collections"
        httpx.post(base, json={"name": "secret-notes"}, headers=tenant).raise_for_status()
        docs = {"documents": [{"id": "n1", "text": "Other tenant's private note."}]}
        httpx.post(f"{base}/secret-notes/documents", json=docs, headers=tenant).raise_for_status()
        yield Console(server, acme, other)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (see .ci/run)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    expect.set_options(timeout=30_000)  # the first embeddings on a cold CPU can be slow
    yield browser
    browser.close()


@dataclass
class Watch:
    """Console errors and page errors of one page, and every URL it requested."""

    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    # Failed fetches the test caused on purpose, as (status, path) pairs.
    expected: set[tuple[int, str]] = field(default_factory=set)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        location = message.location.get("url", "")
        for status, path in self.expected:
            if f"status of {status}" in message.text and location.split("?")[0].endswith(path):
                return
        self.errors.append(f"{message.text} ({location})")


@pytest.fixture
def watch() -> Watch:
    # The browser reports every failed request on the console: a test that makes one on
    # purpose adds it here; anything else is an error.
    return Watch(expected=set())


@pytest.fixture
def page(browser: Browser, watch: Watch) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("console", watch.on_console)
    page.on("pageerror", lambda error: watch.errors.append(f"page error: {error}"))
    page.on("request", lambda request: watch.urls.append(request.url))
    yield page
    context.close()
    assert not watch.errors, f"errors in the browser console: {watch.errors}"


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0); document.getElementById('toasts').replaceChildren()")
    page.wait_for_timeout(400)  # let transitions (bars, toasts) settle
    page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    return path
