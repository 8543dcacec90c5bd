"""Recognition on a large catalogue, end to end (front end, model, search, re-ranking, decision): start-up
time, milliseconds per 1-, 3- and 10-s query, resident memory and hit rate, for catalogues of N windows,
next to the same queries on the real songs alone (the reference, measured in the same run) and the
recogniser's former start-up (every song's fingerprints read into memory before the first query).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1e6 1e7] [--factory IVF4096,PQ32 ...] [--nprobe 40]
        [--more_nprobes 128 256]
        [--store_dtype float32|float16] [--quick]

Each catalogue holds the real songs (the demo corpus's synthetic music, fingerprinted with the shipped
model; the queries are cut from them, with noise at 5 dB) plus filler up to N windows: the real songs'
fingerprint sequences, each turned by a random orthogonal matrix, so the filler is clustered like
real fingerprints and related to no query (``largecat.py``). One faiss index is built per size from the float32 store;
the catalogue is then measured with its float32 store and again after ``compact(dtype="float16")``.
Every measurement runs in a fresh process (so start-up and memory are the recogniser's alone), with
the files in the page cache (warm). Resident memory is split into anonymous (the process's own) and
file-backed pages (the memory-mapped store and whatever the page cache shares).

``--quick``: one catalogue of 5e4 windows (IVF256,PQ32, nprobe 16) over 4 real songs, 4 queries per
length (under a minute); its figures are not comparable with a full run's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from largecat import LENGTHS, Database, make_queries, real_songs  # noqa: E402


def memory_mb() -> dict:
    """This process's resident memory (MiB) from /proc: total, anonymous, file-backed, and the peak."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def measure(cat_dir: str, index_path: str, queries: str, eager: bool, nprobe: int | None = None) -> dict:
    """In a fresh process: open the catalogue and the recogniser, run every query; the figures as a dict."""
    t0 = time.perf_counter()
    from fplib import pretrained
    from fplib.catalogue import Catalogue
    from fplib.checkpoints import load_model
    from fplib.search import Recognizer

    model, _ = load_model(pretrained.default_model())
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    cat = Catalogue(cat_dir)
    rec = Recognizer(model, cat, index_path, phases=4, decision="margin", nprobe=nprobe)
    if eager:  # what the recogniser did before the store: every song's fingerprints in a dict
        rec.eager = {s.id: cat.vectors(s) for s in rec.songs}
    startup = time.perf_counter() - t0
    data = np.load(queries)
    out = {"startup_s": startup, "model_load_s": t_import, "ms": {}, "hits": {}, "n": {}}
    for length in LENGTHS:
        qs, names, offsets = data[f"q{length:g}"], data[f"name{length:g}"], data[f"offset{length:g}"]
        rec.recognize(qs[0])  # warm-up (inference session, first touches)
        times, hits = [], 0
        for q, name, off in zip(qs, names, offsets):
            t = time.perf_counter()
            r = rec.recognize(q)
            times.append(time.perf_counter() - t)
            hits += bool(r.best and r.best.name == str(name) and abs(r.best.offset_s - float(off)) <= 0.5)
        out["ms"][f"{length:g}"] = 1000 * statistics.median(times)
        out["hits"][f"{length:g}"] = hits
        out["n"][f"{length:g}"] = len(qs)
    out["memory_mb"] = memory_mb()
    out["rows"] = int(cat.store["rows"]) if not cat.legacy else None
    out["store_dtype"] = cat.store_dtype
    return out


