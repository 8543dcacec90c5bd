"""Index choices for large catalogues, measured: for each faiss factory string, training-sample size and
nprobe, the recall against an exact search of the same catalogue, the milliseconds a 3-s query's search
takes, build time and bytes per window, at catalogues of 1e6, 1e7 or 5e7 windows.

    .venv/bin/python benchmarks/bench_search.py [--sizes 1e6 1e7] [--factories IVF4096,PQ32 ...]
        [--nprobes 8 16 32 64] [--max_train 200000 ...] [--queries 48] [--json out.json] [--quick]

Catalogue: the demo's real songs fingerprinted by the shipped model, plus filler up to N windows
(``largecat.py``: real fingerprint sequences turned by random orthogonal matrices), generated chunk by
chunk, so 5e7 windows need no 25 GB of memory. Queries: 3-s excerpts of the real songs at random
offsets with noise at 5 dB, fingerprinted at 4 phases as the recogniser does (17 windows each), each
searched as one batch of 17 windows with k = 20, as a query is, on 2 threads. The exact search is
faiss's brute-force inner product over every window (in chunks), in the same run.

- recall@1: the index's first neighbour is the exact search's.
- recall@1 re-ranked: the exact first neighbour is among the index's k = 20 candidates. The recogniser
  re-scores its candidates on the uncompressed fingerprints, so this is the recall@1 it gets.
- source@20: a window of the right song within 0.25 s of the query window is among the 20 (the task
  itself; the exact search's figure is its ceiling).
- ms: median milliseconds to search one 3-s query's 17 windows (the recogniser's search step, without
  re-scoring); build: training on a random sample of ``max_train`` windows plus adding every window.

``--quick``: a catalogue of 5e4 windows over 4 real songs, two factories (IVF256,PQ32 and
IVF256,PQ32x4fs) at nprobe 8 and 16, 8 queries (under a minute); its figures are not comparable with a
full run's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from largecat import Database, make_queries, real_songs  # noqa: E402

DEFAULT_FACTORIES = {
    1_000_000: ["IVF1024,PQ32", "IVF4096,PQ32", "IVF4096,PQ64x4fs"],
    10_000_000: ["IVF4096,PQ32", "IVF16384_HNSW32,PQ32", "IVF16384_HNSW32,PQ64x4fs", "IVF16384_HNSW32,PQ32x4fs"],
    50_000_000: ["IVF16384_HNSW32,PQ32", "IVF16384_HNSW32,PQ64x4fs", "IVF65536_HNSW32,PQ64x4fs"],
}
PHASES, K = 4, 20


def query_windows(model, fe, queries: dict, rows_of: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each 3-s query's fingerprints at 4 phases ``[17, d]`` and, per window, its source row (the database
    window at or before it in the right song; the next one counts too)."""
    from fplib.extraction import fingerprint

    qfe = replace(fe, hop_s=fe.hop_len / PHASES / fe.sr)
    xs, src = [], []
    for wav, name, off in zip(queries["q3"], queries["name3"], queries["offset3"]):
        x = fingerprint(wav, model, qfe)
        t = float(off) + np.arange(len(x)) * qfe.hop_s
        xs.append(np.ascontiguousarray(x, np.float32))
        src.append(rows_of[str(name)] + np.floor(t / fe.hop_s).astype(np.int64))
    return xs, src


def exact_search(db: Database, xq: np.ndarray) -> tuple[np.ndarray, float]:
    """The exact ``K`` first neighbours ``[windows, K]`` of each query window over the whole database, and
    the seconds taken."""
    t0 = time.perf_counter()
    best_s = np.full((len(xq), K), -np.inf, np.float32)
    best_i = np.full((len(xq), K), -1, np.int64)
    for first, block in db.chunks():
        s, i = faiss.knn(xq, block, K, metric=faiss.METRIC_INNER_PRODUCT)
        s, i = np.concatenate([best_s, s], 1), np.concatenate([best_i, i + first], 1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :K]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    return best_i, time.perf_counter() - t0


def source_found(ids: np.ndarray, src: np.ndarray) -> float:
    """Share of query windows with a window of the right song within 0.25 s (``src`` or the next) among ``ids``."""
    return float(np.mean(((ids == src[:, None]) | (ids == src[:, None] + 1)).any(1)))


