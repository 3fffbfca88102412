"""The HTTP contract and the CLI, byte for byte: the OpenAPI schema and every command's
``--help`` against snapshots in ``tests/snapshots/``.

A layout change (issue 14) must leave both as they are. A change that means to alter the
contract regenerates them, and the diff shows in review:

    EMBEDGATE_UPDATE_SNAPSHOTS=1 pytest tests/test_contract_snapshot.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from embedgate.app import create_app
from embedgate.cli import main
from embedgate.config import Settings

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


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in sorted(group.commands):
        command = group.commands[name]
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_command_help_is_the_snapshot() -> None:
    runner = CliRunner()
    pages = []
    for path in [(), *_commands(main)]:
        result = runner.invoke(main, [*path, "--help"], env=CLEAN_ENV, terminal_width=100)
        assert result.exit_code == 0, result.output
        pages.append(f"$ embedgate {' '.join(path)} --help\n{result.output}")
    _matches("cli_help.txt", "\n".join(pages))
