"""A setting, model field or error code that exists must be documented."""

from __future__ import annotations

import re
from pathlib import Path

from embedgate.config.models import LocalModel, UpstreamModel
from embedgate.config.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
SRC = Path(__file__).resolve().parent.parent / "src" / "embedgate"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [n for n in Settings.model_fields if f"`EMBEDGATE_{n.upper()}`" not in text]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_every_model_field_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    fields = {**LocalModel.model_fields, **UpstreamModel.model_fields}
    missing = [n for n in fields if f"`{n}`" not in text]
    assert not missing, f"model fields missing from docs/configuration.md: {missing}"


def test_every_error_code_is_documented() -> None:
    text = (DOCS / "api.md").read_text()
    source = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    codes = set(re.findall(r'code="([a-z_]+)"', source))
    codes |= set(re.findall(r'"(not_found|method_not_allowed)"', source))
    missing = sorted(code for code in codes if f"`{code}`" not in text)
    assert codes
    assert not missing, f"error codes missing from docs/api.md: {missing}"


def test_every_metric_is_documented() -> None:
    text = (DOCS / "api.md").read_text()
    source = (SRC / "observability" / "metrics.py").read_text()
    names = set(re.findall(r'"(embedgate_[a-z_]+)"', source))
    missing = sorted(name for name in names if name not in text)
    assert names
    assert not missing, f"metrics missing from docs/api.md: {missing}"
