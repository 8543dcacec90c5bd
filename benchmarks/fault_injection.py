"""Make each long job's writes fail: kill it with SIGKILL at random points, fill the disk at each kind of
write, make its destination read-only; check the one-line error, then run it again until it completes
and check that the result is the uninterrupted run's.

Jobs (tiny demo-sized inputs, built once in a work folder):

* ``generate_training_dataset`` (5 songs of 6 s, 3 segments each, rooms and noises);
* ``trainer static``: the first run without ``--resume``, every rerun with it;
* ``trainer dynamic_online``: every run (the first too) with ``--resume``, ``--workers 2`` (kills land
  while DataLoader workers run), reruns giving ``-o`` alternately as a relative and an absolute path;
* ``generate_fingerprints`` (10 songs of 8 s, a freshly initialised small model);
* ``create_faiss_indexes`` over a catalogue made once;
* ``calibrate_threshold`` of that catalogue and index (two negatives, cheap settings);
* ``fplib db add`` (two songs), ``remove`` (two songs), ``compact`` and ``merge`` (a two-song shard), each on
  a fresh copy of that catalogue and index.

Kills: each is a fresh process killed at a random point, chosen with ``--seed``: half of the kills at a
random write (the k-th write of the uninterrupted run, k uniform, killed just before, in the middle of,
or just after it, through :mod:`tests.faults`; a write is a file written, a line appended to a log, rows
appended to a catalogue's vector store or a transaction of its database), half at a random time (uniform
over the uninterrupted run's duration). The job is then run again (same command; ``--resume`` for the
trainer) until it exits 0 (at most 3 times).

Full disk: for each kind of write of the uninterrupted run (its file name with digits left out:
``*.npy`` pairs, ``progress.jsonl``, ``best.pt``, ``catalogue.sqlite``...; ``--full_disks`` of them, chosen with
``--seed``), a run whose write of that kind (a random one of them) fails with ENOSPC (:mod:`tests.faults`;
for ``catalogue.sqlite``, SQLite's own "database or disk is full"). It must exit 1 with the one line
``error: FILE: no space left on device (errno ENOSPC) while writing it; free some space, then ...`` and no
traceback; ``fplib db add`` and ``remove``, all or nothing, must have left the catalogue and index as they
were; then the job is run again as after a kill.

Read-only: the job's destination (its working folder, or the catalogue or index folder it changes, or
the catalogue's database alone) bind-mounted read-only in a mount namespace (``unshare -Urm``; skipped
where that is not available): it must exit 2 with ``error: PATH: cannot be written: read-only file system
(errno EROFS); nothing was done``, found before its work (its time is shown beside the uninterrupted run's).

After a rerun the files are compared with those of an uninterrupted run: byte for byte, except where a
file embeds timing (checkpoints and ``metrics.jsonl`` hold each epoch's duration and throughput;
``catalogue.sqlite`` holds the time each song was added, and SQLite's pages differ anyway): those are
compared without the timing fields (:func:`tests.faults.compare_trees`). ``fplib db add``, ``remove`` and
``compact`` are compared by content (:func:`db_content`): an addition that was undone leaves its vector ids
unused (ids are never reused), and a compaction killed after it switched stores is done again into the
next store file; so the songs' names, audio checksums and fingerprints, the songs the index finds and the
number of store files must be the same, not the ids or the store's name. Leftover temporary files count
as differences. Every run
uses one thread (OMP_NUM_THREADS=1): float results can depend on the thread count.

    .venv/bin/python benchmarks/fault_injection.py [--kills 5] [--full_disks N] [--seed 0] [--jobs db ...] [--quick]

prints one line per trial, then a table per job: kills tried, survived (the rerun completed), identical;
full disks tried, one clear line, identical after the rerun; read-only trials, refused clearly. It takes
about 7 minutes on 2 cores with the defaults (each run pays Python's and torch's start-up). ``--quick``:
one kill, one full disk and one read-only trial per job (about 2 minutes); its table is not comparable
with a full run's.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import re
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
    setup: dict[str, Path] = field(default_factory=dict)  # copied into the working folder before the first run
    read_only: list[str] = field(default_factory=lambda: ["."])  # what a read-only trial mounts (each, in turn)
    all_or_nothing: bool = False  # a failed run leaves the output as it was (db add, db remove)
    by_content: bool = False  # compared by db_content (an undone addition leaves ids unused; a compaction redone)

    def command(self, attempt: int, cwd: Path) -> list[str]:
        """The command of run ``attempt`` (0: the first) in ``cwd``; {cwd} is replaced by the folder."""
        argv = self.first if attempt == 0 or not self.rerun else self.rerun[(attempt - 1) % len(self.rerun)]
        return [a.replace("{cwd}", str(cwd)) for a in argv]


@dataclass
class Outcome:
    how: str
    killed: bool  # the fault struck (killed, or the write failed)
    survived: bool = False
    reruns: int = 0
    diffs: list[str] = field(default_factory=list)
    content_only: list[str] = field(default_factory=list)
    error: str = ""
    clear: bool = True  # the failed run's error was the one line expected (full disk, read-only)
    seconds: float = 0.0


FULL_DISK = re.compile(
    r"^error: .+: no space left on device \(errno ENOSPC\) while writing it; free some space, then .+$"
)
READ_ONLY = re.compile(r"^error: .+: cannot be written: read-only file system \(errno EROFS\); nothing was done$")


def _last_line(err: str) -> str:
    return err.strip().splitlines()[-1] if err.strip() else ""


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


def _quote(s) -> str:
    return "'" + str(s).replace("'", "'\\''") + "'"


def _run_read_only(argv: list[str], cwd: Path, path: str) -> tuple[int, float, str] | None:
    """The job with ``path`` (relative to ``cwd``: a folder or a file) bind-mounted read-only onto itself in a
    new user and mount namespace (where even root gets EROFS); None where that cannot be done here."""
    target = _quote((cwd / path).resolve())
    script = (
        f"mount --bind {target} {target} && mount -o remount,ro,bind {target} {target} || exit 97\n"
        f"cd {_quote(cwd)} || exit 97\n"  # into the read-only mount, if it is the working folder
        'exec "$@"'
    )
    t0 = time.perf_counter()
    p = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script, "sh", sys.executable, "-m", "tests.faults", *argv],
        cwd=cwd,
        env={**ENV, "FPLIB_FAULT": ""},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if p.returncode == 97 or (p.returncode and "unshare" in p.stderr and "Operation not permitted" in p.stderr):
        return None
    return p.returncode, time.perf_counter() - t0, p.stderr


def build_inputs(work: Path) -> dict[str, Path]:
    """Songs, rooms, noises, a static dataset, a model checkpoint, a catalogue and its index, songs to add, a
    shard to merge and negatives to calibrate with, once."""
    import torch

    from fplib import audio
    from fplib.checkpoints import save_checkpoint
    from fplib.features import FrontEnd
    from fplib.models.registry import build_model

    d = make_folders(work / "in", n_songs=5, seconds=6.0)
    songs2 = work / "in" / "songs2"
    for i in range(10):
        audio.write(songs2 / f"s{i:02d}.wav", music_like(8.0, 8000, seed=700 + i), 8000)
    songs3, negatives = work / "in" / "songs3", work / "in" / "negatives"
    for i in range(2):
        audio.write(songs3 / f"new{i}.wav", music_like(8.0, 8000, seed=800 + i), 8000)
        audio.write(negatives / f"neg{i}.wav", music_like(8.0, 8000, seed=900 + i), 8000)
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
    for argv in (
        ["generate_fingerprints", "-i", str(songs2), "-o", "cat", "--model", str(ckpt), "--no_progress"],
        ["generate_fingerprints", "-i", str(songs3), "-o", "shard", "--model", str(ckpt), "--no_progress"],
        ["create_faiss_indexes", "-i", "cat", "-n", "songs", "-o", "index"],
    ):
        rc2, _, err2 = _run(argv, made)
        rc, err = rc or rc2, err + err2
    if rc:
        raise SystemExit(f"could not build the inputs:\n{err}")
    return {
        **d,
        "songs2": songs2,
        "songs3": songs3,
        "negatives": negatives,
        "model": ckpt,
        "pairs": made / "data" / "Dataset_5",
        "catalogue": made / "cat",
        "index": made / "index",
        "shard": made / "shard",
    }


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
    db = {"db/cat": inp["catalogue"], "db/idx": inp["index"]}  # a fresh copy for each run
    where = ["--catalogue", "db/cat"]
    index = ["--index", "db/idx/songs.index"]
    calibrate = [
        "calibrate_threshold",
        *where,
        *index,
        "--model",
        str(inp["model"]),
        "--negatives",
        str(inp["negatives"]),
        "--rooms",
        str(inp["rir"]),
        "--noises",
        str(inp["noise"]),
        *["--lengths", "1", "2", "--snrs", "10", "--queries", "2", "--noise_only", "1", "--phases", "1"],
        *["--accept_miss", "--no_progress"],
    ]
    model = ["--model", str(inp["model"])]
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
        Job("calibrate_threshold", calibrate, "db/idx", setup=db, read_only=["db/idx"]),
        Job(
            "db add",
            ["db", "add", *where, *index, str(inp["songs3"]), *model, "--no_progress"],
            "db",
            setup=db,
            read_only=["db/cat", "db/cat/catalogue.sqlite", "db/idx"],
            all_or_nothing=True,
            by_content=True,
        ),
        Job(
            "db remove",
            ["db", "remove", *where, *index, "s01", "s04"],
            "db",
            setup=db,
            read_only=["db/cat", "db/cat/catalogue.sqlite", "db/idx"],
            all_or_nothing=True,
            by_content=True,
        ),
        Job(
            "db compact",
            ["db", "compact", *where, "--no_progress"],
            "db",
            setup=db,
            read_only=["db/cat"],
            by_content=True,
        ),
        Job(
            "db merge",
            ["db", "merge", *where, str(inp["shard"]), "--no_progress"],
            "db/cat",
            setup=db,
            read_only=["db/cat", "db/cat/catalogue.sqlite"],
        ),
    ]


# Every run of a job works in the same folder (then renamed): absolute paths that a job records (the trainer
# records its options, -o included, as absolute paths) are then the same in every run.
HERE = "here"


def _setup(job: Job, cwd: Path) -> None:
    for rel, src in job.setup.items():
        dest = cwd / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copy2(src, dest)


def reference(job: Job, work: Path) -> tuple[Path, float, list[str]]:
    """An uninterrupted run: its folder, its duration and the names of the files it wrote, in order."""
    cwd = work / HERE
    cwd.mkdir(parents=True)
    _setup(job, cwd)
    log = work / "writes.txt"
    rc, seconds, err = _run(job.command(0, cwd), cwd, "count:*", log)
    if rc != 0:
        raise SystemExit(f"{job.name}: the uninterrupted run failed (exit {rc}):\n{err}")
    writes = log.read_text().splitlines() if log.exists() else []
    cwd.rename(work / "ref")
    return work / "ref" / job.output, seconds, writes


def trial(job: Job, work: Path, run) -> Outcome:
    """``run(cwd)`` in a fresh working folder (set up as the job needs), renamed ``work`` afterwards."""
    cwd = work.parent / HERE
    cwd.mkdir(parents=True)
    try:
        _setup(job, cwd)
        return run(cwd)
    finally:
        cwd.rename(work)


def _kill_trial(job: Job, cwd: Path, ref: Path, seconds: float, writes: list[str], rng: random.Random) -> Outcome:
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
    _rerun(job, cwd, ref, out, by_content=job.by_content)
    return out


def _rerun(job: Job, cwd: Path, ref: Path, out: Outcome, by_content: bool) -> None:
    """Run the job again until it exits 0 (at most 3 times), then compare its output with ``ref``. A rerun
    refused because the killed run had in fact finished (``fplib db add`` of songs already added) counts
    as completed if the output is the uninterrupted run's."""
    for attempt in range(1, 4):
        rc, _, err = _run(job.command(attempt, cwd), cwd)
        out.reruns = attempt
        if rc == 0:
            out.survived = True
            break
        out.error = f"rerun {attempt} exit {rc}: {_last_line(err)}"
        if not _differences(job, cwd, ref, by_content)[0]:
            out.survived = True  # already complete: the rerun said there was nothing left to do
            out.how += f" (finished before the kill; the rerun refused: {_last_line(err)})"
            break
    if out.survived:
        diffs, out.content_only = _differences(job, cwd, ref, by_content)
        out.diffs += diffs


