"""Recognition on a large catalogue, end to end (front end, model, search, re-ranking, decision): start-up
time, milliseconds per 1-, 3- and 10-s query, resident memory and hit rate, for catalogues of N windows,
next to the same queries on the real songs alone (the reference, measured in the same run) and the
recogniser's former start-up (every song's fingerprints read into memory before the first query).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1e6 1e7] [--factory IVF4096,PQ32] [--nprobe 40]

Each catalogue holds the real songs (the demo corpus's synthetic music, fingerprinted with the shipped
model; the queries are cut from them, with noise at 5 dB) plus filler up to N windows: the real songs'
fingerprint sequences, each turned by a random orthogonal matrix, so the filler is clustered like
real fingerprints and related to no query. One faiss index is built per size from the float32 store;
the catalogue is then measured with its float32 store and again after ``compact(dtype="float16")``.
Every measurement runs in a fresh process (so start-up and memory are the recogniser's alone), with
the files in the page cache (warm). Resident memory is split into anonymous (the process's own) and
file-backed pages (the memory-mapped store and whatever the page cache shares).
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

LENGTHS = (1.0, 3.0, 10.0)


def memory_mb() -> dict:
    """This process's resident memory (MiB) from /proc: total, anonymous, file-backed, and the peak."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def measure(cat_dir: str, index_path: str, queries: str, eager: bool) -> dict:
    """In a fresh process: open the catalogue and the recogniser, run every query; the figures as a dict."""
    t0 = time.perf_counter()
    from fplib import pretrained
    from fplib.catalogue import Catalogue, load_model
    from fplib.search import Recognizer

    model, _ = load_model(pretrained.default_model())
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    cat = Catalogue(cat_dir)
    rec = Recognizer(model, cat, index_path, phases=4, decision="margin")
    if eager:  # what the recogniser did before the store: every song's fingerprints in a dict
        rec.eager = {s.id: cat.vectors(s) for s in rec.songs}
    startup = time.perf_counter() - t0
    data = np.load(queries)
    out = {"startup_s": startup, "model_load_s": t_import, "ms": {}, "hits": {}, "n": {}}
    for length in LENGTHS:
        qs, names, offsets = data[f"q{length:g}"], data[f"name{length:g}"], data[f"offset{length:g}"]
        rec.recognize(qs[0])  # warm-up (ONNX Runtime session, first touches)
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


