"""End-to-end query time with the full NAFP model on this CPU: decode, front end, model, search and
decision for a 1-s and a 10-s query, against a reference done the original scripts' way (librosa
features and the model one window at a time, with the head as 128 modules in a loop; the same
decoding, search and decision), in the same run.

    .venv/bin/python benchmarks/bench_query.py [--repeat 5] [--json out.json]

Target: fplib at least 5x faster end to end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fplib import audio, index, synth
from fplib.catalogue import Catalogue, extract
from fplib.models import build_model
from fplib.search import Recognizer

sys.path.insert(0, str(Path(__file__).parent))
from reference import LoopNAFP, fingerprint_one_by_one  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--songs", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, _ = build_model("nafp")
    model.eval()
    reference_model = LoopNAFP(model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = synth.make_demo_corpus(tmp / "corpus", synth.CorpusSpec(n_songs=args.songs, song_seconds=30.0,
                                                                          n_noises=1, n_irs=1), progress=False)
        cat = Catalogue(tmp / "cat", model.fe, {"sha256": "random-init"})
        extract(audio.list_audio(corpus["music"]), cat, model, progress=False)
        path = index.build(cat, "bench", tmp)
        rec = Recognizer(model, cat, path)
        song = audio.list_audio(corpus["music"])[1]
        rows = {}
        for length in (1.0, 10.0):
            q = tmp / f"query_{length:g}s.wav"
            audio.write(q, audio.load(song, offset=7.3, duration=length))
            ours, ref, parts = [], [], []
            for _ in range(args.repeat + 1):
                t = time.perf_counter()
                r = rec.recognize(q)
                ours.append(time.perf_counter() - t)
                parts.append(r.timings_ms)
                t = time.perf_counter()
                wav = audio.load(q, model.fe.sr)
                fp = fingerprint_one_by_one(wav, reference_model, model.fe)
                _, ids = rec.index.search(fp, rec.k)
                rec._sequence(fp, ids)
                ref.append(time.perf_counter() - t)
            ours, ref, parts = ours[1:], ref[1:], parts[1:]  # the first run warms up
            rows[f"{length:g}s"] = {
                "fplib_ms": 1000 * statistics.median(ours), "reference_ms": 1000 * statistics.median(ref),
                "fplib_frontend_model_ms": statistics.median(p["frontend_model_ms"] for p in parts),
                "fplib_search_ms": statistics.median(p["search_ms"] for p in parts),
                "found": r.best.name if r.best else None}
        n_vectors = sum(s.n_vectors for s in cat.songs())
    print(f"\nbench_query: full NAFP ({sum(p.numel() for p in model.parameters()):,} parameters), torch "
          f"{torch.__version__}, 2 threads; database {args.songs} songs, {n_vectors} vectors; median of {args.repeat}")
    print(f"{'query':>7s}{'fplib ms':>11s}{'reference ms':>14s}{'speed-up':>10s}   fplib: front end + model / search")
    for k, r in rows.items():
        print(f"{k:>7s}{r['fplib_ms']:11.1f}{r['reference_ms']:14.1f}{r['reference_ms'] / r['fplib_ms']:9.1f}x"
              f"   {r['fplib_frontend_model_ms']:.1f} / {r['fplib_search_ms']:.1f} ms")
    print("reference: librosa features and the model (head as 128 modules in a loop) one window at a time; "
          "same decoding, search and decision")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
