"""Ablation: which training data and which degradations move the real-music benchmark.

    make corpus                                           # once: the real training corpus (outputs/corpus)
    python benchmarks/real_music/setup_data.py            # once: the benchmark's music and noise
    python benchmarks/ablation.py [--rows v1 real ...] [--pairs 300000] [--train-only] [--name ablation]

Every row but ``v1`` (the shipped fplib-small-v1, trained on synthetic music) is a ``nafp_small`` model
trained by the same command with the same number of pairs, on the corpus's training songs, validated
on its held-out songs; only the data and the degradations differ:

- ``real``: real music, synthetic noises, simulated rooms (NAFP's degradations);
- ``real_noise``: + the recorded ambience and the rooms heard through loudspeaker responses;
- ``codecs``: + lossy codecs (MP3, AAC, Opus, AMR-NB, GSM at low bitrates);
- ``full``: + speed changes (+-6 %), microphone colouration, automatic gain and clipping.

Training is resumable: each row trains in ``outputs/ablation/ROW/`` with ``trainer --resume``, so an
interrupted run continues where it stopped and a finished row is not trained again (its time is read
from its log). Then every row is measured on the same queries by ``real_music/run.py --threshold
corpus``: every row (v1 too) with a threshold calibrated as a shipped model's is, on the corpus's
held-out songs for 2 % false positives; the table has top-1 at that decision and ranked-first (the
right answer ranked first, before the threshold), per query length and per query condition (codecs,
speed changes), with each row's training time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from fplib import corpus, storage  # noqa: E402
from fplib.train import read_metrics  # noqa: E402

FULL_AUGMENT = {"speed_p": 0.5, "speed_max": 0.06, "eq_p": 0.6, "eq_db": 8.0, "gain_p": 0.25, "clip_p": 0.15,
                "codec_p": 0.3}
CODECS_ONLY = {"codec_p": 0.3}
# row -> (noise folder, rooms folder, AugmentConfig overrides), folders under CORPUS/{train,val}/
ROWS = {
    "real": ("noise/synthetic", "rooms/plain", {}),
    "real_noise": ("noise", "rooms", {}),
    "codecs": ("noise", "rooms", CODECS_ONLY),
    "full": ("noise", "rooms", FULL_AUGMENT),
}
RECIPE = ["--arch", "nafp_small", "-bs", "128", "--lr", "1e-3", "--lr_ref_batch", "128", "--patience", "1000",
          "--workers", "0", "--val_items_per_song", "8", "--preload"]


def train_command(row: str, root: Path, out: Path, pairs: int, epochs: int) -> list[str]:
    """The trainer command of a row: ``pairs`` pairs over ``epochs`` epochs on the corpus at ``root``."""
    noise, rooms, augment = ROWS[row]
    n_songs = len(list((root / "train" / "music").rglob("*.flac")))
    per_song = max(1, round(pairs / epochs / n_songs))
    return [str(Path(sys.executable).parent / "trainer"), "-ep", str(epochs), "-m", row, *RECIPE,
            "--items_per_song", str(per_song), "--augment", json.dumps(augment), "-o", str(out), "--resume",
            "dynamic", "-tp", str(root / "train/music"), "-tr", str(root / "train" / rooms),
            "-tb", str(root / "train" / noise), "-vp", str(root / "val/music"), "-vr", str(root / "val" / rooms),
            "-vb", str(root / "val" / noise)]


def trained(out: Path, row: str, epochs: int) -> dict | None:
    """A finished row's checkpoint and training time, or None."""
    log = out / row / "metrics.jsonl"
    if not log.exists():
        return None
    history = read_metrics(out / row)
    if len(history) < epochs:
        return None
    return {"checkpoint": out / row / "best.pt", "minutes": sum(h["seconds"] for h in history) / 60,
            "pairs_per_s": history[-1]["pairs_per_s"], "epochs": len(history)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", nargs="+", default=["v1", *ROWS], choices=["v1", *ROWS])
    ap.add_argument("--corpus", default=str(corpus.default_root()), help="the corpus of build_corpus")
    ap.add_argument("--pairs", type=int, default=300_000, help="training pairs per row (default: 300,000)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs per row (the cosine schedule's length)")
    ap.add_argument("--name", default="ablation", help="benchmarks/real_music/results/NAME/")
    ap.add_argument("--train-only", action="store_true", help="train the rows, measure nothing")
    ap.add_argument("--per-cell", type=int, default=30, help="benchmark queries per length and SNR")
    args = ap.parse_args()
    root = Path(args.corpus)
    if not (root / corpus.MANIFEST).exists():
        sys.exit(f"{root}: no corpus; run `make corpus` first")
    out = storage.outputs_root() / "ablation"
    done = {}
    for row in args.rows:
        if row == "v1":
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
    specs = [f"{r}={ROOT / 'fplib/pretrained/fplib-small-v1.pt'}" if r == "v1" else f"{r}={done[r]['checkpoint']}"
             for r in args.rows]
    cmd = [sys.executable, str(HERE / "real_music/run.py"), "--checkpoint", *specs, "--name", args.name,
           "--threshold", "corpus", "--corpus", str(root), "--per-cell", str(args.per_cell), "--no-landmark"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    print("\ntraining per row:")
    for row in args.rows:
        if row == "v1":
            print("  v1: the shipped model (46 min on this 2-core CPU, synthetic music and noise)")
        else:
            d = done[row]
            print(f"  {row}: {d['epochs']} epochs, {d['minutes']:.0f} min, {d['pairs_per_s']:.0f} pairs/s, "
                  f"{d['checkpoint']}")


if __name__ == "__main__":
    main()
