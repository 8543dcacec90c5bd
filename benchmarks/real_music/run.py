"""Real-music benchmark: a trained fingerprinter against audfprint on openly licensed game music.

    python benchmarks/real_music/setup_data.py            # once: fetch the data (see LICENSES.md there)
    python benchmarks/real_music/run.py --checkpoint outputs/demo/train_online/best.pt [--name demo]
    python benchmarks/real_music/run.py --checkpoint small=A.pt wide=B.pt --name compare   # side by side
    python benchmarks/real_music/run.py --quick    # the same path on a small synthetic stand-in (under a minute)

Protocol: fplib.evaluate.benchmark, as notebook 05 runs it, with PROTOCOL below (all seeded; the query
list is written to results/<name>/queries.json so runs compare):
- database: the held-out music (hedgewars-data and colobot-common-sounds, never used for training),
  minus a seeded --kept-out share (default half) kept out for false-positive queries, plus the
  training music (supertux-data) as distractors;
- queries of 1, 2, 3, 5 and 10 s at 0, 5 and 10 dB SNR from held-out songs in the database, cut at
  random positions, convolved with simulated rooms (pyroomacoustics, a seed no training used) and
  mixed with ambient noise (megaglest-data); half of them band-limited as a phone microphone would;
- out-of-database queries (the same way, from the held-out songs kept out) for the false-positive
  rate; the decision threshold (on the margin of the best song over the next, --decision) is
  calibrated for --fpr on a separate half of those songs (--calib-per-cell queries per length and
  SNR) and on --noise-only queries per length; queries are matched with --phases 4 (fplib.search);
  several models (--checkpoint NAME=PATH ...) each get their own catalogue, index and threshold
  (results/<name>/systems/NAME/) and answer the same queries;
- one table: top-1 hit rate (song and offset within 0.5 s, or of an exact repeat of the same audio in
  the song: fplib.queries.find_repeats) per length and SNR for each system, false positives, time
  per query, database bytes per second of audio; per-query rows in results/<name>/rows.json.

``--quick`` runs the same path end to end on a small stand-in of the data (``benchmarks/standin.py``:
synthetic songs and noises in the packages' layout, made once in results/standin-data/; the fetched data
is not needed), with the shipped model unless ``--checkpoint`` is given, 1- and 3-s queries at 5 dB, two
per cell, two of the conditions, results in results/quick/ (``--name``): its figures are not comparable
with a full run's.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from fplib import audio, calibrate, evaluate, heldout, index, search, storage, viz
from fplib import queries as fpqueries
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_model, model_description, resolve_device
from fplib.data import IRBank, NoiseBank, item_rng
from fplib.extraction import extract
from fplib.synth.demo import item_seed
from fplib.synth.rooms import simulate_rir

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from setup_data import DATA, files  # noqa: E402

QUICK = {
    "lengths": (1.0, 3.0),
    "snrs": (5.0,),
    "queries_per_cell": 2,
    "calibration_per_cell": 2,
    "noise_only_per_length": 1,
}
QUICK_CONDITIONS = ["gsm", "speed+2"]


def rooms(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"room_{i:03d}.wav"
        if not path.exists():
            ir, _ = simulate_rir(item_seed(seed, "benchmark-rir", i))
            audio.write(path, ir, 16000, subtype="FLOAT")
        out.append(path)
    return out


# The benchmark's protocol: fplib.evaluate.Protocol with these fields changed (the options below override them).
PROTOCOL = evaluate.Protocol(snrs=(0.0, 5.0, 10.0), queries_per_cell=30, noise_only_per_length=4, bandlimit_share=0.5)


def card_threshold(rec: search.Recognizer, checkpoint: Path) -> search.Recognizer:
    """``rec`` with the threshold, phases and decision of the model's card (``checkpoint`` with ``.json``)."""
    card = checkpoint.with_suffix(".json")
    if not card.exists():
        raise SystemExit(f"--threshold card: {checkpoint} has no card {card} (fplib.pretrained.export writes one)")
    saved = search.check_threshold(storage.read_json(card).get("threshold"), card)
    t = saved["threshold"]
    rec.threshold = search.Threshold(tuple(t["windows"]), tuple(t["values"])) if isinstance(t, dict) else float(t)
    rec.decision = saved.get("decision", rec.decision)
    if saved.get("phases", rec.phases) != rec.phases:
        raise SystemExit(
            f"--threshold card: {card} was calibrated with {saved.get('phases')} phases; pass --phases "
            f"{saved.get('phases')}"
        )
    return rec


