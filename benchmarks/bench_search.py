"""Search speed, recall and memory of the faiss index on synthetic fingerprints, against an exact
(flat, inner-product) index in the same run.

Database: N random 128-d unit vectors. Queries: database vectors plus noise, renormalised (a
degraded window stays close to its clean fingerprint: cosine about 0.8), one window at a time.
For each N: build time (training on a bounded sample + adding), milliseconds per single-window query
(k = 20, nprobe 40), recall@1 against the exact index (same top-1 id), how often the query's source
vector is the top-1, and bytes per vector.

    .venv/bin/python benchmarks/bench_search.py [--sizes 1e6 1e7] [--queries 500] [--json out.json]

1e7 vectors need about 6 GB of memory and several minutes (mostly adding to the index).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from fplib import index as fpindex

CONFIGS = {1_000_000: ["IVF256,PQ32", "IVF1024,PQ32"], 10_000_000: ["IVF256,PQ32", "IVF4096,PQ32"]}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def database(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for i in range(0, n, 1_000_000):  # in chunks, to bound temporary memory
        m = min(1_000_000, n - i)
        out[i : i + m] = unit(rng.standard_normal((m, d), dtype=np.float32))
    return out


def per_query_ms(index: faiss.Index, q: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    ids = np.empty((len(q), k), np.int64)
    t = time.perf_counter()
    for i in range(len(q)):  # one window at a time, as a live query arrives
        ids[i] = index.search(q[i : i + 1], k)[1][0]
    return 1000 * (time.perf_counter() - t) / len(q), ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--nprobe", type=int, default=40)
    ap.add_argument("--json")
    args = ap.parse_args()
    faiss.omp_set_num_threads(2)
    rows = []
    for n in (int(s) for s in args.sizes):
        xb = database(n, 128, 0)
        rng = np.random.default_rng(1)
        src = rng.choice(n, args.queries, replace=False)
        xq = unit(xb[src] + 0.045 * rng.standard_normal((args.queries, 128), dtype=np.float32))
        t = time.perf_counter()
        flat = faiss.IndexFlatIP(128)
        flat.add(xb)
        flat_build = time.perf_counter() - t
        flat_ms, flat_ids = per_query_ms(flat, xq, args.k)
        rows.append({"n": n, "index": "Flat (exact)", "build_s": flat_build, "ms_per_query": flat_ms,
                     "recall_at_1": 1.0, "source_top1": float(np.mean(flat_ids[:, 0] == src)),
                     "bytes_per_vector": 4 * 128})
        for factory in CONFIGS.get(n, [fpindex.factory_string()]):
            t = time.perf_counter()
            idx = fpindex.new_index(factory, 128)
            fpindex.train_index(idx, xb, max_train=100_000)
            train_s = time.perf_counter() - t
            idx.add_with_ids(xb, np.arange(n, dtype=np.int64))
            build_s = time.perf_counter() - t
            fpindex.set_nprobe(idx, args.nprobe)
            ms, ids = per_query_ms(idx, xq, args.k)
            rows.append({"n": n, "index": f"{factory}, nprobe {fpindex.get_nprobe(idx)}", "build_s": build_s,
                         "train_s": train_s, "ms_per_query": ms,
                         "recall_at_1": float(np.mean(ids[:, 0] == flat_ids[:, 0])),
                         "source_top1": float(np.mean(ids[:, 0] == src)),
                         "bytes_per_vector": fpindex.bytes_per_vector(idx)})
            del idx
        del xb, flat
    print(f"\nbench_search: faiss {faiss.__version__}, 2 threads, {args.queries} single-window queries, k {args.k}")
    print(f"{'N':>10s}  {'index':28s}{'build s':>9s}{'ms/query':>10s}{'vs flat':>9s}{'recall@1':>10s}"
          f"{'source@1':>10s}{'B/vector':>10s}")
    for r in rows:
        flat_ms = next(x["ms_per_query"] for x in rows if x["n"] == r["n"] and x["index"].startswith("Flat"))
        print(f"{r['n']:>10.0e}  {r['index']:28s}{r['build_s']:9.1f}{r['ms_per_query']:10.3f}"
              f"{flat_ms / r['ms_per_query']:8.1f}x{r['recall_at_1']:10.3f}{r['source_top1']:10.3f}"
              f"{r['bytes_per_vector']:10.0f}")
    print("vs flat: how many times faster than the exact search; recall@1: same top-1 as the exact search")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