def search_all(index, xs: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Every query's windows searched as one batch each: the ids ``[windows, K]`` and the median ms per query."""
    index.search(xs[0], K)  # warm-up
    ids, times = [], []
    for x in xs:
        t = time.perf_counter()
        ids.append(index.search(x, K)[1])
        times.append(time.perf_counter() - t)
    return np.concatenate(ids), 1000 * statistics.median(times)


def measure_factory(db: Database, factory: str, max_train: int, nprobes: list[int], xs, exact, src) -> list[dict]:
    from fplib import index as fpindex

    t0 = time.perf_counter()
    idx = fpindex.new_index(factory, db.pool.shape[1])
    idx.train(db.sample(max_train))
    train_s = time.perf_counter() - t0
    for first, block in db.chunks():
        idx.add_with_ids(block, np.arange(first, first + len(block), dtype=np.int64))
    build_s = time.perf_counter() - t0
    rows = []
    nlist = faiss.extract_index_ivf(idx).nlist
    for nprobe in nprobes:
        if nprobe > nlist:
            continue
        fpindex.set_nprobe(idx, nprobe)
        ids, ms = search_all(idx, xs)
        rows.append(
            {
                "n": db.n,
                "factory": factory,
                "max_train": max_train,
                "nprobe": nprobe,
                "ms": ms,
                "train_s": train_s,
                "build_s": build_s,
                "bytes_per_window": fpindex.bytes_per_vector(idx),
                "recall_at_1": float(np.mean(ids[:, 0] == exact)),
                "recall_reranked": float(np.mean((ids == exact[:, None]).any(1))),
                "source_at_k": source_found(ids, src),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6], help="catalogue sizes in windows")
    ap.add_argument("--factories", nargs="+", help="faiss factory strings (default: a set per size)")
    ap.add_argument("--nprobes", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--max_train", nargs="+", type=int, default=[200_000], help="training-sample sizes")
    ap.add_argument("--songs", type=int, default=16, help="real songs (60 s each)")
    ap.add_argument("--queries", type=int, default=48, help="3-s queries")
    ap.add_argument("--filler_song", type=int, default=7200)
    ap.add_argument("--json")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="one small catalogue, two factories, few queries (under "
        "a minute; figures not comparable with a full run's)",
    )
    args = ap.parse_args()
    if args.quick:
        print(
            "bench_search QUICK MODE: 5e4 windows over 4 real songs, 8 queries; the figures are not comparable "
            "with a full run's",
            flush=True,
        )
        args.sizes, args.factories, args.nprobes = [5e4], ["IVF256,PQ32", "IVF256,PQ32x4fs"], [8, 16]
        args.max_train, args.songs, args.queries = [20_000], 4, 8
    faiss.omp_set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        real, songs, noises, model, fe = real_songs(Path(tmp), args.songs)
        catalogue_songs = real.songs()
        pool = np.concatenate([real.vectors(s) for s in catalogue_songs])
        starts = np.cumsum([0] + [s.n_vectors for s in catalogue_songs])
        rows_of = {s.name: int(starts[i]) for i, s in enumerate(catalogue_songs)}
        queries = make_queries(songs, fe.sr, noises, args.queries, lengths=(3.0,))
        xs, src = query_windows(model, fe, queries, rows_of)
        real.close()
    xq, src = np.concatenate(xs), np.concatenate(src)
    for n in (int(s) for s in args.sizes):
        db = Database(pool, n, args.filler_song)
        exact_k, exact_s = exact_search(db, xq)
        exact = exact_k[:, 0]
        rows.append(
            {
                "n": n,
                "factory": "exact (brute force)",
                "max_train": 0,
                "nprobe": 0,
                "ms": 1000 * exact_s / len(xs),
                "train_s": 0.0,
                "build_s": 0.0,
                "bytes_per_window": 512.0,
                "recall_at_1": 1.0,
                "recall_reranked": 1.0,
                "source_at_k": source_found(exact_k, src),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        for factory in args.factories or DEFAULT_FACTORIES.get(n, ["IVF4096,PQ32"]):
            for max_train in args.max_train:
                rows += measure_factory(db, factory, max_train, args.nprobes, xs, exact, src)
    report(rows, args, len(xs))


def report(rows: list[dict], args, n_queries: int) -> None:
    print(
        f"\nbench_search: faiss {faiss.__version__}, 2 threads; {n_queries} 3-s queries at noise 5 dB, 4 phases "
        f"(17 windows each, one search of k = {K} per query)"
    )
    print(
        "| windows | index | train sample | nprobe | ms per 3-s query | x exact | recall@1 | recall@1 re-ranked "
        "| source@20 | build s (train) | bytes/window |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        exact_ms = next(x["ms"] for x in rows if x["n"] == r["n"] and x["nprobe"] == 0)
        print(
            f"| {r['n']:.0e} | {r['factory']} | {r['max_train'] or ''} | {r['nprobe'] or ''} | {r['ms']:.2f} | "
            f"{exact_ms / r['ms']:.0f}x | {r['recall_at_1']:.3f} | {r['recall_reranked']:.3f} | "
            f"{r['source_at_k']:.3f} | {r['build_s']:.0f} ({r['train_s']:.0f}) | {r['bytes_per_window']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