def _differences(job: Job, cwd: Path, ref: Path, by_content: bool) -> tuple[list[str], list[str]]:
    if by_content:
        got, want = db_content(cwd / job.output), db_content(ref)
        return [f"{k}: different content" for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)], []
    return faults.compare_trees(ref, cwd / job.output)


def _full_disk_trial(job: Job, cwd: Path, ref: Path, k: int, writes: list[str]) -> Outcome:
    """The job's ``k``-th write fails on a full disk: one clear line, exit 1, nothing lost (all or nothing for
    ``fplib db add`` and ``remove``); then the job is run again."""
    out = Outcome(f"full disk at write {k}/{len(writes)} ({writes[k - 1]})", True)
    before = db_content(cwd / job.output) if job.all_or_nothing else None
    rc, _, err = _run(job.command(0, cwd), cwd, f"enospc:*:{k}")
    out.clear = rc == 1 and bool(FULL_DISK.match(_last_line(err))) and "Traceback" not in err
    if not out.clear:
        out.error = f"exit {rc}: {_last_line(err)}"
    if before is not None:
        after = db_content(cwd / job.output)
        out.diffs += [
            f"{k}: changed by the failed run" for k in sorted(set(after) | set(before)) if after.get(k) != before.get(k)
        ]
    _rerun(job, cwd, ref, out, by_content=job.by_content)
    return out


