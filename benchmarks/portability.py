"""The portability matrix: every learning check, under each CPU kernel variant this machine can emulate,
several thread counts and seeds, with each check's margin (how far its value is from its bound, as a ratio).

Floating-point results depend on which kernels run: oneDNN (convolutions) picks AVX-512, AVX2, AVX or SSE4.1
code by the CPU, and ATen's own vectorised kernels pick AVX-512, AVX2 or plain code. A machine can emulate
a narrower CPU (never a wider one) with two environment variables, read once when a process starts:

* ``ONEDNN_MAX_CPU_ISA``: ``DEFAULT`` (the widest the CPU has), ``AVX2``, ``AVX``, ``SSE41``;
* ``ATEN_CPU_CAPABILITY``: ``default`` (no vector code) or ``avx2`` (``avx512`` where the CPU has it).

Checks (each process runs them at every thread count and seed asked for):

* ``unit``: the learning checks of the tests (``tests/learning.py``): ATTN's attention initialisation,
  SAMAF's reconstruction, the trainer's loss curve on a small static dataset. Seconds each.
* ``demo``: notebook 03's training of every family on the demo corpus with the demo profile's recipes
  (the main model and ``compare_models`` with ``compare_recipes``), each one's best validation top-1 as a
  multiple of the "learned" bound (:data:`fplib.train.LEARNED_OVER_CHANCE` times chance). About two minutes
  per seed and thread count on 2 cores.

Usage::

    python benchmarks/portability.py                      # unit checks, every variant, threads 1 2 16, seeds 0 1 2
    python benchmarks/portability.py --checks unit demo   # and the demo's family training (about 2 hours on 2 cores)
    python benchmarks/portability.py --quick              # unit checks under AVX2 / default ATen, 1 thread, seed 0

It prints one line per check, variant, thread count and seed, then the smallest margin of each check, and
exits 1 if any check fails or any margin is under ``--min-margin`` (default 2: a value at least twice as far
from its bound as the bound itself, so that another vector width cannot cross it). ``make portability``
runs the default. The variants this CPU cannot emulate (wider than it has) are skipped and named.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, environment): the kernel variants, widest first
VARIANTS = [
    ("default", {}),
    ("onednn=AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("onednn=AVX", {"ONEDNN_MAX_CPU_ISA": "AVX"}),
    ("onednn=SSE41", {"ONEDNN_MAX_CPU_ISA": "SSE41"}),
    ("aten=avx2", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("aten=default", {"ATEN_CPU_CAPABILITY": "default"}),
    ("onednn=AVX2 aten=default", {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "default"}),
]
QUICK_VARIANT = "onednn=AVX2 aten=default"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def emulable(env: dict[str, str], flags: set[str]) -> bool:
    """Whether this CPU has the instructions the variant asks for (it can only narrow them)."""
    need = {"AVX2": "avx2", "AVX": "avx", "SSE41": "sse4_1"}.get(env.get("ONEDNN_MAX_CPU_ISA", ""), "")
    need_aten = {"avx2": "avx2", "avx512": "avx512f"}.get(env.get("ATEN_CPU_CAPABILITY", ""), "")
    return all(not n or not flags or n in flags for n in (need, need_aten))


# -- the worker: one process, one kernel variant --------------------------------------------------------


def demo_family_checks(seed: int, threads: int, work: Path) -> list:
    """Notebook 03's family training on the demo corpus, with the demo profile's recipes."""
    from fplib import data, notebooks, sources, train
    from fplib.augment import AugmentConfig
    from fplib.engine import torch_threads
    from fplib.models import registry
    from fplib.synth import demo
    from fplib.train_config import TrainConfig
    from tests.learning import Check

    def demo_params(name: str) -> dict:
        nb = notebooks.notebooks_dir() / name
        return {k: v for k, (_, v) in notebooks.parameters_cell(nb).items()} | notebooks.load_params("demo", nb)

    g, p = demo_params("01_generate_dataset.ipynb"), demo_params("03_train_online.ipynb")
    spec = demo.CorpusSpec(
        n_songs=g["corpus_songs"],
        song_seconds=g["corpus_song_seconds"],
        n_noises=g["corpus_noises"],
        noise_seconds=g["corpus_noise_seconds"],
        n_irs=g["corpus_irs"],
        seed=g["corpus_seed"],
    )
    corpus = demo.make_demo_corpus(work / "corpus", spec)  # notebook 01's; made once in the work folder, then reused
    split = sources.split_online_data(
        corpus["music"], corpus["rir"], corpus["noise"], work / f"split-{seed}", p["train_ratio"], seed
    )
    base = dict(
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        optim=p["optim"],
        lr=p["lr"],
        lr_ref_batch=p["lr_ref_batch"],
        patience=p["patience"],
        seed=seed,
        num_workers=0,
        items_per_song=p["items_per_song"],
        val_items_per_song=p["val_items_per_song"],
        preload=True,
    )
    recipes = {p["model"]: {"temperature": p["temperature"]}}
    for name in p["compare_models"]:
        recipes[name] = {"epochs": p["compare_epochs"] or p["epochs"], **p["compare_recipes"].get(name, {})}
    checks = []
    for name, recipe in recipes.items():
        cfg = TrainConfig(**{**base, "model": name, **recipe})
        fe = registry.frontend_for(name, f_min=p["f_min"])
        source = sources.online_source(
            sources.OnlineFolders.from_split(split), cfg, AugmentConfig(), fe, data.Skipped()
        )
        with torch_threads(threads):
            hist = train.train(cfg, source, Path(tempfile.mkdtemp(dir=work)), fe, progress=False)
        _, best = train.best_epoch(hist)
        checks.append(
            Check(f"demo {name}: best val top-1 / chance", train.times_chance(best), ">", train.LEARNED_OVER_CHANCE)
        )
    return checks


def worker(checks: list[str], seeds: list[int], threads: list[int], work: Path) -> None:
    from tests import learning

    for n in threads:
        for seed in seeds:
            for what in checks:
                t0 = time.time()
                if what == "unit":
                    found = [
                        c
                        for f in learning.CHECKS.values()
                        for c in f(seed, n, **({"root": work} if f is learning.static_training else {}))
                    ]
                else:
                    found = demo_family_checks(seed, n, work)
                for c in found:
                    print(
                        "CHECK "
                        + json.dumps(
                            {
                                "name": c.name,
                                "value": c.value,
                                "op": c.op,
                                "bound": c.bound,
                                "threads": n,
                                "seed": seed,
                                "seconds": round(time.time() - t0, 1),
                            }
                        ),
                        flush=True,
                    )


# -- the parent: one worker process per variant ---------------------------------------------------------


def run_variant(label: str, env: dict[str, str], args: argparse.Namespace, work: Path) -> list[dict]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--checks",
        *args.checks,
        "--seeds",
        *map(str, args.seeds),
        "--threads",
        *map(str, args.threads),
        "--work",
        str(work),
    ]
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    for key in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        if key not in env:
            full_env.pop(key, None)
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, cwd=ROOT)
    rows = [json.loads(line[6:]) | {"variant": label} for line in proc.stdout.splitlines() if line.startswith("CHECK ")]
    if proc.returncode != 0:
        rows.append({"variant": label, "name": "worker", "error": proc.stderr.strip().splitlines()[-1:]})
    return rows


def margin(row: dict) -> float:
    from tests.learning import Check

    return Check(row["name"], row["value"], row["op"], row["bound"]).margin


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checks", nargs="+", default=["unit"], choices=["unit", "demo"])
    ap.add_argument("--variants", nargs="+", help="labels of VARIANTS to run (default: every one this CPU can)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2, 16])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--min-margin", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help=f"unit checks, {QUICK_VARIANT}, 1 thread, seed 0")
    ap.add_argument("--json", help="also write every row to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.checks, args.seeds, args.threads, Path(args.work))
        return 0
    if args.quick:
        print(f"portability QUICK MODE: the unit checks under {QUICK_VARIANT} only, 1 thread, seed 0", flush=True)
        args.checks, args.variants, args.threads, args.seeds = ["unit"], [QUICK_VARIANT], [1], [0]
    flags = cpu_flags()
    wanted = [(label, env) for label, env in VARIANTS if not args.variants or label in args.variants]
    skipped = [label for label, env in wanted if not emulable(env, flags)]
    wanted = [(label, env) for label, env in wanted if emulable(env, flags)]
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "older"
    print(
        f"CPU: {isa} ({os.cpu_count()} cores); variants: {', '.join(label for label, _ in wanted)}"
        + (f"; skipped (wider than this CPU): {', '.join(skipped)}" if skipped else "")
        + f"; threads {args.threads}; seeds {args.seeds}; checks {args.checks}",
        flush=True,
    )
    rows, failures = [], []
    with tempfile.TemporaryDirectory(prefix="fplib-portability-") as tmp:
        for label, env in wanted:
            t0 = time.time()
            got = run_variant(label, env, args, Path(tmp))
            for r in got:
                if "error" in r:
                    failures.append(f"{label}: worker failed: {r['error']}")
                    continue
                r["margin"] = margin(r)
                ok = r["margin"] >= args.min_margin
                print(
                    f"{label:26s} threads {r['threads']:2d} seed {r['seed']}  {r['name']:52s} "
                    f"{r['value']:9.4g} {r['op']} {r['bound']:<6.4g} margin {r['margin']:6.2f}x"
                    f"{'' if ok else '  <-- under ' + str(args.min_margin) + 'x'}",
                    flush=True,
                )
                if not ok:
                    failures.append(f"{label} threads {r['threads']} seed {r['seed']}: {r['name']}")
            rows += got
            print(f"   ({label}: {time.time() - t0:.0f} s)", flush=True)
    good = [r for r in rows if "margin" in r]
    print("\nsmallest margin of each check (over every variant, thread count and seed):")
    for name in dict.fromkeys(r["name"] for r in good):
        worst = min((r for r in good if r["name"] == name), key=lambda r: r["margin"])
        print(
            f"  {name:52s} {worst['margin']:6.2f}x  ({worst['variant']}, threads {worst['threads']}, "
            f"seed {worst['seed']}: {worst['value']:.4g} {worst['op']} {worst['bound']:.4g})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if failures or not good:
        print(
            f"\n{len(failures)} check(s) under {args.min_margin}x or failed:\n  " + "\n  ".join(failures)
            if failures
            else "\nno check ran"
        )
        return 1
    print(f"\nevery margin at least {args.min_margin}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
