"""The HTTP contract and the CLI, byte for byte: the OpenAPI schema and every command's
``--help`` against snapshots in ``tests/snapshots/``.

A layout change (issue 14) must leave both as they are. A change that means to alter the
contract regenerates them, and the diff shows in review:

    EMBEDGATE_UPDATE_SNAPSHOTS=1 pytest tests/test_contract_snapshot.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedgate.app import create_app
from embedgate.config.settings import Settings

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
UPDATE = os.environ.get("EMBEDGATE_UPDATE_SNAPSHOTS") == "1"
# The environment of a machine must not leak into the snapshot (defaults shown in --help).
CLEAN_ENV = {name: None for name in os.environ if name.startswith("EMBEDGATE_")}


def _matches(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, (
        f"{name} changed; if on purpose: EMBEDGATE_UPDATE_SNAPSHOTS=1 pytest {__file__}"
    )


def test_the_openapi_schema_is_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in CLEAN_ENV:
        monkeypatch.delenv(name)
    schema = create_app(Settings(data_dir=tmp_path)).openapi()
    _matches("openapi.json", json.dumps(schema, indent=1, sort_keys=True) + "\n")


HELP_PAGES = """
import sys
import click
from click.testing import CliRunner
from embedgate.cli.main import main

def commands(group, path=()):
    for name in sorted(group.commands):
        yield (*path, name)
        if isinstance(group.commands[name], click.Group):
            yield from commands(group.commands[name], (*path, name))

runner = CliRunner()
for path in [(), *commands(main)]:
    result = runner.invoke(main, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    sys.stdout.write(f"$ embedgate {' '.join(path)} --help\\n{result.output}\\n")
"""


def test_every_command_help_is_the_snapshot() -> None:
    # In a process of its own, as a user's `embedgate ... --help` runs: click caches a
    # command's help option the first time it is asked for, so a command another test
    # invoked on its own would show `--help` without `-h` here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDGATE_")}
    result = subprocess.run(
        [sys.executable, "-c", HELP_PAGES], env=env, capture_output=True, text=True, check=True
    )
    _matches("cli_help.txt", result.stdout.removesuffix("\n"))
