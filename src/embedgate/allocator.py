"""Choose the C allocator before the model loads, so the server's memory stays bounded.

Under glibc's malloc, a long-running torch CPU server grows: its dynamic mmap threshold rises
after the first large free, and from then on the activations of batches of varying shape are
carved out of the heap, which fragments (bench/soak.py measured 765 -> 1,076 MB in 240 s,
and `encode` alone does the same). Two remedies hold it flat (docs/benchmarks.md#soak):

- jemalloc, preloaded: its size classes do not fragment this way, at about glibc's speed;
- glibc with a fixed 64 KiB mmap threshold (large blocks go straight back to the kernel),
  with transparent huge pages for those blocks to cheapen the page faults. It costs speed.

The allocator must be chosen before the process allocates, so `embedgate serve` sets the
environment (LD_PRELOAD or GLIBC_TUNABLES) and re-executes itself once, with the same
arguments and process id; a variable marks the second start. Only on Linux with glibc.
"""

from __future__ import annotations

import ctypes.util
import glob
import logging
import os
import platform
import sys
from typing import Literal

Allocator = Literal["auto", "jemalloc", "glibc", "system"]

APPLIED = "EMBEDGATE_ALLOCATOR_APPLIED"  # set on the re-executed process: what it runs on
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=65536:glibc.malloc.hugetlb=1"
# jemalloc runs on its defaults (idle pages purged after 10 s): without purging
# (dirty_decay_ms:-1) it was faster but grew by 130 MB over the last two minutes of a 300 s
# soak; with them it stayed flat (docs/benchmarks.md#the-fix-embedgate_allocator).
_JEMALLOC_GLOBS = (
    "/usr/lib/*-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
    "/opt/homebrew/lib/libjemalloc.2.dylib",
)

log = logging.getLogger(__name__)


class AllocatorError(RuntimeError):
    """The allocator asked for cannot be used here."""


def find_jemalloc() -> str | None:
    for pattern in _JEMALLOC_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                return path
    name = ctypes.util.find_library("jemalloc")
    return name if name and os.path.isabs(name) else None


def _on_glibc() -> bool:
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def plan(choice: Allocator, environ: dict[str, str]) -> tuple[str, dict[str, str]]:
    """What to run on and the environment changes that make it so ({} = nothing to do).

    The operator's own LD_PRELOAD, MALLOC_CONF or GLIBC_TUNABLES always win: `auto` then
    leaves the process as it is, and an explicit choice adds to them.
    """
    on_glibc = _on_glibc()
    if choice == "jemalloc" and not on_glibc:
        raise AllocatorError("EMBEDGATE_ALLOCATOR=jemalloc needs Linux with glibc")
    if choice == "system" or not on_glibc:
        return "system", {}
    own = any(environ.get(v) for v in ("LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_CONF"))
    if choice == "auto" and own:
        return "system (the environment's LD_PRELOAD/GLIBC_TUNABLES/MALLOC_CONF)", {}
    jemalloc = find_jemalloc() if choice in ("auto", "jemalloc") else None
    if choice == "jemalloc" and jemalloc is None:
        raise AllocatorError(
            "EMBEDGATE_ALLOCATOR=jemalloc but no libjemalloc.so.2 was found "
            "(Debian/Ubuntu: apt-get install libjemalloc2)"
        )
    if jemalloc is not None:
        preload = " ".join(p for p in (jemalloc, environ.get("LD_PRELOAD", "")) if p)
        return f"jemalloc ({jemalloc})", {"LD_PRELOAD": preload}
    tunables = ":".join(t for t in (environ.get("GLIBC_TUNABLES", ""), GLIBC_TUNABLES) if t)
    return "glibc (64 KiB mmap threshold, huge pages)", {"GLIBC_TUNABLES": tunables}


def ensure(choice: Allocator) -> None:
    """Re-execute this process on the chosen allocator, once; log what it runs on.

    Returns only in the process that will serve (the first one when nothing needs changing).
    """
    applied = os.environ.get(APPLIED)
    if applied is not None:
        log.info("allocator: %s", applied)
        return
    description, changes = plan(choice, dict(os.environ))
    if not changes:
        log.info("allocator: %s", description)
        return
    environ = {**os.environ, **changes, APPLIED: description}
    sys.stdout.flush()
    sys.stderr.flush()
    # the same interpreter with the same arguments and flags, no shell involved
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)  # noqa: S606
