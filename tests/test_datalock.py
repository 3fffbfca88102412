"""`embedgate.datalock`: one server per data dir, and what the CLI reads of the holder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedgate import datalock


def test_the_lock_is_exclusive_names_its_holder_and_goes_with_the_file(tmp_path: Path) -> None:
    assert datalock.holder(tmp_path) is None  # no lock file yet
    held = datalock.acquire(tmp_path, "http://127.0.0.1:8123")
    assert datalock.holder(tmp_path) == datalock.Holder(os.getpid(), "http://127.0.0.1:8123")
    assert (tmp_path / datalock.LOCK_NAME).stat().st_mode & 0o077 == 0
    with pytest.raises(datalock.DataDirBusy, match=r"pid \d+, http://127\.0\.0\.1:8123"):
        datalock.acquire(tmp_path, "http://127.0.0.1:9999")  # flock: per open file
    held.close()
    assert datalock.holder(tmp_path) is None  # the file stays; the lock does not
    datalock.acquire(tmp_path, "http://127.0.0.1:9999").close()


def test_an_unreadable_holder_still_counts_as_held(tmp_path: Path) -> None:
    held = datalock.acquire(tmp_path, "http://x")
    (tmp_path / datalock.LOCK_NAME).write_text("not json")
    assert datalock.holder(tmp_path) == datalock.Holder(0, "")
    held.close()