def _read_only_trial(job: Job, cwd: Path, path: str, seconds: float) -> Outcome | None:
    """The job with ``path`` read-only: exit 2 with one clear line (None where no mount namespace can be made)."""
    got = _run_read_only(job.command(0, cwd), cwd, path)
    if got is None:
        return None
    rc, took, err = got
    out = Outcome(f"read-only {path}: {took:.1f} s (uninterrupted run {seconds:.1f} s)", True, seconds=took)
    out.clear = rc == 2 and bool(READ_ONLY.match(_last_line(err))) and "Traceback" not in err
    out.survived = out.clear
    if not out.clear:
        out.error = f"exit {rc}: {_last_line(err)}"
    return out


def db_content(folder: Path) -> dict[str, object]:
    """What a catalogue (``folder/cat``) and its index (``folder/idx/songs.index``) hold, without vector ids: each
    song's name, path, duration, audio checksum and fingerprints (SHA-256 of their bytes), and the songs the
    index finds (the names of its mapping, after loading it checked against the catalogue)."""
    import hashlib

    from fplib import index, storage
    from fplib.catalogue import Catalogue

    content: dict[str, object] = {}
    try:
        with Catalogue(folder / "cat") as cat:
            for s in cat.songs():
                digest = hashlib.sha256(cat.vectors(s).tobytes()).hexdigest()
                content[f"song {s.name}"] = (s.path, round(s.duration, 6), s.n_vectors, s.checksum, digest)
            idx = folder / "idx" / "songs.index"
            if idx.exists():
                try:
                    faiss_index = index.load(idx, cat)
                    names = sorted(storage.read_json(index.mapping_path(idx)).values())
                    content["index"] = (int(faiss_index.ntotal), names)
                except Exception as e:  # noqa: BLE001 (a mismatch is what is measured)
                    content["index"] = f"does not load: {e}"
    except Exception as e:  # noqa: BLE001
        content["catalogue"] = f"does not open: {e}"
    content["store files"] = len(list((folder / "cat").glob("vectors.*.bin")))  # the replaced ones deleted
    leftovers = sorted(p.name for p in folder.rglob(".*") if ".tmp" in p.name)
    if leftovers:
        content["temporary files"] = leftovers
    return content


