"""Issue 17: a newcomer's mistakes with the CLI, each answered by one clear line, on real
processes and a real running server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from embedgate import datalock
from embedgate.cli.main import main
from tests.conftest import ADMIN_KEY
from tests.helpers import ServerProcess, free_port, start_server

pytestmark = pytest.mark.slow
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) embedgate")
CLEAN_ENV = {key: None for key in os.environ if key.startswith("EMBEDGATE_")}


def serve(*args: str, data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDGATE_")}
    env |= {"EMBEDGATE_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "embedgate", "serve", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def one_line(result: Any) -> str:
    """The whole of what a failed command printed: exactly one line."""
    text = result.stderr if isinstance(result, subprocess.CompletedProcess) else result.output
    lines = [line for line in text.strip().splitlines() if not LOG_RECORD.match(line)]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def cli(*args: str, env: dict[str, Any] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env={**CLEAN_ENV, **(env or {})})


def test_a_second_server_on_the_same_data_dir_is_refused_and_a_killed_one_frees_it(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with start_server(data_dir) as first:
        started = time.monotonic()
        second = serve("--port", str(free_port()), data_dir=data_dir)
        assert second.returncode == 1
        assert one_line(second) == (
            f"Error: another `embedgate serve` (pid {first.process.pid}, {first.url}) already"
            f" uses the data dir {data_dir.resolve()}: stop it, or give this one another"
            " --data-dir (EMBEDGATE_DATA_DIR)"
        )
        assert time.monotonic() - started < 30  # refused before any model loaded
        assert datalock.holder(data_dir) == datalock.Holder(first.process.pid, first.url)
        first.process.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock
        first.process.wait()
        assert datalock.holder(data_dir) is None
        datalock.acquire(data_dir, "http://127.0.0.1:1").close()


def test_a_busy_port_is_found_before_the_model_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve("--port", str(port), "--log-level", "info", data_dir=tmp_path / "d")
    assert result.returncode == 1
    assert one_line(result) == (
        f"Error: port {port} on 127.0.0.1 is already in use (another server?): choose another"
        " with --port (EMBEDGATE_PORT)"
    )
    assert datalock.holder(tmp_path / "d") is None  # and the lock went with the process


@pytest.mark.parametrize("path", ["/no/such/models/qwen3", "./modles/qwen3-embedding-0.6b",
                                  "Qwen/Qwen3-Embeding-0.6B"])  # fmt: skip
def test_a_mistyped_model_path_is_one_line(tmp_path: Path, path: str) -> None:
    config = tmp_path / "embedgate.yaml"
    models = {"qwen3": {"backend": "local", "path": path}}
    config.write_text(yaml.safe_dump({"models": models, "default_model": "qwen3"}))
    result = serve("--config", str(config), data_dir=tmp_path / "d")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1  # checked first: not even a key is generated
    line = one_line(result)
    assert line.startswith(f"Error: model 'qwen3': path {path!r}: no such directory (")
    assert str((Path.cwd() / path).resolve()) in line
    if path.startswith("Qwen/"):  # could be a Hugging Face id: says that it is not cached
        assert line.endswith(", nor a Hugging Face id in the local cache")


def test_the_cli_from_another_directory(served: ServerProcess, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """No data dir here: say so, name the running server and --data-dir, create nothing."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("tenants", "list", env={"EMBEDGATE_PORT": str(served.port)})
    assert result.exit_code == 1
    assert one_line(result) == (
        f"Error: no embedgate data dir at {elsewhere / 'embedgate-data'}; a server answers at"
        f" {served.url}: pass its data dir with --data-dir, or use --server {served.url} with"
        " EMBEDGATE_ADMIN_KEY"
    )
    alone = cli("tenants", "list", env={"EMBEDGATE_PORT": str(free_port())})
    assert one_line(alone).endswith(
        "; start `embedgate serve` there once, or pass --data-dir DIR of the server's data dir"
        " (EMBEDGATE_DATA_DIR)"
    )
    assert list(elsewhere.iterdir()) == []  # no empty embedgate-data/ left behind


def test_target_flags_after_the_subcommand(served: ServerProcess) -> None:
    data_dir = str(served.data_dir)
    assert datalock.holder(Path(data_dir)) is not None
    created = cli("tenants", "create", "late-flags", "--data-dir", data_dir)
    assert created.exit_code == 0, created.output
    listed = cli("tenants", "list", "--data-dir", data_dir)
    assert "late-flags" in [t["id"] for t in json.loads(listed.stdout)]
    key = cli("keys", "create", "late-flags", "--server", served.url,
              env={"EMBEDGATE_ADMIN_KEY": ADMIN_KEY})  # fmt: skip
    assert key.exit_code == 0, key.output
    assert json.loads(key.stdout)["key"].startswith("tenant_late-flags_")


def test_server_mode_asks_for_the_admin_key_and_names_a_url_that_is_down(tmp_path: Path
                                                                        ) -> None:  # fmt: skip
    no_key = cli("tenants", "list", "--server", "http://127.0.0.1:9",
                 "--data-dir", str(tmp_path / "none"))  # fmt: skip
    line = one_line(no_key)
    assert "EMBEDGATE_ADMIN_KEY" in line
    assert "SECRET_KEY" not in line
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["tenants", "list"], ["keys", "list", "acme"], ["usage", "export"],
                    ["audit", "export"]):  # fmt: skip
        down = cli(*command, env={"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_SERVER": url})
        assert one_line(down) == (
            f"Error: cannot reach the embedgate server at {url} (connection refused or"
            " unreachable): is it running? Point --server (EMBEDGATE_SERVER) at it"
        ), command


def test_local_commands_beside_a_running_server_and_a_wrong_server_url(
    served: ServerProcess,
) -> None:
    """The lock refuses a second server, not the CLI: a local delete beside the running
    server is seen by it (its key stops working within the 2 s key cache). And a --server
    that is wrong is answered with where the server on the data dir really listens."""
    data_dir = str(served.data_dir)
    assert cli("tenants", "create", "doomed", "--data-dir", data_dir).exit_code == 0
    made = cli("keys", "create", "doomed", "--data-dir", data_dir)
    key = json.loads(made.stdout)["key"]
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{served.url}/v1/models", headers=auth).status_code == 200
    deleted = cli("tenants", "delete", "doomed", "--yes", "--data-dir", data_dir)
    assert deleted.exit_code == 0, deleted.output
    time.sleep(2.5)
    assert httpx.get(f"{served.url}/v1/models", headers=auth).status_code == 401
    assert httpx.get(f"{served.url}/health").status_code == 200

    wrong = f"http://127.0.0.1:{free_port()}"
    line = one_line(cli("tenants", "list", "--server", wrong, "--data-dir", data_dir,
                        env={"EMBEDGATE_ADMIN_KEY": ADMIN_KEY}))  # fmt: skip
    assert line.startswith(f"Error: cannot reach the embedgate server at {wrong} (")
    assert line.endswith(
        f"; the `embedgate serve` on {served.data_dir.resolve()} listens at {served.url}"
    )
