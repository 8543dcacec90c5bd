"""Live recognition (``listen``): seconds of audio to a correct answer, false answers per hour, and CPU
time per hop of the incremental matching next to the reference in the same run (``Recognizer``
re-searching the whole rolling buffer every hop).

    .venv/bin/python benchmarks/bench_listen.py --model CKPT [--catalogue C --index NAME.index] [--json out.json]
    .venv/bin/python benchmarks/bench_listen.py --quick    # the same path, smaller (under a minute)

Without ``--catalogue``/``--index`` it builds its own set-up from a synthetic demo corpus that no
training run has seen (its own seed): songs in the database, songs kept out (half to calibrate the
threshold as notebook 05 does: margin decision, 4 query phases, ``--fpr``; half to count false
answers), rooms and noises. Without ``--model`` it uses a freshly initialised ``nafp_small``: the
pipeline runs, but the figures then say nothing about the method. The figures depend on the model.

Streams: an in-database song from a random position (20 s) through a room and noise at each SNR,
followed by another song (20 s, the "change"); the first answer for each must name the song and
where it is now (within 0.5 s). Out-of-database songs and noise alone, streamed end to end, count
false answers (any answer) per hour of audio.

``--quick``: a built set-up of 4 + 4 songs of 25 s, 2 streams at 5 dB (and the shipped model unless
``--model`` is given); its figures are not comparable with a full run's.
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

from fplib import audio, evaluate, index, listen
from fplib import queries as fpqueries
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_model, model_description, save_checkpoint
from fplib.data import IRBank, NoiseBank, item_rng
from fplib.extraction import extract
from fplib.models.registry import build_model
from fplib.queries import Query, render
from fplib.search import calibrate, recognizer_from_files, save_threshold
from fplib.synth import demo

LENGTHS = [1.0, 2.0, 3.0, 5.0, 10.0]


def build_setup(
    tmp: Path, model_path: Path | None, n_in: int, n_out: int, seconds: float, fpr: float, seed: int
) -> dict:
    spec = demo.CorpusSpec(n_songs=n_in + n_out, song_seconds=seconds, n_noises=8, n_irs=8, seed=seed)
    corpus = demo.make_demo_corpus(tmp / "corpus", spec, progress=False)
    if model_path is None:
        torch.manual_seed(0)
        model, settings = build_model("nafp_small")
        model_path = tmp / "random.pt"
        save_checkpoint(
            model_path,
            {
                "model": model.state_dict(),
                "model_name": "nafp_small",
                "model_settings": settings,
                "frontend": model.fe.to_dict(),
            },
        )
        print("note: no --model: a freshly initialised nafp_small (figures say nothing about the method)")
    model, fe = load_model(model_path)
    songs = audio.list_audio(corpus["music"])
    in_db, out_db = fpqueries.split_test_songs(songs, n_in)
    cat = Catalogue(tmp / "catalogue", fe, model_description(model_path))
    extract(in_db, cat, model, progress=False)
    path = index.build(cat, "bench", tmp / "index")
    cat.close()
    irs = IRBank(audio.list_audio(corpus["rir"]), fe.sr, max_s=1.0)
    noises = NoiseBank(audio.list_audio(corpus["noise"]), fe.sr)
    calib_out, test_out = out_db[: len(out_db) // 2], out_db[len(out_db) // 2 :]
    rec = recognizer_from_files(model_path, tmp / "catalogue", path, phases=4, decision="margin")
    calib = fpqueries.plan_queries({}, [str(s) for s in calib_out], len(irs), LENGTHS, [0, 5, 10, 15], 4, seed + 1)
    scores = evaluate.calibration_scores(rec, calib, irs, noises, LENGTHS, 4, seed + 2, progress=False)
    threshold = calibrate(scores, fpr)
    save_threshold(path, {"threshold": threshold.to_dict(), "target_fpr": fpr, "phases": 4, "decision": "margin"})
    return {
        "model": model_path,
        "catalogue": tmp / "catalogue",
        "index": path,
        "irs": irs,
        "noises": noises,
        "test_out": [str(s) for s in test_out],
        "fpr": fpr,
    }


def stream_of(song: str, name: str, start: float, length: float, snr: float, ir: int, seed: int, irs, noises):
    return render(Query(0, True, song, name, start, length, snr, ir, seed), irs, noises)


def feed(listener: listen.Listener, wav: np.ndarray, chunk: int, reference=None, cpu: dict | None = None):
    """Events of a stream fed in chunks; with ``reference``, also times Recognizer.recognize on the same
    buffer after every hop (CPU seconds into ``cpu``)."""
    events = []
    for k in range(0, len(wav), chunk):
        hops = len(listener.timings)
        t = time.process_time()
        events += listener.feed(wav[k : k + chunk])
        dt = time.process_time() - t
        if len(listener.timings) > hops and cpu is not None:
            cpu.setdefault("listen", []).append(dt / (len(listener.timings) - hops))
            if reference is not None:
                buf = listener.buffer()
                t = time.process_time()
                reference.recognize(buf)
                cpu.setdefault("reference", []).append(time.process_time() - t)
    return events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="checkpoint (default: a freshly initialised nafp_small)")
    ap.add_argument("--catalogue", type=Path, help="with --index: an existing set-up (else one is built)")
    ap.add_argument("--index", type=Path)
    ap.add_argument("--out-songs", nargs="*", default=None, help="with --catalogue: out-of-database songs")
    ap.add_argument("--noises", type=Path, help="with --catalogue: folder of noises")
    ap.add_argument("--rooms", type=Path, help="with --catalogue: folder of impulse responses")
    ap.add_argument("--songs-in", type=int, default=12)
    ap.add_argument("--songs-out", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=45.0, help="song length of the built corpus")
    ap.add_argument("--snrs", type=float, nargs="+", default=[0.0, 5.0, 10.0])
    ap.add_argument("--streams", type=int, default=6, help="streams per SNR")
    ap.add_argument("--fpr", type=float, default=0.05, help="threshold calibration (notebook 05's default 0.05)")
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--confirm", type=int, default=4)
    ap.add_argument("--seed", type=int, default=9001)
    ap.add_argument("--json")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a small built set-up, few streams (under a minute; figures not comparable with a full run's)",
    )
    args = ap.parse_args()
    if args.quick:
        from fplib import pretrained

        print(
            "bench_listen QUICK MODE: 4 + 4 songs of 25 s, 2 streams at 5 dB; the figures are not comparable "
            "with a full run's",
            flush=True,
        )
        args.songs_in, args.songs_out, args.seconds, args.snrs, args.streams = 4, 4, 25.0, [5.0], 2
        args.catalogue = args.index = None
        args.model = args.model or pretrained.default_model()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.catalogue and args.index:
            fe = load_model(args.model)[1]
            s = {
                "model": args.model,
                "catalogue": args.catalogue,
                "index": args.index,
                "fpr": None,
                "irs": IRBank(audio.list_audio(args.rooms), fe.sr, max_s=1.0),
                "noises": NoiseBank(audio.list_audio(args.noises), fe.sr),
                "test_out": args.out_songs or [],
            }
        else:
            s = build_setup(Path(tmp), args.model, args.songs_in, args.songs_out, args.seconds, args.fpr, args.seed)
        print(f"set-up: {time.perf_counter() - t0:.0f} s")
        rec = recognizer_from_files(s["model"], s["catalogue"], s["index"])
        reference = recognizer_from_files(s["model"], s["catalogue"], s["index"])
        sr, chunk = rec.fe.sr, rec.fe.sr // 4
        songs = [(x.path, x.name, x.duration) for x in rec.songs]
        irs, noises = s["irs"], s["noises"]
        rows, cpu = [], {}
        for snr in args.snrs:
            for j in range(args.streams):
                rng = item_rng(args.seed, "stream", snr, j)
                a, b = rng.choice(len(songs), 2, replace=False)
                parts, truth = [], []
                for si in (a, b):
                    path, name, dur = songs[si]
                    length = min(20.0, dur - 1.0)
                    start = float(rng.uniform(0, dur - length))
                    parts.append(
                        stream_of(
                            path,
                            name,
                            start,
                            length,
                            snr,
                            int(rng.integers(len(irs))),
                            int(rng.integers(2**31)),
                            irs,
                            noises,
                        )
                    )
                    truth.append((name, start, sum(len(p) for p in parts[:-1]) / sr, length))
                listener = listen.Listener(rec, window_s=args.window, confirm=args.confirm)
                events = feed(listener, np.concatenate(parts), chunk, reference if j == 0 else None, cpu)
                for k, (name, start, at, length) in enumerate(truth):
                    mine = [e for e in events if e.kind == "match" and at <= e.time_s < at + length]
                    first = mine[0] if mine else None
                    ok = (
                        first is not None
                        and first.name == name
                        and abs(first.offset_s - (start + first.time_s - at)) <= 0.5
                    )
                    rows.append(
                        {
                            "snr": snr,
                            "part": "first song" if k == 0 else "after a change",
                            "answered": first is not None,
                            "correct": ok,
                            "seconds": first.time_s - at if first is not None else None,
                            "heard_s": first.heard_s if first is not None else None,
                        }
                    )
            print(f"SNR {snr:g} dB done ({time.perf_counter() - t0:.0f} s)", flush=True)
        false_answers, hours = 0, 0.0
        negatives = [audio.load(p, sr) for p in s["test_out"]]
        negatives += [noises.waves[i][: 20 * sr] for i in range(len(noises))]
        for i, wav in enumerate(negatives):
            x = torch.from_numpy(wav)[None]
            if i < len(s["test_out"]):  # songs through a room and noise at 10 dB, as a microphone would hear them
                q = Query(0, False, s["test_out"][i], "", 0.0, len(wav) / sr, 10.0, i % len(irs), i)
                x = torch.from_numpy(render(q, irs, noises))[None]
            listener = listen.Listener(rec, window_s=args.window, confirm=args.confirm)
            events = feed(listener, x[0].numpy(), chunk)
            false_answers += sum(e.kind == "match" for e in events)
            hours += len(wav) / sr / 3600
    print(
        f"\nmodel {s['model']}, {len(songs)} songs in the database, threshold calibrated for "
        f"FPR {s['fpr']}, window {args.window:g} s, confirm {args.confirm}, 4 phases, margin decision"
    )
    print("| SNR | stream part | answered | correct | median s to a correct answer | median s heard |")
    print("|---|---|---|---|---|---|")
    summary = []
    for snr in args.snrs:
        for part in ("first song", "after a change"):
            r = [x for x in rows if x["snr"] == snr and x["part"] == part]
            good = [x["seconds"] for x in r if x["correct"]]
            heard = [x["heard_s"] for x in r if x["correct"]]
            line = {
                "snr": snr,
                "part": part,
                "n": len(r),
                "answered": np.mean([x["answered"] for x in r]),
                "correct": np.mean([x["correct"] for x in r]),
                "median_s": statistics.median(good) if good else None,
                "median_heard_s": statistics.median(heard) if heard else None,
            }
            summary.append(line)
            print(
                f"| {snr:g} dB | {part} | {line['answered']:.0%} | {line['correct']:.0%} | "
                f"{line['median_s'] if line['median_s'] is None else round(line['median_s'], 2)} | "
                f"{line['median_heard_s'] if line['median_heard_s'] is None else round(line['median_heard_s'], 2)} |"
            )
    fph = false_answers / hours if hours else None
    print(
        f"false answers: {false_answers} in {hours * 60:.1f} min of out-of-database music and noise "
        f"= {fph:.1f} per hour"
    )
    ours, ref = statistics.median(cpu["listen"]), statistics.median(cpu["reference"])
    print(
        f"CPU per hop (1 thread): listen {1000 * ours:.1f} ms, reference (Recognizer on the whole buffer) "
        f"{1000 * ref:.1f} ms: {ref / ours:.1f}x"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "summary": summary,
                    "false_answers": false_answers,
                    "hours": hours,
                    "false_per_hour": fph,
                    "cpu_listen_s": ours,
                    "cpu_reference_s": ref,
                },
                indent=1,
                default=float,
            )
        )


if __name__ == "__main__":
    sys.exit(main())