def run_measure(cat_dir: Path, index_path: Path, queries: Path, eager: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--measure", str(cat_dir), str(index_path), str(queries)]
    if eager:
        cmd.append("--eager")
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"measurement failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_queries(songs: list, sr: int, noises: list, path: Path, per_length: int, seed: int = 0) -> None:
    import torch

    from fplib import audio, augment

    rng = np.random.default_rng(seed)
    noise = np.concatenate([audio.load(n, sr) for n in noises])
    arrays = {}
    for length in LENGTHS:
        qs, names, offsets = [], [], []
        for i in range(per_length):
            song = songs[i % len(songs)]
            wav = audio.load(song, sr)
            off = round(float(rng.uniform(0, len(wav) / sr - length - 0.1)), 2)
            x = wav[int(off * sr) : int(off * sr) + int(length * sr)]
            start = int(rng.integers(0, len(noise) - len(x)))
            n = noise[start : start + len(x)]
            y = augment.add_noise(torch.from_numpy(x)[None], torch.from_numpy(n)[None], torch.tensor([5.0]))[0]
            qs.append(y.numpy())
            names.append(song.stem)
            offsets.append(off)
        arrays[f"q{length:g}"] = np.stack(qs)
        arrays[f"name{length:g}"] = np.array(names)
        arrays[f"offset{length:g}"] = np.array(offsets)
    np.savez(path, **arrays)


def build_catalogue(real, folder: Path, n_rows: int, filler_song: int, seed: int = 0) -> float:
    """The real songs, then filler songs of ``filler_song`` windows until ``n_rows``; seconds taken."""
    from fplib.catalogue import Catalogue

    t0 = time.perf_counter()
    cat = Catalogue(folder, real.fe, real.model)
    base = [(s, real.vectors(s)) for s in real.songs()]
    for s, v in base:
        cat.add(s.path, v, s.duration, s.checksum, s.name)
    pool = np.concatenate([v for _, v in base])
    rng = np.random.default_rng(seed)
    i = 0
    while cat.store["rows"] < n_rows:
        q, _ = np.linalg.qr(rng.standard_normal((pool.shape[1], pool.shape[1])))
        n = min(filler_song, n_rows - cat.store["rows"])
        start = int(rng.integers(0, len(pool) - 1))
        rows = np.take(pool, np.arange(start, start + n) % len(pool), axis=0) @ q.astype(np.float32)
        cat.add(f"/filler/{i}.wav", rows, n * real.fe.hop_s, f"filler-{seed}-{i}", f"filler/{i}")
        i += 1
    cat.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6], help="catalogue sizes in windows")
    ap.add_argument("--factory", default="IVF1024,PQ32", help="faiss factory string of the large indexes")
    ap.add_argument("--nprobe", type=int, default=40)
    ap.add_argument("--max_train", type=int, default=200_000)
    ap.add_argument("--songs", type=int, default=16, help="real songs (60 s each)")
    ap.add_argument("--queries", type=int, default=32, help="queries per length")
    ap.add_argument("--filler_song", type=int, default=7200, help="windows per filler song (7200: one hour)")
    ap.add_argument("--work", default=None, help="folder for the catalogues (default: a temporary one)")
    ap.add_argument("--json")
    ap.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, eager=args.eager)))
        return

    from fplib import audio, index, pretrained, synth
    from fplib.catalogue import Catalogue, extract, load_model, model_description

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        corpus = synth.make_demo_corpus(tmp / "corpus", synth.CorpusSpec(n_songs=args.songs, song_seconds=60.0,
                                                                          n_noises=4, n_irs=1), progress=False)
        songs = audio.list_audio(corpus["music"])
        ckpt = pretrained.default_model()
        model, fe = load_model(ckpt)
        real = Catalogue(tmp / "real", fe, model_description(ckpt))
        extract(songs, real, model, progress=False)
        queries = tmp / "queries.npz"
        make_queries(songs, fe.sr, audio.list_audio(corpus["noise"]), queries, args.queries)
        small_index = index.build(real, "small", tmp / "real_index")  # fplib's default IVF-PQ, fitted to the size
        rows = [{"name": "real songs only (reference)", "dtype": "float32",
                 "result": run_measure(real.folder, small_index, queries)}]
        for size in args.sizes:
            n = int(size)
            folder = tmp / f"cat_{n}"
            t_cat = build_catalogue(real, folder, n, args.filler_song)
            with Catalogue(folder) as cat:
                t0 = time.perf_counter()
                path = index.build(cat, "big", tmp / f"index_{n}", factory=args.factory, nprobe=args.nprobe,
                                   max_train=args.max_train)
                t_index = time.perf_counter() - t0
            idx_bytes = os.path.getsize(path)
            build = {"catalogue_s": t_cat, "index_s": t_index, "index_bytes_per_window": idx_bytes / n}
            rows.append({"name": f"{n:.0e} windows, former start-up: every song read into memory (its queries "
                                 f"still read the map)", "dtype": "float32",
                         "result": run_measure(folder, path, queries, eager=True)})
            rows.append({"name": f"{n:.0e} windows", "dtype": "float32", "build": build,
                         "result": run_measure(folder, path, queries)})
            with Catalogue(folder) as cat:
                t0 = time.perf_counter()
                cat.compact(dtype="float16")
                t_compact = time.perf_counter() - t0
            rows.append({"name": f"{n:.0e} windows, float16 store", "dtype": "float16", "compact_s": t_compact,
                         "build": build, "result": run_measure(folder, path, queries)})
        real.close()
        report(rows, args)


def report(rows: list[dict], args) -> None:
    ref = rows[0]["result"]
    print(f"\nfactory {args.factory}, nprobe {args.nprobe}, 4 query phases, margin decision; queries: "
          f"{args.queries} per length, noise at 5 dB; warm page cache; {os.cpu_count()} cores\n")
    print("| catalogue | store | start-up s | ms/query 1 / 3 / 10 s | x reference | hits 1 / 3 / 10 s "
          "| RSS anon / file MiB |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        r = row["result"]
        ms = " / ".join(f"{r['ms'][f'{x:g}']:.1f}" for x in LENGTHS)
        ratio = " / ".join(f"{r['ms'][f'{x:g}'] / ref['ms'][f'{x:g}']:.2f}" for x in LENGTHS)
        hits = " / ".join(f"{r['hits'][f'{x:g}']}/{r['n'][f'{x:g}']}" for x in LENGTHS)
        mem = r["memory_mb"]
        print(f"| {row['name']} | {row['dtype']} | {r['startup_s']:.2f} | {ms} | {ratio} | {hits} | "
              f"{mem.get('RssAnon', 0):.0f} / {mem.get('RssFile', 0):.0f} |")
    for row in rows:
        if row.get("build"):
            b = row["build"]
            extra = f", compacted to float16 in {row['compact_s']:.0f} s" if row.get("compact_s") else ""
            print(f"{row['name']}: catalogue written in {b['catalogue_s']:.0f} s, index built in {b['index_s']:.0f} s "
                  f"({b['index_bytes_per_window']:.1f} bytes per window){extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