def _kinds(writes: list[str]) -> dict[str, list[int]]:
    """The writes (1-based) of each kind: the file name with its digits left out."""
    kinds: dict[str, list[int]] = {}
    for k, name in enumerate(writes, 1):
        kinds.setdefault(re.sub(r"\d+", "#", name), []).append(k)
    return kinds


def _verdict(o: Outcome) -> str:
    if not o.killed:
        return "not killed: " + (o.error or "finished first")
    if not o.clear:
        return f"UNCLEAR ({o.error})"
    if not o.survived:
        return f"FAILED to complete ({o.error})"
    if o.reruns == 0:
        return "refused clearly"
    return f"identical after {o.reruns} rerun(s)" if not o.diffs else f"DIFFERENT: {o.diffs}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=5, help="kills per job (default: 5)")
    ap.add_argument(
        "--full_disks", type=int, default=None, help="kinds of write made to fail per job (default: every kind)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points and full disks (default: 0)")
    ap.add_argument(
        "--jobs",
        nargs="*",
        default=None,
        help="only the jobs whose name starts with one of these (generate_training_dataset, trainer, "
        "generate_fingerprints, create_faiss_indexes, calibrate_threshold, db)",
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the runs here (default: a temporary folder, removed at the end)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="one kill, one full disk and one read-only trial per job (about 2 minutes)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        print(
            "fault_injection QUICK MODE: one kill, one full disk and one read-only trial per job; the table is not "
            "comparable with a full run's",
            flush=True,
        )
        args.kills, args.full_disks = 1, 1
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
            print(f"\n== {job.name}: uninterrupted {seconds:.1f} s, {len(writes)} writes", flush=True)
            outcomes, tries = [], 0
            while sum(o.killed for o in outcomes) < args.kills and tries < 3 * args.kills:
                tries += 1
                run = functools.partial(_kill_trial, job, ref=ref, seconds=seconds, writes=writes, rng=rng)
                o = trial(job, work / f"job{j}" / f"kill{tries}", run)
                outcomes.append(o)
                print(f"  {o.how}: {_verdict(o)}", flush=True)
            kinds = _kinds(writes)
            chosen = sorted(rng.sample(sorted(kinds), min(len(kinds), args.full_disks or len(kinds))))
            full = []
            for n, kind in enumerate(chosen):
                k = rng.choice(kinds[kind])
                run = functools.partial(_full_disk_trial, job, ref=ref, k=k, writes=writes)
                o = trial(job, work / f"job{j}" / f"full{n}", run)
                full.append(o)
                print(f"  {o.how}: {_verdict(o)}", flush=True)
            read_only = []
            for n, path in enumerate(job.read_only[:1] if args.quick else job.read_only):
                run = functools.partial(_read_only_trial, job, path=path, seconds=seconds)
                o = trial(job, work / f"job{j}" / f"ro{n}", run)
                if o is None:
                    print(f"  read-only {path}: skipped (no mount namespace here: unshare -Urm fails)", flush=True)
                    continue
                read_only.append(o)
                print(f"  {o.how}: {_verdict(o)}", flush=True)
            killed = [o for o in outcomes if o.killed]
            content = sorted({f for o in killed + full for f in o.content_only})
            rows.append(
                (
                    job.name,
                    len(killed),
                    sum(o.survived for o in killed),
                    sum(o.survived and not o.diffs for o in killed),
                    len(full),
                    sum(o.clear for o in full),
                    sum(o.survived and not o.diffs for o in full),
                    len(read_only),
                    sum(o.clear for o in read_only),
                    content,
                )
            )
        print(
            f"\n{'job':<52} {'kills':>5} {'survived':>8} {'identical':>9}   {'full disks':>10} {'clear':>5} "
            f"{'identical':>9}   {'read-only':>9} {'clear':>5}"
        )
        for name, n, survived, identical, nf, clear, same, nr, ro_clear, _ in rows:
            kills = f"{n:>5} {survived:>8} {identical:>9}"
            print(f"{name:<52} {kills}   {nf:>10} {clear:>5} {same:>9}   {nr:>9} {ro_clear:>5}")
        print(
            "\nidentical = every file byte-identical to the uninterrupted run's, except these, identical in "
            "content without their timing fields (fplib db add, remove and compact: by content, db_content):"
        )
        for name, *_, content in rows:
            print(f"  {name}: {', '.join(content) if content else '(none: all byte-identical)'}")
        print(f"[{time.perf_counter() - t0:.0f} s]")
        ok = all(
            n == identical == args.kills and nf == clear == same and nr == ro_clear
            for _, n, _, identical, nf, clear, same, nr, ro_clear, _ in rows
        )
        return 0 if ok else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
