"""End-to-end query time per model family and width on this CPU: decode, front end, network, search
and decision for 1-, 3- and 10-s queries with fplib's default path (``--phases``, default 4 as
``calibrate_threshold`` sets it for ``recognize``; the network in the family's runtime,
``fplib/engine.py``: OpenVINO for NAFP, ONNX Runtime for ATTN, torch for SAMAF), next to the same path
with one phase (a window every 0.5 s, as the reference), the same path with the network in torch
eager (``FPLIB_ENGINE=torch``) and the reference (``reference.py``, the per-example way: librosa features and the
model one window at a time, for the full NAFP with the head as 128 modules in a loop; the same
decoding, search and decision), all in the same run, for every family at both sizes (NAFP, ATTN,
SAMAF; ``--models`` to choose). For SAMAF the fingerprints are binary codes and the search is Hamming
search in a faiss binary index.

    .venv/bin/python benchmarks/bench_query.py [--repeat 5] [--phases 4] [--models nafp_small ...] [--json F] [--quick]

``--quick``: nafp_small, the full NAFP (the looped head of the reference) and samaf_small (binary codes),
3 songs, median of 2 (about a minute); figures not comparable with a full run's.

Target: fplib at least 5x faster end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fplib import audio, codes, engine, index
from fplib.catalogue import Catalogue
from fplib.extraction import extract
from fplib.models.registry import build_model, frontend_for, kind_of
from fplib.search import Recognizer
from fplib.synth import demo

sys.path.insert(0, str(Path(__file__).parent))
from reference import LoopNAFP, fingerprint_one_by_one  # noqa: E402


def measure(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--songs", type=int, default=8)
    ap.add_argument("--models", nargs="+", default=["nafp_small", "nafp", "attn_small", "attn", "samaf_small", "samaf"])
    ap.add_argument("--phases", type=int, default=4, help="query phases of the default path (4)")
    ap.add_argument("--json")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="fewer models, songs and repeats (about a minute; figures not comparable with a full run's)",
    )
    args = ap.parse_args()
    if args.quick:
        print(
            "bench_query QUICK MODE: nafp_small, nafp, samaf_small, 3 songs, median of 2; the figures are not "
            "comparable with a full run's",
            flush=True,
        )
        args.models, args.songs, args.repeat = ["nafp_small", "nafp", "samaf_small"], 3, 2
    torch.set_num_threads(2)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = demo.make_demo_corpus(
            tmp / "corpus", demo.CorpusSpec(n_songs=args.songs, song_seconds=30.0, n_noises=1, n_irs=1), progress=False
        )
        songs = audio.list_audio(corpus["music"])
        for name in args.models:
            torch.manual_seed(0)
            model, _ = build_model(name, frontend_for(name))
            model.eval()
            reference_model = LoopNAFP(model).eval() if name == "nafp" else model
            cat = Catalogue(tmp / name, model.fe, {"sha256": f"random-init {name}", "kind": kind_of(name)})
            extract(songs, cat, model, progress=False)
            index_path = index.build(cat, "bench", tmp / name)
            rec = Recognizer(model, cat, index_path, phases=args.phases)
            rec1 = Recognizer(model, cat, index_path, phases=1)
            for length in (1.0, 3.0, 10.0):
                q = tmp / f"query_{length:g}s.wav"
                audio.write(q, audio.load(songs[1], offset=7.3, duration=length))

                def reference(q=q, m=reference_model, rec=rec):
                    wav = audio.load(q, m.fe.sr)
                    fp = codes.encode(fingerprint_one_by_one(wav, m, m.fe), rec.kind)
                    _, ids = rec.index.search(fp, rec.k)
                    rec._sequence(fp, ids)

                r = rec.recognize(q)
                row = {
                    "fplib_ms": measure(lambda q=q, rec=rec: rec.recognize(q), args.repeat),
                    "one_phase_ms": measure(lambda q=q, rec=rec1: rec.recognize(q), args.repeat),
                }
                os.environ[engine.ENGINE_ENV] = "torch"
                row["torch_ms"] = measure(lambda q=q, rec=rec: rec.recognize(q), args.repeat)
                del os.environ[engine.ENGINE_ENV]
                row["reference_ms"] = measure(reference, args.repeat)
                row["found"] = r.best.name if r.best else None
                d = codes.dim(cat.vectors(cat.songs()[0]), rec.kind)
                row["db_bytes_per_s"] = round(codes.bytes_per_fingerprint(d, rec.kind) / cat.fe.hop_s)
                rows[f"{name} {length:g}s"] = row
    print(
        f"\nbench_query: torch {torch.__version__}, 2 threads; database {args.songs} songs of 30 s; "
        f"median of {args.repeat}"
    )
    print(
        f"{'model, query':>18s}{'fplib ms':>10s}{'1 phase':>9s}{'torch ms':>10s}{'reference ms':>14s}"
        f"{'vs torch':>10s}{'vs reference':>14s}{'1 phase vs ref':>16s}{'DB bytes/s':>12s}"
    )
    for k, r in rows.items():
        print(
            f"{k:>18s}{r['fplib_ms']:10.1f}{r['one_phase_ms']:9.1f}{r['torch_ms']:10.1f}{r['reference_ms']:14.1f}"
            f"{r['torch_ms'] / r['fplib_ms']:9.2f}x{r['reference_ms'] / r['fplib_ms']:13.2f}x"
            f"{r['reference_ms'] / r['one_phase_ms']:15.2f}x{r['db_bytes_per_s']:12d}"
        )
    print(
        f"fplib: {args.phases} query phases, the network in the family's runtime (OpenVINO for NAFP, ONNX "
        "Runtime for ATTN, torch for SAMAF); 1 phase: the same with a window every 0.5 s; torch: fplib's path "
        "with FPLIB_ENGINE=torch; reference: librosa features and the model one window at a time, every "
        "0.5 s (full NAFP: head as 128 modules in a loop)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
