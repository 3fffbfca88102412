"""The server process's garbage collector, settled once the server has started.

A served process holds a few hundred thousand container objects from its imports (torch,
transformers, FastAPI, pydantic) and its models; CPython's default thresholds run a full
(generation 2) collection every ~70,000 net allocations, and each one walks all of them:
measured in front of the stand-in engine (docs/benchmarks.md), 11 to 14 full collections
in 8 s at 64 clients, up to 150 ms each with the event loop stopped, and about a quarter
of the process's CPU spent collecting. What is alive at the end of start-up stays alive,
so it is moved out of the collector's sight (``gc.freeze``), and the first generation is
collected after more allocations: requests make almost no reference cycles (their objects
go by reference counting), so that costs little memory and saves most collections.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("embedgate.gc")

# Net allocations of container objects before a generation-0 collection (CPython: 700).
GEN0_THRESHOLD = 10_000


def settle() -> None:
    """Collect once, freeze what survived start-up, and collect the young less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    log.debug("%d objects frozen out of garbage collection", gc.get_freeze_count())
