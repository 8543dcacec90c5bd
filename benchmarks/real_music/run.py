"""Real-music benchmark: a trained fingerprinter against audfprint on openly licensed game music.

    python benchmarks/real_music/setup_data.py            # once: fetch the data (see LICENSES.md there)
    python benchmarks/real_music/run.py --checkpoint outputs/demo/train_online/best.pt [--name demo]

Protocol (all seeded; the query list is written to results/<name>/queries.json so runs compare):
- database: the held-out music (hedgewars-data and colobot-common-sounds, never used for training),
  minus a seeded --kept-out share (default half) kept out for false-positive queries, plus the
  training music (supertux-data) as distractors;
- queries of 1, 2, 3, 5 and 10 s at 0, 5 and 10 dB SNR from held-out songs in the database, cut at
  random positions, convolved with simulated rooms (pyroomacoustics, a seed no training used) and
  mixed with ambient noise (megaglest-data); half of them band-limited as a phone microphone would;
- out-of-database queries (the same way, from the held-out songs kept out) for the false-positive
  rate; the decision threshold (on the margin of the best song over the next, --decision) is
  calibrated for --fpr on a separate half of those songs (--calib-per-cell queries per length and
  SNR) and on noise-only queries; queries are matched with --phases 4 (fplib.search);
- one table: top-1 hit rate (song and offset within 0.5 s, or of an exact repeat of the same audio in
  the song: fplib.evaluate.find_repeats) per length and SNR for each system, false positives, time
  per query, database bytes per second of audio; per-query rows in results/<name>/rows.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fplib import audio, evaluate, index, search, storage, synth, train, viz
from fplib.catalogue import Catalogue, extract, model_description
from fplib.data import IRBank, NoiseBank, item_rng
from fplib.landmark import Landmark

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from setup_data import DATA, files  # noqa: E402


def rooms(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"room_{i:03d}.wav"
        if not path.exists():
            ir, _ = synth.simulate_rir(synth.item_seed(seed, "benchmark-rir", i))
            audio.write(path, ir, 16000, subtype="FLOAT")
        out.append(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--name", default="run", help="results/<name>/ (default: run)")
    ap.add_argument("--lengths", nargs="+", type=float, default=[1, 2, 3, 5, 10])
    ap.add_argument("--snrs", nargs="+", type=float, default=[0, 5, 10])
    ap.add_argument("--per-cell", type=int, default=30, help="queries per (length, SNR) (default: 30)")
    ap.add_argument("--bandlimit-share", type=float, default=0.5)
    ap.add_argument("--fpr", type=float, default=0.05)
    ap.add_argument("--kept-out", type=float, default=0.5, help="share of the held-out songs kept out of the database "
                    "for false-positive queries, half of them to calibrate the threshold (default: 0.5; it was 0.2, "
                    "which left 4 songs to measure false positives)")
    ap.add_argument("--nprobe", type=int, default=40)
    ap.add_argument("--phases", type=int, default=4, help="query phases per hop (fplib.search; default: 4)")
    ap.add_argument("--decision", default="margin", choices=["score", "margin"], help="fplib.search (default: margin)")
    ap.add_argument("--calib-per-cell", type=int, default=None, help="calibration queries per (length, SNR) "
                    "(default: twice --per-cell)")
    ap.add_argument("--landmark-density", type=float, default=100.0)
    ap.add_argument("--no-landmark", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if not (DATA / "LICENSES.md").exists():
        sys.exit("no data: run benchmarks/real_music/setup_data.py first")
    out = HERE / "results" / args.name
    out.mkdir(parents=True, exist_ok=True)
    device = train.resolve_device(args.device)
    model, fe = train.load_model(args.checkpoint, device)

    held = files("hedgewars-data") + files("colobot-common-sounds")
    order = item_rng(args.seed, "held-out split").permutation(len(held))
    n_out = max(2, int(round(len(held) * args.kept_out)))
    out_db = sorted(held[i] for i in order[:n_out])
    in_db = sorted(held[i] for i in order[n_out:])
    distractors = files("supertux-data")
    cat = Catalogue(out / "catalogue", fe, model_description(args.checkpoint))
    res = extract(in_db + distractors, cat, model, device=device, root=DATA)
    for path, reason in res.skipped:
        print(f"skipped {path}: {reason}")
    idx_path = index.build(cat, "real", out, nprobe=args.nprobe)
    by_path = {s.path: s.name for s in cat.songs()}
    irs = IRBank(rooms(out / "rooms", 20, args.seed + 7), fe.sr, max_s=1.0)
    noises = NoiseBank(files("megaglest-data"), fe.sr)

    rec = search.Recognizer(model, cat, idx_path, nprobe=args.nprobe, device=device, phases=args.phases,
                            decision=args.decision)
    calib_songs, test_out = [str(p) for p in out_db[::2]], [str(p) for p in out_db[1::2]]
    calib = evaluate.plan_queries({}, calib_songs, len(irs), args.lengths, args.snrs,
                                  args.calib_per_cell or 2 * args.per_cell, args.seed + 1, args.bandlimit_share)
    scores = evaluate.calibration_scores(rec, calib, irs, noises, args.lengths, 4, args.seed + 2)
    rec.threshold = search.calibrate(scores, args.fpr)
    queries = evaluate.plan_queries({str(p): by_path[str(p)] for p in in_db if str(p) in by_path}, test_out,
                                    len(irs), args.lengths, args.snrs, args.per_cell, args.seed,
                                    args.bandlimit_share)
    evaluate.save_queries(out / "queries.json", queries)
    lm = None
    if not args.no_landmark:
        lm = Landmark(density=args.landmark_density)
        for s in cat.songs():
            lm.add(s.name, audio.load(s.path, fe.sr))
    rows = evaluate.run(queries, irs, noises, neural=rec, landmark=lm)
    storage.write_json(out / "rows.json", rows)
    table = evaluate.score(queries, rows)
    audio_s = sum(s.duration for s in cat.songs())
    meta = storage.read_json(idx_path.with_suffix(".meta.json"))
    bytes_per_s = {"neural": meta["bytes_per_vector"] / fe.hop_s,
                   "audfprint": lm.bytes_per_second(audio_s) if lm else None}
    summary = {k: evaluate.summary(table, k) for k in ("top1", "ranked1", "fp_rate", "ms_per_query")}
    storage.write_json(out / "metrics.json", {"table": table, "summary": summary, "db_bytes_per_second": bytes_per_s,
                                              "checkpoint": str(args.checkpoint), "songs_in_db": len(cat),
                                              "threshold": rec.threshold.to_dict(), "args": vars(args)})
    print(f"\nreal-music benchmark: {len(cat)} songs in the database ({audio_s / 60:.0f} min), "
          f"{sum(q.in_database for q in queries)} + {sum(not q.in_database for q in queries)} queries "
          f"({sum(bool(q.repeats) for q in queries)} of them from audio the song repeats; phases {args.phases}, "
          f"decision {args.decision})")
    print(viz.format_table(table))
    print(f"\n{'system':10s}" + "".join(f"{f'{x:g}s':>8s}" for x in args.lengths) + "      FP   ms/query   bytes/s")
    for system in summary["top1"]:
        top1 = summary["top1"][system]
        fp = np.mean(list(summary["fp_rate"].get(system, {}).values()) or [np.nan])
        ms = np.mean(list(summary["ms_per_query"][system].values()))
        print(f"{system:10s}" + "".join(f"{100 * top1.get(f'{x:g}s', np.nan):7.1f}%" for x in args.lengths)
              + f"{100 * fp:7.1f}%{ms:10.1f}{bytes_per_s[system] or 0:10.0f}")
        ranked = summary["ranked1"][system]
        print(f"{'  ranked1':10s}" + "".join(f"{100 * ranked.get(f'{x:g}s', np.nan):7.1f}%" for x in args.lengths)
              + "   (the right answer ranked first, before the threshold)")


if __name__ == "__main__":
    main()
