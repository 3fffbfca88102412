"""The embedded store's vector index on synthetic unit vectors: exact numpy vs HNSW.

    python bench/search_index.py [--count 100000] [--dims 384] [--ef 128]
                                 [--data clustered|latent|uniform]
    python bench/search_index.py --tenants 10000

Index mode: builds ``VectorIndex`` (the float32 matrix, then the int8 HNSW graph), and
times single queries (as the store runs them, one per call) exactly and through the graph,
unfiltered and with a metadata filter matching 1% (searched exactly) and 25% (HNSW,
oversampled) of the vectors; recall@10 is against the exact top 10. Also the graph's save
and restore (what a lazy load costs) and the process's resident memory. ``clustered``
vectors sit around 1,000 topics on a 48-dimensional subspace plus noise, like sentence
embeddings; ``latent`` ones fill a 64-dimensional subspace evenly (no topics: harder);
``uniform`` vectors are the worst case, where no ANN index finds neighbours (all are
about equally far). Tenants mode: that many tenants with a 20-document
collection each, written and searched through ``LocalDocumentStore``; resident memory and
open files at the end. Prints one JSON line; targets: p99 under 10 ms, recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from embedgate.docstore.base import Collection, Document, Upsert
from embedgate.docstore.local import index as local_index
from embedgate.docstore.local import index_files as local_index_files
from embedgate.docstore.local.index import VectorIndex
from embedgate.docstore.local.store import LocalDocumentStore

Array = np.ndarray[Any, Any]


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def disk_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*"))


def vectors(count: int, dims: int, kind: str, seed: int) -> Array:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        rows = rng.standard_normal((count, dims), dtype=np.float32)
    elif kind == "latent":
        basis = np.random.default_rng(0).standard_normal((64, dims), dtype=np.float32)
        rows = rng.standard_normal((count, 64), dtype=np.float32) @ basis
        rows += 0.4 * rng.standard_normal((count, dims), dtype=np.float32)
    else:
        base = np.random.default_rng(0)
        basis = base.standard_normal((48, dims), dtype=np.float32)
        topics = base.standard_normal((1_000, 48), dtype=np.float32)
        latent = topics[rng.integers(0, 1_000, count)] + rng.standard_normal((count, 48))
        rows = latent.astype(np.float32) @ basis + 3 * rng.standard_normal((count, dims))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def timed(index: VectorIndex, queries: Array, allowed: Array | None) -> tuple[list[Any], Array]:
    found, took = [], []
    for query in queries:
        start = time.perf_counter()
        found.append([label for label, _ in index.search(query, 10, allowed)])
        took.append(time.perf_counter() - start)
    return found, np.array(took) * 1000


def summary(took: Array, found: list[Any] | None = None, truth: list[Any] | None = None
            ) -> dict[str, float]:  # fmt: skip
    out = {"p50_ms": round(float(np.percentile(took, 50)), 3),
           "p99_ms": round(float(np.percentile(took, 99)), 3)}  # fmt: skip
    if found is not None and truth is not None:
        hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
        out["recall_at_10"] = round(hits / (10 * len(truth)), 4)
    return out


def index_bench(count: int, dims: int, kind: str, queries: int) -> dict[str, Any]:
    rss = rss_mb()
    data, asked = vectors(count, dims, kind, seed=1), vectors(queries, dims, kind, seed=2)
    labels = np.arange(count, dtype=np.int64)
    index = VectorIndex(dims, 1, exact_threshold=count)  # exact only, for now
    index.load(labels, data)
    truth, exact = timed(index, asked, None)
    rare, quarter = labels[labels % 100 == 7], labels[labels % 4 == 1]
    rare_truth, _ = timed(index, asked[:200], rare)
    quarter_truth, _ = timed(index, asked[:200], quarter)
    rss_matrix = rss_mb()
    index.exact_threshold = min(count - 1, 20_000)
    start = time.perf_counter()
    index.ensure_graph()
    build = time.perf_counter() - start
    found, ann = timed(index, asked, None)
    rare_found, rare_took = timed(index, asked[:200], rare)
    quarter_found, quarter_took = timed(index, asked[:200], quarter)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        local_index_files.save(index, Path(folder), 1)
        saved = time.perf_counter() - start
        size = sum(path.stat().st_size for path in Path(folder).iterdir())
        start = time.perf_counter()
        assert local_index_files.attach(index, Path(folder), 1, np.ones(count, dtype=np.int64))
        restored = time.perf_counter() - start
    sample = data[np.random.default_rng(3).integers(0, count, 2_000)]
    return {
        "bench": "search_index", "count": count, "dims": dims, "data": kind,
        "expansion_search": local_index.EXPANSION_SEARCH,
        "top1_similarity_mean": round(float(np.mean([(data @ q).max() for q in asked[:50]])), 3),
        "pair_similarity_mean": round(float(np.mean(sample[:1000] @ sample[1000:].T)), 3),
        "exact": summary(exact), "hnsw": summary(ann, found, truth),
        "exact_filter_1pct": summary(rare_took, rare_found, rare_truth),
        "hnsw_filter_25pct": summary(quarter_took, quarter_found, quarter_truth),
        "build_s": round(build, 1), "graph_file_mb": round(size / 2**20, 1),
        "save_s": round(saved, 2), "restore_s": round(restored, 2),
        "matrix_rss_mb": round(rss_matrix - rss, 1),
        "graph_rss_mb": round(rss_mb() - rss_matrix, 1),
        "index_nbytes_mb": round(index.nbytes / 2**20, 1),
    }  # fmt: skip


async def tenants_bench(tenants: int) -> dict[str, Any]:
    rows = vectors(20 * tenants, 384, "clustered", seed=4)
    with tempfile.TemporaryDirectory() as folder:
        rss, files = rss_mb(), len(os.listdir("/proc/self/fd"))
        store = LocalDocumentStore(Path(folder), memory_budget_bytes=64 << 20)
        start = time.perf_counter()
        for n in range(tenants):
            tenant = f"tenant-{n}"
            docs = Collection("docs", "m", 384, {}, datetime.now(UTC))
            await store.create_collection(tenant, docs)
            await store.collection(tenant, "docs").upsert([
                Upsert(Document(f"d{i}", f"document {i} of tenant {n}"), "h", rows[20 * n + i])
                for i in range(20)
            ])  # fmt: skip
            await store.collection(tenant, "docs").search_vector(
                rows[20 * n], top_k=5, filter=None, min_score=None
            )
        took = time.perf_counter() - start
        result = {
            "bench": "search_tenants", "tenants": tenants, "documents_each": 20,
            "seconds": round(took, 1), "rss_mb": round(rss_mb() - rss, 1),
            "open_files": len(os.listdir("/proc/self/fd")) - files,
            "open_databases": store.cache.open_count(),
            "loaded_index_mb": round(store.cache.loaded_bytes() / 2**20, 1),
            "disk_mb": round(disk_bytes(Path(folder)) / 2**20, 1),
        }  # fmt: skip
        await store.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--data", choices=["clustered", "latent", "uniform"], default="clustered")
    parser.add_argument("--ef", type=int, default=local_index.EXPANSION_SEARCH,
                        help="HNSW candidates per search (default: the store's)")  # fmt: skip
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--tenants", type=int, default=0, help="run the tenants bench instead")
    args = parser.parse_args()
    local_index.EXPANSION_SEARCH = args.ef
    if args.tenants:
        print(json.dumps(anyio.run(tenants_bench, args.tenants)))
    else:
        print(json.dumps(index_bench(args.count, args.dims, args.data, args.queries)))


if __name__ == "__main__":
    main()
