"""Ablation: which training data and which degradations move the real-music benchmark.

    make corpus                                           # once: the real training corpus (outputs/corpus)
    python benchmarks/real_music/setup_data.py            # once: the benchmark's music and noise
    python benchmarks/ablation.py [--rows v1 real ...] [--pairs 50000] [--train-only] [--name ablation]
    python benchmarks/ablation.py --quick    # the same path on a stand-in corpus, no data needed (about 3 min)

Every trained row is a ``nafp_small`` model trained by the same command with the same number of pairs
(an equal budget, smaller than the shipped model's: the rows compare levers, not final models), on the
corpus's training songs, validated on its held-out songs; only the data and the degradations differ,
each row adding one lever to the row before it:

- ``real``: recorded music only (no rendered scores), synthetic noises, simulated rooms (NAFP's
  degradations);
- ``real_noise``: + the recorded ambience and record noise, and rooms heard through loudspeaker responses;
- ``scores``: + the rendered scores (MIDI, tracker modules and music21 works) among the songs;
- ``codecs``: + lossy codecs (MP3, AAC, Opus, AMR-NB, GSM at low bitrates);
- ``full``: + speed changes (+-6 %), microphone colouration, automatic gain and clipping (the shipped
  recipe, at this budget).

Two rows are not trained here: ``v1`` (fplib-small-v1, synthetic music and noise) and ``v2`` (the shipped
fplib-small-v2: the ``full`` recipe at ten times the budget, 600,000 pairs in 80 minutes).

Training is resumable: each row trains in ``outputs/ablation/BUDGETk/ROW/`` with ``trainer --resume``, so an
interrupted run continues where it stopped and a finished row is not trained again (its time is read
from its log). Then every row is measured on the same queries by ``real_music/run.py --threshold
corpus``: every row (v1 too) with a threshold calibrated as a shipped model's is, on the corpus's
held-out songs for 2 % false positives; the table has top-1 at that decision and ranked-first (the
right answer ranked first, before the threshold), per query length and per query condition (the phone
codec GSM, 2 % fast and 5 % slow), with each row's training time.

``--quick`` runs the same path on small stand-ins (``benchmarks/standin.py``: a synthetic corpus in the
corpus's layout, in a temporary folder, and ``run.py --quick``'s stand-in of the benchmark data): the rows
``real``, ``full`` and ``v2``, 256 pairs in one epoch each; its table says nothing about the levers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from fplib import corpus, storage  # noqa: E402
from fplib.train import read_metrics  # noqa: E402

FULL_AUGMENT = {
    "speed_p": 0.5,
    "speed_max": 0.06,
    "eq_p": 0.6,
    "eq_db": 8.0,
    "gain_p": 0.25,
    "clip_p": 0.15,
    "codec_p": 0.3,
}
CODECS_ONLY = {"codec_p": 0.3}
# row -> (songs: "recorded" or "all", noise folder, rooms folder, AugmentConfig overrides), folders under
# CORPUS/{train,val}/
ROWS = {
    "real": ("recorded", "noise/synthetic", "rooms/plain", {}),
    "real_noise": ("recorded", "noise", "rooms", {}),
    "scores": ("all", "noise", "rooms", {}),
    "codecs": ("all", "noise", "rooms", CODECS_ONLY),
    "full": ("all", "noise", "rooms", FULL_AUGMENT),
}
SHIPPED = {"v1": ROOT / "fplib/pretrained/fplib-small-v1.pt", "v2": ROOT / "fplib/pretrained/fplib-small-v2.pt"}
# the query conditions of the table: a phone codec and speed changes (MP3 and AAC at 64 kb/s cost neither
# shipped model anything, and AMR-NB cost what GSM did: benchmarks/real_music/RESULTS.md)
CONDITIONS = ["gsm", "speed+2", "speed-5"]
RECIPE = [
    "--arch",
    "nafp_small",
    "-bs",
    "128",
    "--lr",
    "1e-3",
    "--lr_ref_batch",
    "128",
    "--patience",
    "1000",
    "--workers",
    "0",
    "--val_items_per_song",
    "8",
    "--preload",
]


def recorded_music(root: Path, out: Path) -> Path:
    """A folder ``OUT/recorded/{train,val}/`` of links to the corpus's recorded songs (its rendered scores left
    out), made from the manifest."""
    manifest = storage.read_json(root / corpus.MANIFEST)
    folder = out / "recorded"
    for r in manifest["files"]:
        if r["role"] == "music" and r["status"] == "kept" and "rendered_with" not in r:
            link = folder / r["split"] / Path(r["path"]).relative_to(Path(r["split"]) / "music")
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to((root / r["path"]).resolve())
    return folder


def train_command(row: str, root: Path, out: Path, pairs: int, epochs: int) -> list[str]:
    """The trainer command of a row: ``pairs`` pairs over ``epochs`` epochs on the corpus at ``root``."""
    songs, noise, rooms, augment = ROWS[row]
    music = {s: recorded_music(root, out) / s if songs == "recorded" else root / s / "music" for s in ("train", "val")}
    n_songs = len(list(music["train"].rglob("*.flac")))
    per_song = max(1, round(pairs / epochs / n_songs))
    return [
        str(Path(sys.executable).parent / "trainer"),
        "-ep",
        str(epochs),
        "-m",
        row,
        *RECIPE,
        "--items_per_song",
        str(per_song),
        "--augment",
        json.dumps(augment),
        "-o",
        str(out),
        "--resume",
        "dynamic",
        "-tp",
        str(music["train"]),
        "-tr",
        str(root / "train" / rooms),
        "-tb",
        str(root / "train" / noise),
        "-vp",
        str(music["val"]),
        "-vr",
        str(root / "val" / rooms),
        "-vb",
        str(root / "val" / noise),
    ]


def trained(out: Path, row: str, epochs: int) -> dict | None:
    """A finished row's checkpoint and training time, or None."""
    log = out / row / "metrics.jsonl"
    if not log.exists():
        return None
    history = read_metrics(out / row)
    if len(history) < epochs:
        return None
    return {
        "checkpoint": out / row / "best.pt",
        "minutes": sum(h["seconds"] for h in history) / 60,
        "pairs_per_s": history[-1]["pairs_per_s"],
        "epochs": len(history),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", nargs="+", default=["v1", *ROWS, "v2"], choices=[*SHIPPED, *ROWS])
    ap.add_argument("--corpus", default=str(corpus.default_root()), help="the corpus of build_corpus")
    ap.add_argument(
        "--pairs",
        type=int,
        default=50_000,
        help="training pairs per row (default: 50,000, about 8 minutes a row on a 2-core CPU)",
    )
    ap.add_argument("--epochs", type=int, default=4, help="epochs per row (the cosine schedule's length)")
    ap.add_argument("--name", default="ablation", help="benchmarks/real_music/results/NAME/")
    ap.add_argument("--train-only", action="store_true", help="train the rows, measure nothing")
    ap.add_argument("--per-cell", type=int, default=30, help="benchmark queries per length and SNR")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="rows real, full and v2, 256 pairs each, on a stand-in "
        "corpus and benchmark data (about 3 minutes; figures say nothing about the levers)",
    )
    args = ap.parse_args()
    if not args.quick:
        ablate(args, storage.outputs_root() / "ablation" / f"{args.pairs // 1000}k")  # budgets never mix
        return
    from standin import training_corpus

    print(
        "ablation QUICK MODE: rows real, full and v2, 256 pairs in one epoch each, on a synthetic stand-in "
        "corpus and benchmark data; the figures are not comparable with a full run's",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fplib-ablation-") as tmp:
        args.rows, args.pairs, args.epochs = ["real", "full", "v2"], 256, 1
        args.corpus, args.name = str(training_corpus(Path(tmp) / "corpus")), "ablation-quick"
        ablate(args, Path(tmp) / "ablation")


def ablate(args, out: Path) -> None:
    """Train the rows of ``args`` into ``out`` (those not trained yet), then measure them."""
    root = Path(args.corpus)
    if not (root / corpus.MANIFEST).exists():
        sys.exit(f"{root}: no corpus; run `make corpus` first")
    done = {}
    for row in args.rows:
        if row in SHIPPED:
            continue
        if trained(out, row, args.epochs) is None:
            cmd = train_command(row, root, out, args.pairs, args.epochs)
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        done[row] = trained(out, row, args.epochs)
        if done[row] is None:
            sys.exit(f"{row}: training ended before {args.epochs} epochs (see {out / row / 'metrics.jsonl'})")
    if args.train_only:
        return
    specs = [f"{r}={SHIPPED[r] if r in SHIPPED else done[r]['checkpoint']}" for r in args.rows]
    cmd = [
        sys.executable,
        str(HERE / "real_music/run.py"),
        "--checkpoint",
        *specs,
        "--name",
        args.name,
        "--threshold",
        "corpus",
        "--corpus",
        str(root),
        "--no-landmark",
        "--conditions",
        *CONDITIONS,
        *(["--quick"] if args.quick else ["--per-cell", str(args.per_cell)]),
    ]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    print("\ntraining per row:")
    for row in args.rows:
        if row == "v1":
            print("  v1: the shipped model (46 min on this 2-core CPU, synthetic music and noise)")
        elif row == "v2":
            print("  v2: the shipped model (the full recipe, 600,000 pairs in 80 min on this 2-core CPU)")
        else:
            d = done[row]
            print(
                f"  {row}: {d['epochs']} epochs, {d['minutes']:.0f} min, {d['pairs_per_s']:.0f} pairs/s, "
                f"{d['checkpoint']}"
            )


if __name__ == "__main__":
    main()