def run_measure(cat_dir: Path, index_path: Path, queries: Path, eager: bool = False, nprobe: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--measure", str(cat_dir), str(index_path), str(queries)]
    if nprobe:
        cmd += ["--measure_nprobe", str(nprobe)]
    if eager:
        cmd.append("--eager")
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"measurement failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def per_size(values: list, i: int):
    return values[i] if len(values) > 1 else values[0]


def build_catalogue(
    real, folder: Path, n_rows: int, filler_song: int, seed: int = 0, store_dtype: str = "float32"
) -> float:
    """The real songs, then the filler songs of :class:`largecat.Database` up to ``n_rows``; seconds taken."""
    from fplib.catalogue import Catalogue

    t0 = time.perf_counter()
    cat = Catalogue(folder, real.fe, real.model, store_dtype=store_dtype)
    base = [(s, real.vectors(s)) for s in real.songs()]
    for s, v in base:
        cat.add(s.path, v, s.duration, s.checksum, s.name)
    db = Database(np.concatenate([v for _, v in base]), n_rows, filler_song, seed)
    for j in range(db.n_filler):
        rows = db.filler(j)
        cat.add(f"/filler/{j}.wav", rows, len(rows) * real.fe.hop_s, f"filler-{seed}-{j}", f"filler/{j}")
    cat.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6], help="catalogue sizes in windows")
    ap.add_argument(
        "--factory",
        nargs="+",
        default=["IVF1024,PQ32"],
        help="faiss factory string of the large indexes: one, or one per size",
    )
    ap.add_argument("--nprobe", type=int, default=40, help="the nprobe the indexes are built with")
    ap.add_argument(
        "--more_nprobes",
        nargs="+",
        type=int,
        default=[],
        help="also measure each catalogue's index at these nprobes (float32, or float16 store)",
    )
    ap.add_argument(
        "--store_dtype",
        choices=["float32", "float16"],
        default="float32",
        help="float32: measure the float32 store, then again compacted to float16; float16: write "
        "float16 from the start (for catalogues whose float32 store would not fit the page cache)",
    )
    ap.add_argument("--max_train", type=int, default=200_000)
    ap.add_argument("--songs", type=int, default=16, help="real songs (60 s each)")
    ap.add_argument("--queries", type=int, default=32, help="queries per length")
    ap.add_argument("--filler_song", type=int, default=7200, help="windows per filler song (7200: one hour)")
    ap.add_argument("--work", default=None, help="folder for the catalogues (default: a temporary one)")
    ap.add_argument("--json")
    ap.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--measure_nprobe", type=int, help=argparse.SUPPRESS)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="one small catalogue, few queries (under a minute; figures not comparable with a full run's)",
    )
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, eager=args.eager, nprobe=args.measure_nprobe)))
        return
    if args.quick:
        print(
            "bench_scale QUICK MODE: one catalogue of 5e4 windows over 4 real songs, 4 queries per length; the "
            "figures are not comparable with a full run's",
            flush=True,
        )
        args.sizes, args.factory, args.nprobe, args.more_nprobes = [5e4], ["IVF256,PQ32"], 16, []
        args.max_train, args.songs, args.queries = 50_000, 4, 4

    from fplib import index
    from fplib.catalogue import Catalogue

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        real, songs, noises, _, fe = real_songs(tmp, args.songs)
        queries = tmp / "queries.npz"
        np.savez(queries, **make_queries(songs, fe.sr, noises, args.queries))
        small_index = index.build(real, "small", tmp / "real_index")  # fplib's default IVF-PQ, fitted to the size
        rows = [
            {
                "name": "real songs only (reference)",
                "dtype": "float32",
                "result": run_measure(real.folder, small_index, queries),
            }
        ]
        for i, size in enumerate(args.sizes):
            n = int(size)
            factory, nprobe = per_size(args.factory, i), args.nprobe
            folder = tmp / f"cat_{n}"
            t_cat = build_catalogue(real, folder, n, args.filler_song, store_dtype=args.store_dtype)
            with Catalogue(folder) as cat:
                t0 = time.perf_counter()
                path = index.build(
                    cat, "big", tmp / f"index_{n}", factory=factory, nprobe=nprobe, max_train=args.max_train
                )
                t_index = time.perf_counter() - t0
            idx_bytes = os.path.getsize(path)
            build = {
                "catalogue_s": t_cat,
                "index_s": t_index,
                "index_bytes_per_window": idx_bytes / n,
                "factory": factory,
                "nprobe": nprobe,
            }
            label = f"{n:.0e} windows, {factory}"
            dtype = args.store_dtype
            if dtype == "float32":
                if n * 512 < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 3:  # it fits in memory
                    rows.append(
                        {
                            "name": f"{label} nprobe {nprobe}, former start-up: every song read into memory",
                            "dtype": dtype,
                            "result": run_measure(folder, path, queries, eager=True),
                        }
                    )
                rows.append(
                    {
                        "name": f"{label} nprobe {nprobe}",
                        "dtype": dtype,
                        "build": build,
                        "result": run_measure(folder, path, queries),
                    }
                )
                with Catalogue(folder) as cat:
                    t0 = time.perf_counter()
                    cat.compact(dtype="float16")
                    build["compact_s"] = time.perf_counter() - t0
                dtype = "float16"
            for probes in [nprobe] + args.more_nprobes:
                rows.append(
                    {
                        "name": f"{label} nprobe {probes}",
                        "dtype": dtype,
                        "build": build,
                        "result": run_measure(folder, path, queries, nprobe=probes),
                    }
                )
        real.close()
        report(rows, args)


def report(rows: list[dict], args) -> None:
    ref = rows[0]["result"]
    print(
        f"\n4 query phases, margin decision; queries: "
        f"{args.queries} per length, noise at 5 dB; warm page cache; {os.cpu_count()} cores\n"
    )
    print(
        "| catalogue | store | start-up s | ms/query 1 / 3 / 10 s | x reference | hits 1 / 3 / 10 s "
        "| RSS MiB (anon / file), peak |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        r = row["result"]
        ms = " / ".join(f"{r['ms'][f'{x:g}']:.1f}" for x in LENGTHS)
        ratio = " / ".join(f"{r['ms'][f'{x:g}'] / ref['ms'][f'{x:g}']:.2f}" for x in LENGTHS)
        hits = " / ".join(f"{r['hits'][f'{x:g}']}/{r['n'][f'{x:g}']}" for x in LENGTHS)
        mem = r["memory_mb"]
        print(
            f"| {row['name']} | {row['dtype']} | {r['startup_s']:.2f} | {ms} | {ratio} | {hits} | "
            f"{mem.get('VmRSS', 0):.0f} ({mem.get('RssAnon', 0):.0f} / {mem.get('RssFile', 0):.0f}), "
            f"{mem.get('VmHWM', 0):.0f} |"
        )
    seen = []
    for row in rows:
        if row.get("build") and row["build"] not in seen:
            b = row["build"]
            seen.append(b)
            extra = f", compacted to float16 in {b['compact_s']:.0f} s" if b.get("compact_s") else ""
            print(
                f"{row['name'].rsplit(' nprobe', 1)[0]}: catalogue written in {b['catalogue_s']:.0f} s, "
                f"index built in {b['index_s']:.0f} s "
                f"({b['index_bytes_per_window']:.1f} bytes per window){extra}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