def checkpoints(specs: list[str]) -> dict[str, Path]:
    """``--checkpoint`` values (``PATH`` or ``NAME=PATH``) -> ``{system name: checkpoint}``; a single
    unnamed checkpoint is the system ``neural``."""
    if len(specs) == 1 and "=" not in specs[0]:
        return {"neural": Path(specs[0])}
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = (name, path) if sep else (Path(spec).stem, spec)
        if not name or name in out or name == "audfprint":
            raise SystemExit(f"--checkpoint {spec}: each model needs its own name (NAME=PATH), not 'audfprint'")
        out[name] = Path(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p = PROTOCOL
    ap.add_argument(
        "--checkpoint",
        nargs="+",
        metavar="[NAME=]PATH",
        help="the model; several (NAME=PATH each) are evaluated side by side on the same queries "
        "(required, except with --quick: the shipped model)",
    )
    ap.add_argument("--name", default=None, help="results/<name>/ (default: run; quick with --quick)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="the same path on a small synthetic stand-in of the data "
        "(under a minute; figures not comparable with a full run's)",
    )
    ap.add_argument("--lengths", nargs="+", type=float, help=f"query lengths, s (default: {list(p.lengths)})")
    ap.add_argument("--snrs", nargs="+", type=float, help=f"SNRs, dB (default: {list(p.snrs)})")
    ap.add_argument("--per-cell", type=int, help=f"queries per (length, SNR) (default: {p.queries_per_cell})")
    ap.add_argument("--bandlimit-share", type=float, help=f"(default: {p.bandlimit_share})")
    ap.add_argument("--fpr", type=float, help=f"target false-positive rate (default: {p.target_fpr})")
    ap.add_argument(
        "--kept-out",
        type=float,
        default=0.5,
        help="share of the held-out songs kept out of the database "
        "for false-positive queries, half of them to calibrate the threshold (default: 0.5; it was 0.2, "
        "which left 4 songs to measure false positives)",
    )
    ap.add_argument("--nprobe", type=int, default=40)
    ap.add_argument("--phases", type=int, default=4, help="query phases per hop (fplib.search; default: 4)")
    ap.add_argument("--decision", default="margin", choices=["score", "margin"], help="fplib.search (default: margin)")
    ap.add_argument(
        "--calib-per-cell",
        type=int,
        default=None,
        help="calibration queries per (length, SNR) (default: twice --per-cell)",
    )
    ap.add_argument(
        "--noise-only", type=int, help=f"noise-only calibration queries per length (default: {p.noise_only_per_length})"
    )
    ap.add_argument("--landmark-density", type=float, help=f"(default: {p.landmark_density})")
    ap.add_argument("--no-landmark", action="store_true")
    ap.add_argument("--seed", type=int, help=f"(default: {p.seed})")
    ap.add_argument(
        "--conditions",
        nargs="*",
        default=None,
        metavar="COND",
        help="the test queries again through a codec or at another speed, as rows of their own "
        f"(default: all of {', '.join(fpqueries.CONDITIONS)}; none: --conditions with no value)",
    )
    ap.add_argument(
        "--threshold",
        default="calibrate",
        choices=["calibrate", "card", "corpus"],
        help="calibrate: each model's threshold is fitted on the benchmark's calibration queries; "
        "card: each model keeps the threshold its card ships (MODEL.json beside MODEL.pt, as "
        "fplib.pretrained.export writes it), the decision a user of it gets; corpus: each model "
        "calibrated as a shipped model is, on the held-out songs of the training corpus "
        "(--corpus) with its held-out rooms and noises, for --shipped-fpr (default: calibrate)",
    )
    ap.add_argument(
        "--corpus", default=None, help="the corpus of build_corpus, for --threshold corpus (default: outputs/corpus)"
    )
    ap.add_argument(
        "--shipped-fpr",
        type=float,
        default=calibrate.SHIPPED_FPR,
        help=f"--threshold corpus: the false-positive rate aimed at (default: {calibrate.SHIPPED_FPR})",
    )
    ap.add_argument(
        "--hop",
        type=float,
        default=None,
        help="the catalogue's hop between windows in seconds "
        "(default: the model's, 0.5); 0.25 doubles the catalogue, and the query phases are halved to "
        "keep the query's windows every 0.125 s",
    )
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.checkpoint is None and not args.quick:
        ap.error("--checkpoint is required (or --quick)")
    if args.conditions is None:
        args.conditions = QUICK_CONDITIONS if args.quick else list(fpqueries.CONDITIONS)
    args.name = args.name or ("quick" if args.quick else "run")
    data, quick = DATA, {}
    if args.quick:
        from fplib import pretrained

        print(
            "QUICK MODE: a small synthetic stand-in of the benchmark data, few queries; the figures are not "
            "comparable with a full run's",
            flush=True,
        )
        sys.path.insert(0, str(HERE.parent))
        from standin import real_music_data

        data, quick = real_music_data(HERE / "results" / "standin-data"), QUICK
        args.checkpoint = args.checkpoint or [str(pretrained.default_model())]
    given = {
        "lengths": args.lengths,
        "snrs": args.snrs,
        "queries_per_cell": args.per_cell,
        "bandlimit_share": args.bandlimit_share,
        "target_fpr": args.fpr,
        "calibration_per_cell": args.calib_per_cell,
        "noise_only_per_length": args.noise_only,
        "landmark_density": args.landmark_density,
        "seed": args.seed,
        "conditions": tuple(args.conditions),
    }
    protocol = replace(PROTOCOL, **{**quick, **{k: v for k, v in given.items() if v is not None}})
    # the options as run (metrics.json records them, as it always did)
    args.lengths, args.snrs, args.per_cell = list(protocol.lengths), list(protocol.snrs), protocol.queries_per_cell
    args.bandlimit_share, args.fpr, args.seed = protocol.bandlimit_share, protocol.target_fpr, protocol.seed
    args.landmark_density, args.noise_only = protocol.landmark_density, protocol.n_noise_only
    models = checkpoints(args.checkpoint)
    if len(args.checkpoint) == 1 and "=" not in args.checkpoint[0]:
        args.checkpoint = args.checkpoint[0]
    if not (data / "LICENSES.md").exists():
        sys.exit("no data: run benchmarks/real_music/setup_data.py first")
    out = HERE / "results" / args.name
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)

    held = files("hedgewars-data", data) + files("colobot-common-sounds", data)
    order = item_rng(protocol.seed, "held-out split").permutation(len(held))
    n_out = max(2, int(round(len(held) * args.kept_out)))
    out_db = sorted(held[i] for i in order[:n_out])
    in_db = sorted(held[i] for i in order[n_out:])
    distractors = files("supertux-data", data)
    for ckpt in models.values():  # no benchmark song may be a song of a model's training corpus
        for songs, where in heldout.model_corpora(ckpt):
            heldout.check_not_in_corpus([str(p) for p in held + distractors], songs, where)
    systems, cat = {}, None
    for system, ckpt in models.items():  # one catalogue and index per model (results/<name>/ for a single one)
        model, fe = load_model(ckpt, device)
        phases = args.phases
        if args.hop is not None:  # a denser catalogue; the query keeps its windows every hop / phases seconds
            phases = max(1, round(args.phases * args.hop / fe.hop_s))
            fe = replace(fe, hop_s=args.hop)
        folder = out if len(models) == 1 else out / "systems" / system
        cat = Catalogue(folder / "catalogue", fe, model_description(ckpt))
        res = extract(in_db + distractors, cat, model, device=device, root=data)
        for path, reason in res.skipped:
            print(f"skipped {path}: {reason}")
        idx_path = index.build(cat, "real", folder, nprobe=args.nprobe)
        systems[system] = search.Recognizer(
            model, cat, idx_path, nprobe=args.nprobe, device=device, phases=phases, decision=args.decision
        )
        if args.threshold == "card":
            systems[system] = card_threshold(systems[system], ckpt)
            print(f"{system}: the threshold of its card ({ckpt.with_suffix('.json')})")
        elif args.threshold == "corpus":
            cal = calibrate.calibrate_on_corpus(
                systems[system],
                args.corpus,
                args.shipped_fpr,
                progress=False,
                **({"per_cell": 2} if args.quick else {}),
            )
            print(
                f"{system}: threshold calibrated on the corpus's held-out songs for {args.shipped_fpr:.0%}: "
                + ", ".join(f"{r.length_s:g} s " + ("n/a" if r.fpr is None else f"{r.fpr:.1%}") for r in cal.per_length)
                + " false positives held back (cross-fitted)"
            )
    songs = cat.songs()
    by_path = {s.path: s.name for s in songs}
    sr = cat.fe.sr
    irs = IRBank(rooms(out / "rooms", 20, protocol.seed + 7), sr, max_s=1.0)
    noises = NoiseBank(files("megaglest-data", data), sr)
    if not args.no_landmark:
        systems["audfprint"] = evaluate.landmark_system(songs, protocol.landmark_density, sr)

    result = evaluate.benchmark(
        systems,
        {str(p): by_path[str(p)] for p in in_db if str(p) in by_path},
        [str(p) for p in out_db],
        irs,
        noises,
        protocol,
        calibrate=args.threshold == "calibrate",
    )
    if args.threshold != "calibrate":
        result.thresholds = {k: s.threshold for k, s in systems.items() if hasattr(s, "recognize")}
    queries = result.queries
    fpqueries.save_queries(out / "queries.json", queries)
    storage.write_json(out / "rows.json", result.rows)
    table = result.table
    audio_s = sum(s.duration for s in songs)
    bytes_per_s = evaluate.db_bytes_per_second(systems, songs)
    summary = {k: result.summary(k) for k in ("top1", "ranked1", "fp_rate", "ms_per_query")}
    thresholds = {k: t.to_dict() if hasattr(t, "to_dict") else t for k, t in result.thresholds.items()}
    single = list(models) == ["neural"]  # one unnamed checkpoint (a single NAME=PATH keeps its name)
    storage.write_json(
        out / "metrics.json",
        {
            "table": table,
            "summary": summary,
            "db_bytes_per_second": bytes_per_s,
            "checkpoint": str(models["neural"]) if single else {k: str(v) for k, v in models.items()},
            "songs_in_db": len(songs),
            "threshold": thresholds["neural"] if single else thresholds,
            "protocol": protocol.to_dict(),
            "args": vars(args),
        },
    )
    print(
        f"\nreal-music benchmark: {len(songs)} songs in the database ({audio_s / 60:.0f} min), "
        f"{sum(q.in_database for q in queries)} + {sum(not q.in_database for q in queries)} queries "
        f"({sum(bool(q.repeats) for q in queries)} of them from audio the song repeats; phases {args.phases}, "
        f"decision {args.decision})"
    )
    print(viz.format_table(table))
    print(f"\n{'system':10s}" + "".join(f"{f'{x:g}s':>8s}" for x in protocol.lengths) + "      FP   ms/query   bytes/s")
    for system in summary["top1"]:
        top1 = summary["top1"][system]
        fp = np.mean(list(summary["fp_rate"].get(system, {}).values()) or [np.nan])
        ms = np.mean(list(summary["ms_per_query"][system].values()))
        print(
            f"{system:10s}"
            + "".join(f"{100 * top1.get(f'{x:g}s', np.nan):7.1f}%" for x in protocol.lengths)
            + f"{100 * fp:7.1f}%{ms:10.1f}{bytes_per_s.get(system) or 0:10.0f}"
        )
        ranked = summary["ranked1"][system]
        print(
            f"{'  ranked1':10s}"
            + "".join(f"{100 * ranked.get(f'{x:g}s', np.nan):7.1f}%" for x in protocol.lengths)
            + "   (the right answer ranked first, before the threshold)"
        )


if __name__ == "__main__":
    main()
