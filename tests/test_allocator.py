"""`embedgate serve` re-executes itself on the allocator that keeps its memory bounded."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from embedgate import allocator
from embedgate.allocator import GLIBC_TUNABLES, AllocatorError, plan
from tests.helpers import ServerProcess, start_server

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
# The loader rewrites GLIBC_TUNABLES as the process sees it: it keeps this one, and drops
# glibc.malloc.hugetlb although it applies it (`ld.so --list-tunables` shows both set).
MMAP_THRESHOLD = "glibc.malloc.mmap_threshold=65536"


@pytest.fixture
def jemalloc_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: JEMALLOC)


@pytest.fixture
def jemalloc_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: None)


@pytest.mark.usefixtures("jemalloc_found")
def test_auto_preloads_jemalloc() -> None:
    description, changes = plan("auto", {})
    assert changes == {"LD_PRELOAD": JEMALLOC}
    assert JEMALLOC in description


@pytest.mark.usefixtures("jemalloc_missing")
def test_auto_falls_back_to_a_fixed_glibc_threshold() -> None:
    description, changes = plan("auto", {})
    assert changes == {"GLIBC_TUNABLES": GLIBC_TUNABLES}
    assert description.startswith("glibc")


@pytest.mark.usefixtures("jemalloc_found")
@pytest.mark.parametrize("variable", ["LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_CONF"])
def test_auto_leaves_an_operators_own_allocator_settings_alone(variable: str) -> None:
    description, changes = plan("auto", {variable: "something"})
    assert changes == {}
    assert variable in description


@pytest.mark.usefixtures("jemalloc_found")
def test_explicit_choices_add_to_the_environment() -> None:
    _, changes = plan("jemalloc", {"LD_PRELOAD": "/opt/libx.so", "MALLOC_CONF": "narenas:2"})
    assert changes == {"LD_PRELOAD": f"{JEMALLOC} /opt/libx.so"}  # MALLOC_CONF stays
    _, changes = plan("glibc", {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})
    assert changes == {"GLIBC_TUNABLES": f"glibc.malloc.tcache_count=0:{GLIBC_TUNABLES}"}
    assert plan("system", {}) == ("system", {})


@pytest.mark.usefixtures("jemalloc_missing")
def test_jemalloc_asked_for_but_missing_is_a_clear_error() -> None:
    with pytest.raises(AllocatorError, match="apt-get install libjemalloc2"):
        plan("jemalloc", {})


def _environ(server: ServerProcess) -> dict[str, str]:
    raw = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _maps(server: ServerProcess) -> str:
    return Path(f"/proc/{server.process.pid}/maps").read_text()


def test_the_default_server_runs_on_the_bounded_allocator(served: ServerProcess) -> None:
    """Same process id (exec, not a child), and the allocator actually in use."""
    environ = _environ(served)
    if allocator.find_jemalloc() is not None:  # this machine's libraries decide `auto`
        assert "libjemalloc.so" in _maps(served)
        assert environ["LD_PRELOAD"].startswith(allocator.find_jemalloc() or "?")
        assert "allocator: jemalloc" in served.log()
    else:
        assert MMAP_THRESHOLD in environ["GLIBC_TUNABLES"]
        assert "allocator: glibc" in served.log()
    assert allocator.APPLIED in environ
    assert served.log().count(" allocator: ") == 1  # logged once, by the serving process


@pytest.mark.slow
def test_glibc_and_system_choices_on_a_real_server(tmp_path: Path) -> None:
    with start_server(tmp_path / "glibc", env={"EMBEDGATE_ALLOCATOR": "glibc"}) as server:
        assert MMAP_THRESHOLD in _environ(server)["GLIBC_TUNABLES"]
        assert "allocator: glibc" in server.log()
        assert "libjemalloc.so" not in _maps(server)
        assert httpx.get(f"{server.url}/health").status_code == 200
    with start_server(tmp_path / "system", env={"EMBEDGATE_ALLOCATOR": "system"}) as server:
        environ = _environ(server)
        assert "GLIBC_TUNABLES" not in environ
        assert allocator.APPLIED not in environ
        assert "allocator: system" in server.log()
