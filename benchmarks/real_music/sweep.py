"""The training sweep behind RESULTS.md: each experiment is the base recipe with one setting changed.

    python benchmarks/real_music/setup_data.py                     # the music (once)
    python benchmarks/real_music/sweep.py --list                   # the experiments and their settings
    python benchmarks/real_music/sweep.py --only C_synth --device cuda --workers 12
    python benchmarks/real_music/run.py --checkpoint benchmarks/real_music/results/sweep/C_synth/C_synth/last.pt \\
        --name sw_C_synth --no-landmark --per-cell 30

Every experiment trains with ``trainer ... dynamic_online`` (fixed number of pairs, cosine schedule to
the last step, early stopping off). Training music: supertux-data ("real"), the synthetic corpus of
the CPU profile ("synth", 48 songs x 60 s, made here if missing), or both; noises and rooms from that
synthetic corpus (200 rooms, or its first 12 for H_rir12). The megaglest ambience and the rooms of
the benchmark's queries are never used for training. Sampling and degradations are seeded per item,
so a run on a GPU draws the same pairs as on a CPU; ``--no_amp`` keeps the GPU in full precision.

``--quick`` trains ``A_base`` for 256 pairs in one epoch on stand-ins (``benchmarks/standin.py``'s
benchmark data, a small synthetic corpus in a temporary folder), then measures it with ``run.py
--quick`` beside the shipped model (about a minute); its figures are not comparable with a full run's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from setup_data import DATA, files  # noqa: E402

BASE = dict(songs="both", pairs=400_000, epochs=8, bs=128, lr=1e-3, settings={}, f_min=300.0, augment={}, rir="rir")
EXPERIMENTS = {  # name: what differs from BASE
    "A_base": {},
    "B_real": {"songs": "real"},
    "C_synth": {"songs": "synth"},
    "D_bs256": {"bs": 256},  # the learning rate scales with the batch (lr_ref_batch 128)
    "E_lr3e-4": {"lr": 3e-4},
    "F_width0.5_130k": {"settings": {"width": 0.5}, "pairs": 130_000},  # the same CPU time as 400k at width 0.25
    "G_snr-3to10": {"augment": {"snr_db": [-3, 10]}},
    "H_rir12": {"rir": "rir12"},
    "I_fmin150": {"f_min": 150.0},
    "J_band0.7": {"augment": {"bandlimit_p": 0.7}},
    "K_base_200k": {"pairs": 200_000},
    "K_base_800k": {"pairs": 800_000},
    "K_base_1600k": {"pairs": 1_600_000, "epochs": 16},
}


def folders(work: Path, corpus: Path, data: Path = DATA, spec=None) -> dict[str, Path]:
    """Song, room and noise folders of links (made once); ``data``: the benchmark data (setup_data.py's),
    ``spec``: the synthetic corpus's (default: 48 songs of 60 s, 48 noises, 200 rooms)."""
    from fplib.synth import demo

    spec = spec or demo.CorpusSpec(n_songs=48, song_seconds=60, n_noises=48, noise_seconds=30, n_irs=200, seed=0)
    demo.make_demo_corpus(corpus, spec)
    music = data / "supertux-data" / "usr/share/games/supertux2/music"
    real = {f"{p.relative_to(music).as_posix().replace('/', '__')}": p for p in files("supertux-data", data)}
    if not real:
        sys.exit("no training music: run benchmarks/real_music/setup_data.py first")
    synth_songs = {p.name: p for p in sorted((corpus / "music").iterdir())}
    rooms = sorted((corpus / "rir").iterdir())
    sets = {
        "real": real,
        "synth": synth_songs,
        "both": {**real, **synth_songs},
        "rir": {p.name: p for p in rooms},
        "rir12": {p.name: p for p in rooms[:12]},
    }
    out = {}
    for name, members in sets.items():
        d = work / "folders" / name
        d.mkdir(parents=True, exist_ok=True)
        for link_name, target in members.items():
            if not (d / link_name).exists():
                (d / link_name).symlink_to(target.resolve())
        out[name] = d
    out["noise"] = corpus / "noise"
    return out


def command(name: str, exp: dict, dirs: dict[str, Path], work: Path, device: str, workers: int) -> list[str]:
    n_songs = len(list(dirs[exp["songs"]].iterdir()))
    items = max(1, round(exp["pairs"] / exp["epochs"] / round(0.8 * n_songs)))
    return [
        "-ep",
        str(exp["epochs"]),
        "-bs",
        str(exp["bs"]),
        "-m",
        name,
        "-o",
        str(work / name),
        "--arch",
        "nafp_small",
        "--lr",
        str(exp["lr"]),
        "--lr_ref_batch",
        "128",
        "--patience",
        "1000",
        "--workers",
        str(workers),
        "--items_per_song",
        str(items),
        "--val_items_per_song",
        "50",
        "--f_min",
        str(exp["f_min"]),
        "--model_settings",
        json.dumps(exp["settings"]),
        "--augment",
        json.dumps(exp["augment"]),
        "--device",
        device,
        "--no_amp",
        "--preload",
        "dynamic_online",
        "-p",
        str(dirs[exp["songs"]]),
        "-ir",
        str(dirs[exp["rir"]]),
        "-bn",
        str(dirs["noise"]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=sorted(EXPERIMENTS), choices=sorted(EXPERIMENTS))
    ap.add_argument("--list", action="store_true", help="print the experiments and stop")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (0 on a 2-core CPU)")
    ap.add_argument(
        "--corpus",
        default=str(ROOT / "outputs" / "cpu" / "corpus"),
        help="the synthetic corpus of the CPU profile (made if missing)",
    )
    ap.add_argument("--work", default=str(HERE / "results" / "sweep"))
    ap.add_argument(
        "--quick",
        action="store_true",
        help="A_base for 256 pairs on stand-ins, measured by run.py "
        "--quick beside the shipped model (about a minute; figures not comparable with a full run's)",
    )
    args = ap.parse_args()
    if args.list:
        for name in args.only:
            print(f"{name:18s} {json.dumps({**BASE, **EXPERIMENTS[name]})}")
        return
    if args.quick:
        quick(args)
        return
    work = Path(args.work)
    dirs = folders(work, Path(args.corpus))
    for name in args.only:
        argv = command(name, {**BASE, **EXPERIMENTS[name]}, dirs, work, args.device, args.workers)
        print("trainer " + " ".join(argv), flush=True)
        subprocess.run([sys.executable, "-m", "fplib.cli", "trainer", *argv], check=True)


def quick(args) -> None:
    """``A_base`` for 256 pairs in one epoch on stand-ins, then ``run.py --quick`` on it and the shipped model."""
    from fplib import pretrained
    from fplib.synth import demo

    sys.path.insert(0, str(HERE.parent))
    from standin import real_music_data

    print(
        "sweep QUICK MODE: A_base for 256 pairs on a synthetic stand-in of the data, measured beside the shipped "
        "model; the figures are not comparable with a full run's",
        flush=True,
    )
    data = real_music_data(HERE / "results" / "standin-data")
    with tempfile.TemporaryDirectory(prefix="fplib-sweep-") as tmp:
        work = Path(tmp)
        spec = demo.CorpusSpec(n_songs=4, song_seconds=20, n_noises=4, noise_seconds=10, n_irs=12, seed=0)
        dirs = folders(work, work / "corpus", data, spec)
        argv = command("A_base", {**BASE, "pairs": 256, "epochs": 1}, dirs, work, args.device, args.workers)
        print("trainer " + " ".join(argv), flush=True)
        subprocess.run([sys.executable, "-m", "fplib.cli", "trainer", *argv], check=True)
        subprocess.run(
            [
                sys.executable,
                str(HERE / "run.py"),
                "--quick",
                "--name",
                "sweep-quick",
                "--no-landmark",
                "--checkpoint",
                f"A_base={work / 'A_base' / 'A_base' / 'last.pt'}",
                f"shipped={pretrained.default_model()}",
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
