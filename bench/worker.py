"""A child process that answers one JSON line per JSON line: the benchmarks' raw references.

A reference (sentence-transformers' ``encode``, a CrossEncoder's ``predict``) runs in a
process of its own, so that it never shares an interpreter, a GIL or torch threads with
the load generator or the server it is compared with; the parent asks it one job at a time
and it is idle in between.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any


class JsonWorker:
    """The parent's side: ``command`` starts a child that prints its ``info`` line first,
    then answers each job (``ask``) with one line."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        self.info: dict[str, Any] = self.ask(None)

    def ask(self, job: dict[str, Any] | None) -> dict[str, Any]:
        """``job``'s answer (``None``: only read the next line)."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        if job is not None:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker {self.proc.args!r} died")
        return dict(json.loads(line))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def answer_jobs(info: dict[str, Any], answer: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The child's side: ``info`` first, then ``answer(job)`` for each job line on stdin."""
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        print(json.dumps(answer(json.loads(line))), flush=True)
