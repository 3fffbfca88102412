"""The `embedgate` command line and how settings are resolved."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from embedgate.cli.common import load_settings
from embedgate.cli.main import main
from embedgate.config.settings import NOT_ON_COMMAND_LINE, Settings
from embedgate.keyfiles import load_admin_key

CLEAN_ENV = {key: None for key in os.environ if key.startswith("EMBEDGATE_")}


def test_serve_help_shows_every_setting_with_its_env_var() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"], env=CLEAN_ENV, terminal_width=200)
    assert result.exit_code == 0
    flat = " ".join(result.output.split())
    for name in Settings.model_fields:
        if name in NOT_ON_COMMAND_LINE:
            continue
        assert f"--{name.replace('_', '-')}" in flat
        assert f"EMBEDGATE_{name.upper()}" in flat


def test_secrets_are_never_flags() -> None:
    result = CliRunner().invoke(main, ["serve", "--admin-key", "x"], env=CLEAN_ENV)
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_defaults() -> None:
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.data_dir == Path("embedgate-data")
    assert settings.default_model == "all-minilm-l6-v2"


def test_flags_beat_env_beat_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "embedgate.yaml"
    config.write_text(yaml.safe_dump({"port": 9001, "max_batch_size": 5, "batch_wait_ms": 7.5}))
    monkeypatch.setenv("EMBEDGATE_CONFIG", str(config))
    monkeypatch.setenv("EMBEDGATE_MAX_BATCH_SIZE", "9")
    settings = load_settings({"port": 9002, "max_batch_size": None})
    assert settings.port == 9002  # flag
    assert settings.max_batch_size == 9  # env
    assert settings.batch_wait_ms == 7.5  # config file


def test_config_file_defines_models_and_aliases(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    models = {
        "qwen3-embedding-8b": {
            "backend": "openai",
            "base_urls": ["http://gpu-a:30000/v1", "http://gpu-b:30000/v1"],
            "dimensions": 4096,
            "family": "qwen3",
            "aliases": ["text-embedding-3-large"],
        }
    }
    config.write_text(yaml.safe_dump({"models": models, "default_model": "qwen3-embedding-8b"}))
    settings = load_settings({"config": config})
    spec = settings.models["qwen3-embedding-8b"]
    assert spec.base_urls == ["http://gpu-a:30000/v1", "http://gpu-b:30000/v1"]
    assert spec.aliases == ["text-embedding-3-large"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"models": {"m": {"backend": "openai"}}, "default_model": "m"}, "base_urls"),
        ({"default_model": "missing"}, "not in `models`"),
        ({"port": 70000}, "port"),
        ({"admin_key": "admin_in_a_shared_file"}, "cannot be set in the config file"),
        ({"max_queue_inputs": 100}, "max_queue_inputs must be at least"),
        (
            {
                "models": {
                    "a": {"backend": "local", "path": "x", "aliases": ["b"]},
                    "b": {"backend": "local", "path": "y"},
                },
                "default_model": "a",
            },
            "used twice: b",
        ),
        (
            {
                "models": {"a": {"backend": "local", "path": "x", "dimensions": 64}},
                "default_model": "a",
            },
            "reads `dimensions` from the model",
        ),
    ],
)
def test_bad_configuration_is_a_clear_error(
    tmp_path: Path, content: dict[str, object], message: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(content))
    result = CliRunner().invoke(main, ["serve", "--config", str(config)], env=CLEAN_ENV)
    assert result.exit_code == 1
    assert "invalid configuration" in result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(main, ["serve", "--config", str(missing)], env=CLEAN_ENV)
    assert result.exit_code == 1
    assert "config file not found" in result.output


def test_loose_admin_key_file_is_refused_before_loading_models(tmp_path: Path) -> None:
    key_file = tmp_path / "admin.key"
    key_file.write_text("admin_secret_value\n")
    key_file.chmod(0o644)
    result = CliRunner().invoke(
        main,
        ["serve", "--data-dir", str(tmp_path / "data"), "--admin-key-file", str(key_file)],
        env=CLEAN_ENV,
    )
    assert result.exit_code == 1
    assert "chmod 600" in result.output
    assert "admin_secret_value" not in result.output


def test_first_start_generates_a_private_admin_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        key = load_admin_key(settings)
    key_file = tmp_path / "admin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key) >= 40
    assert str(key_file) in caplog.text
    assert key not in caplog.text
    assert load_admin_key(settings) == key  # stable across restarts


def test_admin_key_from_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDGATE_ADMIN_KEY", "admin_from_env_value")
    assert load_admin_key(Settings(data_dir=tmp_path)) == "admin_from_env_value"
    assert not (tmp_path / "admin.key").exists()


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "embedgate" in result.output
