"""The served process's garbage collector: settled once the app has started."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from embedgate.app import create_app
from embedgate.cli import gc_policy
from tests.conftest import make_settings


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_is_alive_and_collects_the_young_less_often(
    restored_gc: None,
) -> None:
    alive = [object(), [1, 2], {"a": 1}]
    gc_policy.settle()
    assert gc.get_freeze_count() > len(alive)
    assert gc.get_threshold()[0] == gc_policy.GEN0_THRESHOLD
    cycle: list[object] = []
    cycle.append(cycle)  # garbage with a cycle is still collected
    del cycle
    assert gc.collect() >= 1


def test_the_hook_runs_once_the_runtime_is_up(tmp_path: Path) -> None:
    seen: list[bool] = []
    app = create_app(make_settings(tmp_path), on_started=lambda: seen.append(True))
    with TestClient(app):
        assert seen == [True]
        assert app.state.runtime is not None
