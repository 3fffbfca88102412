"""The vectors of one collection in memory, searched exactly or through an HNSW graph.

All vectors sit in a float32 matrix (exact search, exact scores). Past ``exact_threshold``
vectors, a usearch HNSW graph over int8 copies of them (a quarter of the memory, ~5x
faster to build than float32) proposes candidates, which the matrix re-scores exactly:
scores are always true cosine similarities, and re-scoring ``ef`` candidates instead of
``top_k`` lifts recall. The graph is dropped again at half the threshold. Not
thread-safe: the store calls it under the tenant's lock.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from usearch.index import Index

from embedgate.docstore.base import Vector

Labels = npt.NDArray[np.int64]
Scored = list[tuple[int, float]]
CONNECTIVITY = 32  # HNSW edges per node: with int8 vectors, M=32 beats M=16 at equal latency
EXPANSION_ADD = 128
EXPANSION_SEARCH = 256  # candidates per search: recall@10 >= 0.95 even on bench --data latent
OVERSAMPLE = 2.0  # filtered ANN search asks for top_k * (n / matching) * OVERSAMPLE
# With a graph, a filter matching m of n vectors is searched exactly over those m rows when
# m * m <= SUBSET * n: gathering m rows then costs about what the oversampled graph search
# (top_k * n / m * OVERSAMPLE candidates) does; m = 7,000 of 100,000 at the crossover.
SUBSET = 500


def new_graph(dimensions: int) -> Index:
    return Index(ndim=dimensions, metric="ip", dtype="i8", connectivity=CONNECTIVITY,
                 expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)  # fmt: skip


class VectorIndex:
    def __init__(self, dimensions: int, version: int, exact_threshold: int) -> None:
        self.dimensions = dimensions
        self.version = version  # the collection version these vectors reflect
        self.exact_threshold = max(0, exact_threshold)
        self.graph: Index | None = None
        self.unsaved = 0  # graph changes since it was last saved (or built)
        self.dropped = False  # the graph was dropped: its files are stale
        self._labels: Labels = np.empty(0, dtype=np.int64)
        self._matrix: npt.NDArray[np.float32] = np.empty((0, dimensions), dtype=np.float32)
        self._slots: dict[int, int] = {}
        self._sorted: tuple[Labels, Labels] | None = None  # (labels sorted, their slots)

    @property
    def count(self) -> int:
        return len(self._slots)

    @property
    def labels(self) -> Labels:
        return self._labels[: self.count]

    @property
    def nbytes(self) -> int:
        """Resident bytes, about: usearch's own ``memory_usage`` counts 16 MB reserved for
        even a tiny graph, while it takes an int8 row and two lists of edges per vector."""
        graph = 0
        if self.graph is not None:
            graph = 65_536 + self.count * (self.dimensions + 16 * CONNECTIVITY)
        return int(self._matrix.nbytes + self._labels.nbytes + 100 * self.count + graph)

    def load(self, labels: Labels, matrix: npt.NDArray[np.float32]) -> None:
        """Replace the vectors (no graph: ``attach`` one, or ``ensure_graph``)."""
        self._labels, self._matrix = labels.astype(np.int64), matrix.astype(np.float32)
        self._slots = {int(label): slot for slot, label in enumerate(self._labels)}
        self._sorted, self.graph = None, None

    def vectors_of(self, labels: Labels) -> npt.NDArray[np.float32]:
        return self._matrix[[self._slots[int(label)] for label in labels]]

    def apply(self, changes: dict[int, Vector | None], version: int) -> None:
        """Set (vector) or remove (None) each label, then keep the graph in step."""
        present = [label for label in changes if label in self._slots]
        for label, vector in changes.items():
            if vector is None:
                self._remove(label)
            else:
                self._set(label, vector)
        if self.graph is not None and changes:
            if present:
                self.graph.remove(np.array(present, dtype=np.uint64))
            added = [(label, v) for label, v in changes.items() if v is not None]
            if added:
                keys = np.array([label for label, _ in added], dtype=np.uint64)
                self.graph.add(keys, np.stack([v for _, v in added]).astype(np.float32))
            self.unsaved += len(changes)
        self.version = version
        self.ensure_graph()

    def ensure_graph(self) -> None:
        if self.graph is None and self.count > self.exact_threshold:
            self.graph = new_graph(self.dimensions)
            self.graph.add(self.labels.astype(np.uint64), self._matrix[: self.count])
            self.unsaved = self.count
        elif self.graph is not None and self.count <= self.exact_threshold // 2:
            self.graph, self.unsaved, self.dropped = None, 0, True

    def search_broad(self, query: Vector, top_k: int,
                     keep: Callable[[Labels], Labels]) -> Scored | None:  # fmt: skip
        """For a filter that many vectors pass: the graph's usual candidates that ``keep``
        accepts, if at least ``OVERSAMPLE * top_k`` do (what ``search`` would ask the
        graph for, given the filter's share); None when the filter must be listed in full.
        """
        query = self._query(query)
        if self.graph is None or top_k <= 0 or self.count == 0:
            return None
        kept = keep(self._candidates(query, min(self.count, EXPANSION_SEARCH)))
        return self._rescore(kept, query, top_k) if len(kept) >= OVERSAMPLE * top_k else None

    def search(self, query: Vector, top_k: int, allowed: Labels | None) -> Scored:
        """The best ``top_k`` ``(label, score)``, best first; among ``allowed`` (sorted
        labels) when it is set."""
        query = self._query(query)
        if top_k <= 0 or self.count == 0 or (allowed is not None and len(allowed) == 0):
            return []
        if self.graph is None:
            scores = self._matrix[: self.count] @ query
            if allowed is not None:
                scores[~np.isin(self.labels, allowed)] = -np.inf
            return _best(self.labels, scores, top_k)
        if allowed is not None and len(allowed) ** 2 <= SUBSET * self.count:
            return self._rescore(allowed, query, top_k)
        return self._search_graph(query, top_k, allowed)

    def _search_graph(self, query: Vector, top_k: int, allowed: Labels | None) -> Scored:
        assert self.graph is not None
        wanted = top_k
        if allowed is not None:
            wanted = int(np.ceil(top_k * self.count / len(allowed) * OVERSAMPLE))
        count = min(self.count, max(wanted, EXPANSION_SEARCH))
        found = self._candidates(query, count)
        if allowed is not None:
            kept = found[_members(found, allowed)]
            if len(kept) < top_k and count < self.count:  # too few survived: be exact
                return self._rescore(allowed, query, top_k)
            found = kept
        return self._rescore(found, query, top_k)

    def _query(self, query: Vector) -> Vector:
        row = np.asarray(query, dtype=np.float32)
        if row.shape != (self.dimensions,):
            raise ValueError(f"the query must have {self.dimensions} dimensions")
        return row

    def _candidates(self, query: Vector, count: int) -> Labels:
        assert self.graph is not None
        self.graph.expansion_search = count  # type: ignore[misc]  # the setter is untyped
        found: Labels = self.graph.search(query, count).keys.astype(np.int64)
        return found

    def _rescore(self, labels: Labels, query: Vector, top_k: int) -> Scored:
        slots = self._slots_of(labels)
        if len(slots) == 0:
            return []
        return _best(self._labels[slots], self._matrix[slots] @ query, top_k)

    def _slots_of(self, labels: Labels) -> Labels:
        """The matrix rows of those ``labels`` that are present."""
        if len(labels) <= 1024:  # graph candidates: dictionary lookups beat sorting
            found = (self._slots.get(int(label), -1) for label in labels)
            slots = np.fromiter(found, dtype=np.int64, count=len(labels))
            return slots[slots >= 0]
        if self._sorted is None:  # kept until a vector is added or removed
            order = np.argsort(self.labels, kind="stable")
            self._sorted = (self.labels[order], order)
        ordered, order = self._sorted
        rows: Labels = order[np.searchsorted(ordered, labels[_members(labels, ordered)])]
        return rows

    def _set(self, label: int, vector: Vector) -> None:
        row = np.asarray(vector, dtype=np.float32)
        if row.shape != (self.dimensions,):
            raise ValueError(f"vectors of this collection have {self.dimensions} dimensions")
        slot = self._slots.get(label)
        if slot is None:
            self._sorted = None
            slot = self.count
            if slot == len(self._labels):
                self._grow()
            self._slots[label] = slot
            self._labels[slot] = label
        self._matrix[slot] = row

    def _remove(self, label: int) -> None:
        slot = self._slots.pop(label, None)
        if slot is None:
            return
        self._sorted = None
        last = self.count  # the count without the removed label: the last used slot
        if slot != last:  # move the last row into the hole
            moved = int(self._labels[last])
            self._labels[slot], self._matrix[slot] = moved, self._matrix[last]
            self._slots[moved] = slot

    def _grow(self) -> None:
        size = max(64, 2 * len(self._labels))
        labels = np.empty(size, dtype=np.int64)
        matrix = np.empty((size, self.dimensions), dtype=np.float32)
        labels[: self.count], matrix[: self.count] = self.labels, self._matrix[: self.count]
        self._labels, self._matrix = labels, matrix


def _members(labels: Labels, ordered: Labels) -> npt.NDArray[np.bool_]:
    """Which ``labels`` are in the sorted array ``ordered`` (``np.isin`` would sort it)."""
    if len(ordered) == 0:
        return np.zeros(len(labels), dtype=np.bool_)
    where = np.minimum(np.searchsorted(ordered, labels), len(ordered) - 1)
    found: npt.NDArray[np.bool_] = ordered[where] == labels
    return found


def _best(labels: Labels, scores: npt.NDArray[np.float32], top_k: int) -> Scored:
    valid = np.flatnonzero(scores > -np.inf)
    if len(valid) > top_k:
        valid = valid[np.argpartition(-scores[valid], top_k - 1)[:top_k]]
    order = valid[np.lexsort((labels[valid], -scores[valid]))]
    return [(int(labels[i]), float(scores[i])) for i in order]
