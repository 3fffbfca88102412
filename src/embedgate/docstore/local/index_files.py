"""HNSW graph files of a tenant's collections: a cache of what SQLite holds.

Per collection (by its integer id, never its name): ``collection-<id>-<token>.usearch``,
the graph, and ``collection-<id>.json``, the sidecar naming the graph file with the
collection version and vector count it reflects. A save writes a new graph file, then
atomically replaces the sidecar, then removes older graph files: a crash at any point
leaves a sidecar that names a complete graph, or none. A missing, unreadable or
mismatched graph is rebuilt; a stale one catches up (``catch_up``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from usearch.index import Index

from embedgate.docstore.local.index import Labels, VectorIndex

log = logging.getLogger(__name__)
FORMAT = 1


def sidecar_path(directory: Path, collection_id: int) -> Path:
    return directory / f"collection-{collection_id}.json"


def save(index: VectorIndex, directory: Path, collection_id: int) -> None:
    """Persist the graph (or remove the files when there is none); fsynced."""
    if index.graph is None:
        remove(directory, collection_id)
        return
    name = f"collection-{collection_id}-{secrets.token_hex(6)}.usearch"
    index.graph.save(str(directory / name))
    _fsync(directory / name)
    meta = {"format": FORMAT, "file": name, "version": index.version, "count": index.count,
            "dimensions": index.dimensions}  # fmt: skip
    temporary = directory / f".collection-{collection_id}.json.tmp"
    temporary.write_text(json.dumps(meta))
    _fsync(temporary)
    os.replace(temporary, sidecar_path(directory, collection_id))
    _fsync(directory)
    _remove_graphs(directory, collection_id, keep=name)
    index.unsaved = 0


def save_changed(index: VectorIndex, directory: Path, collection_id: int, *,
                 drift: float = 0.0) -> None:  # fmt: skip
    """Save the graph if more than ``drift`` of it changed since it was saved. A failure is
    logged: it only costs a catch-up or a rebuild at the next load."""
    if index.graph is None or index.unsaved == 0 or index.unsaved < drift * index.count:
        return
    if not directory.exists():  # the tenant was deleted
        return
    try:
        save(index, directory, collection_id)
    except OSError as exc:
        log.warning("could not save the vector index of collection %d: %s", collection_id, exc)


def remove(directory: Path, collection_id: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        sidecar_path(directory, collection_id).unlink()
    _remove_graphs(directory, collection_id, keep=None)


def remove_orphans(directory: Path, collection_ids: set[int]) -> None:
    """Remove the files of collections that no longer exist (deleted before a crash)."""
    for path in directory.glob(".collection-*.tmp"):
        path.unlink(missing_ok=True)
    for path in directory.glob("collection-*"):
        number = path.name.removeprefix("collection-").split("-")[0].split(".")[0]
        if number.isdigit() and int(number) not in collection_ids:
            path.unlink(missing_ok=True)


def attach(index: VectorIndex, directory: Path, collection_id: int,
           versions: Labels) -> bool:  # fmt: skip
    """Load the saved graph into ``index`` and catch it up; False if it must be rebuilt.

    ``versions[i]`` is the collection version that last changed ``index.labels[i]``.
    """
    try:
        meta = json.loads(sidecar_path(directory, collection_id).read_text())
        graph = _restore(directory, meta, index)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("rebuilding the vector index of collection %d: %s", collection_id, exc)
        return False
    try:
        index.unsaved = catch_up(index, graph, int(meta["version"]), versions)
    except (ValueError, RuntimeError) as exc:
        log.warning("rebuilding the vector index of collection %d: %s", collection_id, exc)
        return False
    index.graph = graph
    return True


def catch_up(index: VectorIndex, graph: Index, saved: int, versions: Labels) -> int:
    """Make ``graph`` hold exactly ``index``'s vectors; the number of changes it took."""
    keys = graph.keys[:].astype(np.int64) if len(graph) else np.empty(0, dtype=np.int64)
    current = index.labels
    gone = np.setdiff1d(keys, current)
    missing = np.setdiff1d(current, keys)
    stale = np.union1d(current[versions > saved], missing)
    outdated = np.intersect1d(stale, keys)
    if len(gone) or len(outdated):
        graph.remove(np.concatenate([gone, outdated]).astype(np.uint64))
    if len(stale):
        graph.add(stale.astype(np.uint64), index.vectors_of(stale))
    return int(len(gone) + len(stale))


def _restore(directory: Path, meta: dict[str, Any], index: VectorIndex) -> Index:
    if meta.get("format") != FORMAT or meta["dimensions"] != index.dimensions:
        raise ValueError("the index files have another format or dimensions")
    if int(meta["version"]) > index.version:
        raise ValueError("the index files are newer than the database")
    name = str(meta["file"])
    if "/" in name or not name.startswith("collection-"):
        raise ValueError("the sidecar names an unexpected file")
    graph = Index.restore(str(directory / name))
    if graph is None or graph.ndim != index.dimensions or len(graph) != int(meta["count"]):
        raise ValueError("the graph file does not match its sidecar")
    return graph


def _remove_graphs(directory: Path, collection_id: int, keep: str | None) -> None:
    for path in directory.glob(f"collection-{collection_id}-*.usearch"):
        if path.name != keep:
            path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
