"""`embedgate ingest` against a real `embedgate serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from embedgate.cli import ingest as cli_ingest
from tests.helpers import ServerProcess

pytestmark = pytest.mark.slow


def ingest(server: ServerProcess, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMBEDGATE_API_KEY": server.key, "EMBEDGATE_SERVER": server.url}
    command = [sys.executable, "-m", "embedgate", "ingest", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_ingest_txt_jsonl_and_md(served: ServerProcess, tmp_path: Path) -> None:
    lines = tmp_path / "kb.txt"
    lines.write_text("".join(f"fact number {i} about the product\n" for i in range(150)) + "\n")
    first = ingest(served, "cli-kb", lines, "--create", "--batch-size", "40")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["documents"] == 150
    assert json.loads(first.stdout)["tokens"] > 0
    assert "ingesting kb.txt" in first.stderr  # the progress bar
    again = ingest(served, "cli-kb", lines)
    assert json.loads(again.stdout)["tokens"] == 0  # unchanged lines are not re-embedded

    records = tmp_path / "faq.jsonl"
    records.write_text(json.dumps({"id": "faq-1", "text": "How do I reset my password?",
                                   "metadata": {"topic": "account"}}) + "\n")  # fmt: skip
    assert ingest(served, "cli-kb", records).returncode == 0
    guide = tmp_path / "guide.md"
    guide.write_text("# Setup\n\nInstall the package.\nThen run it.\n\n## Usage\n\nCall the API.\n")
    assert ingest(served, "cli-kb", guide).returncode == 0

    headers = {"Authorization": f"Bearer {served.key}"}
    base = f"{served.url}/v1/collections/cli-kb"
    assert httpx.get(base, headers=headers).json()["document_count"] == 153
    faq = httpx.get(f"{base}/documents/faq-1", headers=headers).json()
    assert faq["metadata"] == {"topic": "account"}
    usage = httpx.get(f"{base}/documents/guide.md:3", headers=headers).json()
    assert usage["text"] == "Install the package. Then run it."
    assert usage["metadata"] == {"section": "Setup"}


def test_ingest_reports_bad_input_and_missing_key(served: ServerProcess, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{not json\n')
    result = ingest(served, "cli-kb2", broken, "--create")
    assert result.returncode != 0
    assert "broken.jsonl:2: not valid JSON" in result.stderr
    fine = tmp_path / "fine.txt"
    fine.write_text("one line\n")
    missing = ingest(served, "no-such-collection", fine)
    assert missing.returncode != 0
    assert "HTTP 404" in missing.stderr
    env = {k: v for k, v in os.environ.items() if k != "EMBEDGATE_API_KEY"}
    no_key = subprocess.run([sys.executable, "-m", "embedgate", "ingest", "x", str(broken)],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert "EMBEDGATE_API_KEY" in no_key.stderr


def test_ingest_rides_out_a_lost_connection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                            ) -> None:  # fmt: skip
    """A restarting server: the batch is sent again (an upsert is idempotent)."""
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # the collection, checked once before the first batch
            return httpx.Response(200, json={"name": "kb"})
        sent.append(len(json.loads(request.content)["documents"]))
        if len(sent) == 2:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"usage": {"prompt_tokens": 5}})

    real_client = httpx.Client

    def client(**options: Any) -> httpx.Client:
        return real_client(transport=httpx.MockTransport(handler), **options)

    monkeypatch.setattr(httpx, "Client", client)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    monkeypatch.setenv("EMBEDGATE_API_KEY", "tenant_t_" + "x" * 32)
    lines = tmp_path / "kb.txt"
    lines.write_text("".join(f"line {i}\n" for i in range(5)))
    result = CliRunner().invoke(cli_ingest.ingest, ["kb", str(lines), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert sent == [2, 2, 2, 1]  # the second batch twice
    assert json.loads(result.stdout)["documents"] == 5


def test_ingest_gives_up_on_an_unreachable_server_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Mid-ingest, a server that stays away ends it with one line and what was written."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "GET":
            return httpx.Response(200, json={"name": "kb"})
        raise httpx.ConnectError("connection refused", request=request)

    real_client = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **options: real_client(
        transport=httpx.MockTransport(handler), **options))  # fmt: skip
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    monkeypatch.setenv("EMBEDGATE_API_KEY", "tenant_t_" + "x" * 32)
    lines = tmp_path / "kb.txt"
    lines.write_text("one line\n")
    url = "http://127.0.0.1:9"
    result = CliRunner().invoke(cli_ingest.ingest, ["kb", str(lines), "--server", url])
    assert result.exit_code == 1
    assert f"cannot reach the embedgate server at {url} (connection refused)" in result.output
    assert "0 of 1 documents were written" in result.output
    assert calls.count("POST") == cli_ingest.RETRIES
    assert "Traceback" not in result.output


def closed_port_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("create", [[], ["--create"]])
def test_ingest_with_no_server_there_fails_at_once_in_one_line(
    tmp_path: Path, create: list[str]
) -> None:
    """Issue 17: with --create this was a 76-line httpx.ConnectError traceback; without it,
    minutes of retries. Now: the first request fails, one line names the URL (a real
    process, a real closed port)."""
    lines = tmp_path / "kb.txt"
    lines.write_text("one line\n")
    url = closed_port_url()
    env = {**os.environ, "EMBEDGATE_API_KEY": "tenant_t_" + "x" * 32, "EMBEDGATE_SERVER": url}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "embedgate", "ingest", "handbook", str(lines), *create],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot reach the embedgate server at {url} (")
    assert "refused" in line
    assert line.endswith("): is it running? Point --server (EMBEDGATE_SERVER) at it")
    assert time.monotonic() - started < 20
