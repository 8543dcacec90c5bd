"""Kill each long job with SIGKILL at random points, run it again until it completes, and check that
the result is the uninterrupted run's.

Jobs (tiny demo-sized inputs, built once in a work folder):

* ``generate_training_dataset`` (5 songs of 6 s, 3 segments each, rooms and noises);
* ``trainer static``: the first run without ``--resume``, every rerun with it;
* ``trainer dynamic_online``: every run (the first too) with ``--resume``, ``--workers 2`` (kills land
  while DataLoader workers run), reruns giving ``-o`` alternately as a relative and an absolute path;
* ``generate_fingerprints`` (10 songs of 8 s, a freshly initialised small model);
* ``create_faiss_indexes`` over a catalogue made once.

Each kill is a fresh process killed at a random point, chosen with ``--seed``: half of the kills at a
random write (the k-th file write of the uninterrupted run, k uniform, killed just before, in the
middle of, or just after it, through :mod:`tests.faults`), half at a random time (uniform over the
uninterrupted run's duration). The job is then run again (same command; ``--resume`` for the trainer)
until it exits 0 (at most 3 times). Its files are then compared with those of an uninterrupted run:
byte for byte, except where a file embeds timing (checkpoints and ``metrics.jsonl`` hold each epoch's
duration and throughput; ``catalogue.sqlite`` holds the time each song was added, and SQLite's pages
differ anyway): those are compared without the timing fields (:func:`tests.faults.compare_trees`).
Leftover temporary files count as differences. Every run uses one thread (OMP_NUM_THREADS=1): float
results can depend on the thread count.

    .venv/bin/python benchmarks/fault_injection.py [--kills 5] [--seed 0] [--jobs generate trainer ...] [--quick]

prints one line per kill, then a table: kills tried, survived (the rerun completed), identical. It
takes a few minutes on 2 cores with ``--kills 5`` (each run pays Python's and torch's start-up).
``--quick``: one kill per job (about a minute); its table is not comparable with a full run's.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import faults  # noqa: E402
from tests.helpers import make_folders, music_like  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
TINY_TRAIN = [
    "-ep",
    "3",
    "-bs",
    "4",
    "--lr",
    "1e-3",
    "--lr_ref_batch",
    "4",
    "--arch",
    "nafp_small",
    "--model_settings",
    '{"width": 0.125}',
    "-m",
    "tiny",
]


@dataclass
class Job:
    name: str
    first: list[str]  # the command (fplib COMMAND ...) of the first run
    output: str  # the folder it writes, relative to its working folder
    rerun: list[list[str]] = field(default_factory=list)  # the reruns' commands, in turn (default: first)

    def command(self, attempt: int, cwd: Path) -> list[str]:
        """The command of run ``attempt`` (0: the first) in ``cwd``; {cwd} is replaced by the folder."""
        argv = self.first if attempt == 0 or not self.rerun else self.rerun[(attempt - 1) % len(self.rerun)]
        return [a.replace("{cwd}", str(cwd)) for a in argv]


@dataclass
class Outcome:
    how: str
    killed: bool
    survived: bool = False
    reruns: int = 0
    diffs: list[str] = field(default_factory=list)
    content_only: list[str] = field(default_factory=list)
    error: str = ""


def _run(argv: list[str], cwd: Path, fault: str | None = None, log: Path | None = None) -> tuple[int, float, str]:
    env = {**ENV, "FPLIB_FAULT": fault or ""}
    if log is not None:
        env["FPLIB_FAULT_LOG"] = str(log)
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "tests.faults", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    return p.returncode, time.perf_counter() - t0, p.stderr


def _run_killed_after(argv: list[str], cwd: Path, seconds: float) -> bool:
    """Start the job and SIGKILL it after ``seconds``; whether it was still running then."""
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.faults", *argv],
        cwd=cwd,
        env={**ENV, "FPLIB_FAULT": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        p.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True


def build_inputs(work: Path) -> dict[str, Path]:
    """Songs, rooms, noises, a static dataset, a model checkpoint and a catalogue, once."""
    import torch

    from fplib import audio
    from fplib.checkpoints import save_checkpoint
    from fplib.features import FrontEnd
    from fplib.models.registry import build_model

    d = make_folders(work / "in", n_songs=5, seconds=6.0)
    songs2 = work / "in" / "songs2"
    for i in range(10):
        audio.write(songs2 / f"s{i:02d}.wav", music_like(8.0, 8000, seed=700 + i), 8000)
    torch.manual_seed(0)
    model, settings = build_model("nafp_small", FrontEnd(), width=0.125)
    ckpt = work / "in" / "model.pt"
    save_checkpoint(
        ckpt,
        {
            "model": model.state_dict(),
            "model_name": "nafp_small",
            "model_settings": settings,
            "frontend": FrontEnd().to_dict(),
        },
    )
    made = work / "made"
    made.mkdir()
    rc, _, err = _run(["generate_training_dataset", "-i", str(d["songs"]), "-n", "3", "-o", "data"], made)
    rc2, _, err2 = _run(
        ["generate_fingerprints", "-i", str(songs2), "-o", "cat", "--model", str(ckpt), "--no_progress"], made
    )
    if rc or rc2:
        raise SystemExit(f"could not build the inputs:\n{err}\n{err2}")
    return {**d, "songs2": songs2, "model": ckpt, "pairs": made / "data" / "Dataset_5", "catalogue": made / "cat"}


def jobs(inp: dict[str, Path]) -> list[Job]:
    gen = [
        "generate_training_dataset",
        "-i",
        str(inp["songs"]),
        "-n",
        "3",
        "-ir",
        str(inp["rir"]),
        "-bn",
        str(inp["noise"]),
        "-o",
        "out",
    ]
    static = [
        "trainer",
        *TINY_TRAIN,
        "-o",
        "run",
        "static",
        "-tp",
        str(inp["pairs"] / "train_set"),
        "-vp",
        str(inp["pairs"] / "val_set"),
    ]
    online = [
        "trainer",
        *TINY_TRAIN,
        "--workers",
        "2",
        "--items_per_song",
        "2",
        "--resume",
        "dynamic_online",
        "-p",
        str(inp["songs"]),
        "-ir",
        str(inp["rir"]),
        "-bn",
        str(inp["noise"]),
    ]
    fp = [
        "generate_fingerprints",
        "-i",
        str(inp["songs2"]),
        "-o",
        "cat",
        "--model",
        str(inp["model"]),
        "--no_progress",
        "--batch",
        "16",
    ]
    idx = ["create_faiss_indexes", "-i", str(inp["catalogue"]), "-n", "songs", "-o", "index"]
    return [
        Job("generate_training_dataset", gen, "out"),
        Job("trainer static (rerun with --resume)", static, "run", [[*static, "--resume"]]),
        Job(
            "trainer dynamic_online (always --resume, -o abs/rel)",
            [*online, "-o", "run"],
            "run",
            [[*online, "-o", "{cwd}/run"], [*online, "-o", "run"]],
        ),
        Job("generate_fingerprints", fp, "cat"),
        Job("create_faiss_indexes", idx, "index"),
    ]


# Every run of a job works in the same folder (then renamed): absolute paths that a job records (the trainer
# records its options, -o included, as absolute paths) are then the same in every run.
HERE = "here"


def reference(job: Job, work: Path) -> tuple[Path, float, list[str]]:
    """An uninterrupted run: its folder, its duration and the names of the files it wrote, in order."""
    cwd = work / HERE
    cwd.mkdir(parents=True)
    log = work / "writes.txt"
    rc, seconds, err = _run(job.command(0, cwd), cwd, "count:*", log)
    if rc != 0:
        raise SystemExit(f"{job.name}: the uninterrupted run failed (exit {rc}):\n{err}")
    writes = log.read_text().splitlines() if log.exists() else []
    cwd.rename(work / "ref")
    return work / "ref" / job.output, seconds, writes


def trial(job: Job, work: Path, ref: Path, seconds: float, writes: list[str], rng: random.Random) -> Outcome:
    cwd = work.parent / HERE
    cwd.mkdir(parents=True)
    try:
        return _trial(job, cwd, ref, seconds, writes, rng)
    finally:
        cwd.rename(work)


def _trial(job: Job, cwd: Path, ref: Path, seconds: float, writes: list[str], rng: random.Random) -> Outcome:
    if rng.random() < 0.5 and writes:
        k = rng.randint(1, len(writes))
        action = rng.choice(["kill-before", "kill-torn", "kill-after"])
        how = f"{action} write {k}/{len(writes)} ({writes[k - 1]})"
        rc, _, err = _run(job.command(0, cwd), cwd, f"{action}:*:{k}")
        killed = rc == -signal.SIGKILL
        if not killed:
            return Outcome(how, False, error=f"not killed (exit {rc}): {err[-300:]}")
    else:
        at = rng.uniform(0.0, seconds)
        how = f"SIGKILL at {at:.1f} s of {seconds:.1f} s"
        killed = _run_killed_after(job.command(0, cwd), cwd, at)
        if not killed:
            return Outcome(how + " (it had finished)", False)
    out = Outcome(how, True)
    for attempt in range(1, 4):
        rc, _, err = _run(job.command(attempt, cwd), cwd)
        out.reruns = attempt
        if rc == 0:
            out.survived = True
            break
        out.error = f"rerun {attempt} exit {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    if out.survived:
        out.diffs, out.content_only = faults.compare_trees(ref, cwd / job.output)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=5, help="kills per job (default: 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points (default: 0)")
    ap.add_argument(
        "--jobs",
        nargs="*",
        default=None,
        help="only the jobs whose name starts with one of these "
        "(generate_training_dataset, trainer, generate_fingerprints, create_faiss_indexes)",
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the runs here (default: a temporary folder, removed at the end)",
    )
    ap.add_argument("--quick", action="store_true", help="one kill per job (about a minute)")
    args = ap.parse_args(argv)
    if args.quick:
        print("fault_injection QUICK MODE: one kill per job; the table is not comparable with a full run's", flush=True)
        args.kills = 1
    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fplib-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        inputs = build_inputs(work / "inputs")
        rows = []
        for j, job in enumerate(jobs(inputs)):
            if args.jobs and not any(job.name.startswith(p) for p in args.jobs):
                continue
            ref, seconds, writes = reference(job, work / f"job{j}")
            print(f"\n== {job.name}: uninterrupted {seconds:.1f} s, {len(writes)} file writes", flush=True)
            outcomes, tries = [], 0
            while sum(o.killed for o in outcomes) < args.kills and tries < 3 * args.kills:
                tries += 1
                o = trial(job, work / f"job{j}" / f"kill{tries}", ref, seconds, writes, rng)
                outcomes.append(o)
                verdict = (
                    ("not killed: " + (o.error or "finished first"))
                    if not o.killed
                    else (
                        f"FAILED to complete ({o.error})"
                        if not o.survived
                        else (f"identical after {o.reruns} rerun(s)" if not o.diffs else f"DIFFERENT: {o.diffs}")
                    )
                )
                print(f"  {o.how}: {verdict}", flush=True)
            killed = [o for o in outcomes if o.killed]
            content = sorted({f for o in killed for f in o.content_only})
            rows.append(
                (
                    job.name,
                    len(killed),
                    sum(o.survived for o in killed),
                    sum(o.survived and not o.diffs for o in killed),
                    content,
                )
            )
        print(f"\n{'job':<55} {'kills':>5} {'survived':>8} {'identical':>9}")
        for name, n, survived, identical, _ in rows:
            print(f"{name:<55} {n:>5} {survived:>8} {identical:>9}")
        print(
            "\nidentical = every file byte-identical to the uninterrupted run's, except these, identical in "
            "content without their timing fields:"
        )
        for name, *_, content in rows:
            print(f"  {name}: {', '.join(content) if content else '(none: all byte-identical)'}")
        print(f"[{time.perf_counter() - t0:.0f} s]")
        return 0 if all(n == identical == args.kills for _, n, _, identical, _ in rows) else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
