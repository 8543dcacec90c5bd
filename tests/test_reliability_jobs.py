"""The long jobs (generate_training_dataset, trainer) killed, interrupted, out of disk or fed unusable files.

Jobs run as real processes (forked from this one, so torch is not imported again; SIGKILL is real)
with a fault injected at a chosen write (:mod:`tests.faults`); each test checks the exact error the
user sees or the exact state a rerun recovers: the files of an uninterrupted run (made by a child
process too: children compute on one thread, and float results can depend on the thread count).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fplib import cli, storage
from fplib.checkpoints import load_checkpoint
from fplib.generate import GenerateConfig, generate_dataset
from tests import faults
from tests.helpers import make_folders, music_like, write

ROOT = Path(__file__).resolve().parents[1]
KILLED = -signal.SIGKILL


@dataclass
class Job:
    rc: int
    out: str
    err: str


def _child(argv: list[str], fault: str | None, cwd: Path, out: Path, err: Path) -> None:
    import torch

    torch.set_num_threads(1)  # OpenMP's thread pool does not survive a fork (DataLoader workers do the same)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", closefd=False)  # this process ends with os._exit below
    sys.stderr = open(2, "w", closefd=False)
    faults.install(fault or "")
    try:
        rc = cli.main(argv)
    except BaseException:
        import traceback

        traceback.print_exc()
        rc = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def run_job(argv: list[str], cwd: Path, fault: str | None = None, timeout: float = 300) -> Job:
    """``fplib ARGV`` in a real child process (forked), with ``fault`` (see tests.faults) injected."""
    cwd.mkdir(parents=True, exist_ok=True)
    out, err = cwd / f".out.{time.monotonic_ns()}", cwd / f".err.{time.monotonic_ns()}"
    p = mp.get_context("fork").Process(target=_child, args=(argv, fault, cwd, out, err))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail(f"{argv} did not finish in {timeout} s")
    job = Job(p.exitcode, out.read_text(), err.read_text())
    out.unlink()
    err.unlink()
    return job


def _temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*") if storage.is_temp_file(p))


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


# -- generate_training_dataset --------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    d = make_folders(root, n_songs=5, seconds=4.0)
    job = run_job(_generate_argv(d), root / "ref")
    assert job.rc == 0, job.err
    return {**d, "ref": root / "ref" / "out" / "Dataset_5"}


def _generate_argv(corpus) -> list[str]:
    return [
        "generate_training_dataset",
        "-i",
        str(corpus["songs"]),
        "-n",
        "2",
        "-ir",
        str(corpus["rir"]),
        "-bn",
        str(corpus["noise"]),
        "-o",
        "out",
    ]


def test_torn_progress_line_is_ignored_and_the_song_redone(corpus, tmp_path):
    # 4 training songs then 1 validation song: the 5th line (the only validation song) is cut by the kill
    job = run_job(_generate_argv(corpus), tmp_path, fault="kill-torn:progress.jsonl:5")
    assert job.rc == KILLED
    log = tmp_path / "out" / "Dataset_5" / "progress.jsonl"
    assert not log.read_bytes().endswith(b"\n")
    again = run_job(_generate_argv(corpus), tmp_path)
    assert again.rc == 0, again.err
    assert "Dataset_5: 8 training and 2 validation pairs" in again.out
    assert _tree_bytes(tmp_path / "out" / "Dataset_5") == _tree_bytes(corpus["ref"])  # the log included


@pytest.mark.slow
def test_a_log_glued_by_an_earlier_version_is_repaired(corpus, tmp_path):
    """Earlier versions appended after a torn line: the glued line hid every record after it, so each
    rerun 'completed' with songs missing (0 validation pairs). Now it is redone and completed."""
    out = tmp_path / "out"
    args = (corpus["songs"], out, corpus["rir"], corpus["noise"])
    generate_dataset(*args, cfg=GenerateConfig(number_segments=2), progress=False, max_songs=2)
    log = out / "Dataset_5" / "progress.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n" + lines[1][:20] + lines[1] + "\n")  # what the old append left
    r = generate_dataset(*args, cfg=GenerateConfig(number_segments=2), progress=False)
    assert r.complete and (r.n_train, r.n_val) == (8, 2)
    assert _tree_bytes(out / "Dataset_5").keys() == _tree_bytes(corpus["ref"]).keys()
    for name in ("train_data.json", "val_data.json", "generation.json"):
        assert (out / "Dataset_5" / name).read_bytes() == (corpus["ref"] / name).read_bytes()


def test_ctrl_c_then_rerun(corpus, tmp_path):
    job = run_job(_generate_argv(corpus), tmp_path, fault="interrupt:*.npy:3")
    assert job.rc == 130 and job.err.strip().endswith("interrupted; rerun the same command to resume"), job.err
    assert "Traceback" not in job.err and not _temps(tmp_path)
    again = run_job(_generate_argv(corpus), tmp_path)
    assert again.rc == 0, again.err
    assert _tree_bytes(tmp_path / "out" / "Dataset_5") == _tree_bytes(corpus["ref"])


def test_full_disk_names_the_file_and_loses_nothing(corpus, tmp_path):
    job = run_job(_generate_argv(corpus), tmp_path, fault="enospc:*.npy:4")
    assert job.rc == 1, job.err
    lines = job.err[job.err.index("error: ") :].splitlines()  # after the progress bar
    assert len(lines) == 1 and lines[0].startswith("error: out/Dataset_5/train_set/"), job.err
    assert lines[0].endswith(
        ".npy: no space left on device (errno ENOSPC) while writing it; free some space, then "
        "rerun the same command to resume (nothing already written was lost)"
    )
    failed = tmp_path / lines[0].removeprefix("error: ").split(": no space")[0]
    assert not failed.exists() and not _temps(tmp_path)
    done = sorted(p.name for p in (tmp_path / "out" / "Dataset_5" / "train_set").iterdir())
    assert len(done) == 3  # the three pairs written before the full disk are there, whole
    for name in done:
        written = tmp_path / "out" / "Dataset_5" / "train_set" / name
        assert written.read_bytes() == (corpus["ref"] / "train_set" / name).read_bytes()
    again = run_job(_generate_argv(corpus), tmp_path)
    assert again.rc == 0, again.err
    assert _tree_bytes(tmp_path / "out" / "Dataset_5") == _tree_bytes(corpus["ref"])


def test_a_folder_of_unusable_songs_fails_with_the_list(tmp_path, capsys):
    songs = tmp_path / "songs"
    songs.mkdir()
    (songs / "a.mp3").write_text("not audio")
    (songs / "b.wav").write_bytes(b"")
    write(songs / "c.wav", np.zeros(8000 * 3, np.float32), 8000)
    assert cli.generate_training_dataset_main(["-i", str(songs), "-o", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err[captured.err.index("error: ") :].splitlines()  # after the progress bar
    assert err[0] == (
        f"error: no usable songs: 3 file(s), all skipped, as {tmp_path}/out/Dataset_3/generation.json records:"
    )
    assert sorted(err[1:]) == [
        f"  {songs}/a.mp3: not a decodable audio file (unrecognised format or corrupt header)",
        f"  {songs}/b.wav: empty file (0 bytes)",
        f"  {songs}/c.wav: silent: no second louder than -50 dBFS RMS",
    ]
    # run again: the same answer, not a success
    assert cli.generate_training_dataset_main(["-i", str(songs), "-o", str(tmp_path / "out")]) == 1
    assert "no usable songs: 3 file(s)" in capsys.readouterr().err


# -- trainer ------------------------------------------------------------------------------------

TINY = [
    "-ep",
    "2",
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
    "-o",
    "run",
]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """An uninterrupted run (in a child process, like the runs it is compared with), made in the folder
    ``here`` and moved to ``ref``: runs compared with it work in ``here`` too, since the trainer records
    its options (-o included) as absolute paths."""
    root = tmp_path_factory.mktemp("trained")
    argv = ["trainer", *TINY, "static", "-tp", str(corpus["ref"] / "train_set"), "-vp", str(corpus["ref"] / "val_set")]
    job = run_job(argv, root / "here")
    assert job.rc == 0, job.err
    (root / "here").rename(root / "ref")
    return {"argv": argv, "ref": root / "ref" / "run", "here": root / "here"}


@pytest.mark.slow
def test_trainer_killed_or_out_of_disk_at_each_write_then_resumed(trained):
    argv, resume, tmp_path = trained["argv"], [*trained["argv"], "--resume"], trained["here"]
    run = tmp_path / "run" / "tiny"
    # 1. the disk fills while best.pt of epoch 1 is written (last.pt, which counts the epoch done, is there)
    job = run_job(argv, tmp_path, fault="enospc:best.pt")
    assert job.rc == 1
    assert job.err.strip().splitlines()[-1] == (
        f"error: {Path('run/tiny/best.pt')}: no space left on device (errno ENOSPC) while writing it; free some "
        f"space, then continue with the same command plus --resume (nothing already written was lost)"
    )
    assert load_checkpoint(run / "last.pt")["epoch"] == 0
    assert not (run / "best.pt").exists() and not (run / "metrics.jsonl").exists() and not _temps(tmp_path)
    # 2. resumed, and killed half-way through writing best.pt (what the resume finishes first)
    job = run_job(resume, tmp_path, fault="kill-torn:best.pt")
    assert job.rc == KILLED
    [temp] = _temps(tmp_path)  # the killed writer's half file: its pid is in the name, and it is dead
    assert temp.parent == run and temp.name.startswith(".best.") and storage.is_stale_temp(temp)
    # 3. resumed, and killed just after last.pt of epoch 2 (before its metrics line)
    job = run_job(resume, tmp_path, fault="kill-after:last.pt")
    assert job.rc == KILLED and not temp.exists()  # the stale temporary file is gone
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and len(storage.read_jsonl(run / "metrics.jsonl")) == 1
    # 4. resumed (nothing left to train), and killed while copying best.pt to run/tiny.pt
    job = run_job(resume, tmp_path, fault="kill-torn:tiny.pt")
    assert job.rc == KILLED and not (tmp_path / "run" / "tiny.pt").exists()
    # 5. resumed to the end
    job = run_job(resume, tmp_path)
    assert job.rc == 0, job.err
    diffs, content_only = faults.compare_trees(trained["ref"], tmp_path / "run")
    assert diffs == []
    assert set(content_only) <= {"tiny.pt", "tiny/best.pt", "tiny/last.pt", "tiny/metrics.jsonl"}
    ref_log = [faults._without_timing(r) for r in storage.read_jsonl(trained["ref"] / "tiny" / "metrics.jsonl")]
    assert [faults._without_timing(r) for r in storage.read_jsonl(run / "metrics.jsonl")] == ref_log
    assert [r["epoch"] for r in ref_log] == [0, 1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) to mount a small tmpfs")
def test_trainer_on_a_real_full_disk(trained, tmp_path):
    """A real full file system (a tmpfs mounted in a user namespace) where last.pt fits and best.pt does not:
    torch's own error ('unexpected pos') becomes the clear one, and the resume completes the run."""
    size = (trained["ref"] / "tiny" / "last.pt").stat().st_size
    if subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("user namespaces are not available here")
    mnt, saved = tmp_path / "mnt", tmp_path / "saved"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "fplib.cli", *trained["argv"][:-5], "-o", str(mnt), *trained["argv"][-5:]]
    script = (
        f"mount -t tmpfs -o size={size + size // 2} tmpfs {mnt} || exit 3\n"
        f"{' '.join(map(_quote, cmd))} 2>{tmp_path}/err1; echo $? > {tmp_path}/rc1\n"
        f"cp -a {mnt} {saved}\n"
        f"mount -o remount,size={6 * size} {mnt} || exit 4\n"
        f"{' '.join(map(_quote, [*cmd, '--resume']))} 2>{tmp_path}/err2; echo $? > {tmp_path}/rc2\n"
        f"cp -a {mnt}/. {saved}2\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }  # as the reference run (float results can depend on the thread count)
    p = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    if p.returncode in (3, 4):
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr}")
    err1 = (tmp_path / "err1").read_text()
    assert (tmp_path / "rc1").read_text().strip() == "1", err1
    assert (
        err1.strip()
        .splitlines()[-1]
        .startswith(
            f"error: {mnt}/tiny/best.pt: no space left on device (errno ENOSPC) while writing it; free some space"
        )
    ), err1
    assert "unexpected pos" not in err1 and "Traceback" not in err1
    assert sorted(p.name for p in (saved / "tiny").iterdir()) == ["config.json", "last.pt"]  # no half file
    assert load_checkpoint(saved / "tiny" / "last.pt")["epoch"] == 0
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    done = saved.with_name("saved2")
    for name in ("tiny.pt", "tiny/best.pt", "tiny/last.pt"):
        a, b = load_checkpoint(trained["ref"] / name), load_checkpoint(done / name)
        assert a["epoch"] == b["epoch"] and faults._same(a["model"], b["model"]), name
    assert [faults._without_timing(r) for r in storage.read_jsonl(done / "tiny" / "metrics.jsonl")] == [
        faults._without_timing(r) for r in storage.read_jsonl(trained["ref"] / "tiny" / "metrics.jsonl")
    ]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


@pytest.mark.slow
def test_songs_with_nan_samples_are_skipped_in_dataloader_workers(tmp_path, capsys):
    d = make_folders(tmp_path, n_songs=6, seconds=3.0)
    train, val = tmp_path / "train", tmp_path / "val"
    for i, f in enumerate(sorted(d["songs"].iterdir())):
        (train if i < 4 else val).mkdir(exist_ok=True)
        shutil.copy(f, (train if i < 4 else val) / f.name)
    bad = np.full(8000 * 3, np.nan, np.float32)
    # a readable header and a first second of music (what the dataset's check for silent songs decodes when it
    # is built): only decoding a training segment, all of which reach past that second, finds the NaNs
    bad[:8000] = music_like(1.0, 8000, seed=5)
    write(train / "nan.wav", bad, 8000, subtype="FLOAT")
    write(val / "nan_val.wav", bad, 8000, subtype="FLOAT")
    rc = cli.trainer_main(
        [
            "-ep",
            "1",
            "-bs",
            "4",
            "--arch",
            "nafp_small",
            "--model_settings",
            '{"width": 0.125}',
            "--workers",
            "2",
            "--items_per_song",
            "2",
            "--val_items_per_song",
            "2",
            "-o",
            str(tmp_path / "out"),
            "-m",
            "m",
            "dynamic",
            "-tp",
            str(train),
            "-vp",
            str(val),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "Traceback" not in err and "DataLoader worker" not in err
    for f in (train / "nan.wav", val / "nan_val.wav"):
        assert f"skipped {f}: contains NaN or infinite samples (its segments are left out; training goes on)" in err
        assert f"\n  {f}: contains NaN or infinite samples" in err  # the report at the end
    assert "2 song(s) failed to decode during training" in err
    ck = load_checkpoint(tmp_path / "out" / "m.pt")
    assert ck["metrics"]["val_pairs"] == 4  # the 2 good validation songs x 2 segments


def test_trainer_with_no_usable_songs_lists_them(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_text("nope")
    (bad / "y.flac").write_bytes(b"")
    d = make_folders(tmp_path, n_songs=2, seconds=3.0)
    rc = cli.trainer_main(
        [
            "-ep",
            "1",
            "-bs",
            "2",
            "--workers",
            "0",
            "-o",
            str(tmp_path / "out"),
            "dynamic",
            "-tp",
            str(bad),
            "-vp",
            str(d["songs"]),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert err.splitlines()[0] == "error: no usable training songs: 2 file(s), all skipped:"
    assert err.splitlines()[1:3] == [
        f"  {bad}/x.wav: not a decodable audio file (Format not recognised.)",
        f"  {bad}/y.flac: empty file (0 bytes)",
    ]
    assert "skipped-file report" not in err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_resume_with_the_output_folder_given_another_way(tmp_path, monkeypatch, capsys):
    d = make_folders(tmp_path / "in", n_songs=5, seconds=3.0)
    monkeypatch.chdir(tmp_path)
    args = [
        "-ep",
        "1",
        "-bs",
        "4",
        "--arch",
        "nafp_small",
        "--model_settings",
        '{"width": 0.125}',
        "--workers",
        "0",
        "--items_per_song",
        "2",
        "-m",
        "m",
        "dynamic_online",
        "-p",
        "in/songs",
        "-ir",
        str(d["rir"]),
        "-bn",
        str(d["noise"]),
    ]
    assert cli.trainer_main(["-o", "out", *args]) == 0
    capsys.readouterr()
    assert cli.trainer_main(["-o", str(tmp_path / "out"), *args, "--resume", "-p", str(d["songs"])]) == 0, (
        capsys.readouterr().err
    )
    assert "best model" in capsys.readouterr().out


# -- names that would be paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, option",
    [
        (["create_faiss_indexes", "-i", "cat", "-n", "../../x"], "-n"),
        (["create_faiss_indexes", "-i", "cat", "-n", "a/b"], "-n"),
        (["create_faiss_indexes", "-i", "cat", "-n", ".."], "-n"),
        (["trainer", "-m", "../x", "static", "-tp", "a", "-vp", "b"], "-m/--model_name"),
        (["trainer", "static", "-tp", "a", "-vp", "b", "-m", "/tmp/x"], "-m/--model_name"),
    ],
)
def test_a_name_that_is_a_path_is_refused(argv, option, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    value = argv[argv.index(option.split("/")[0]) + 1]
    what = "index name" if argv[0] == "create_faiss_indexes" else "model name"
    assert f"argument {option}: {value!r}: the {what} must be a plain name, not a path" in err
    assert list(tmp_path.parent.glob("x*")) == [] and list(tmp_path.iterdir()) == []


def test_notebook_profile_must_be_a_name(capsys):
    assert cli.main(["notebooks", "--profile", "../params/demo", "--only", "01"]) == 2
    assert "a profile is the plain name of a folder under params/, not a path" in capsys.readouterr().err


# -- temporary files --------------------------------------------------------------------------------

WRITER = """
import sys
from fplib import storage
with storage.atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half of it")
    print(tmp, flush=True)
    sys.stdin.readline()  # writes until told
"""


def test_stale_temporary_files_are_cleaned_but_never_a_live_writers(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "big.pt")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    live = Path(writer.stdout.readline().strip())
    assert live.exists() and f"-{writer.pid}." in live.name
    # writers that cannot be checked from here (another machine; an earlier version, which recorded none):
    # stale only once untouched for a day
    other_host, other_host_old = (tmp_path / f".big.{'0' * 8}-1.{x}.tmp.pt" for x in ("abcdefgh", "hgfedcba"))
    old, fresh = tmp_path / ".big.k2j4h5g6.tmp.pt", tmp_path / ".big.z9y8x7w6.tmp.pt"
    for f in (other_host, other_host_old, old, fresh):
        f.write_bytes(b"x")
    for f in (other_host_old, old):
        os.utime(f, (time.time() - 2 * 86400,) * 2)
    mine = tmp_path / "notes.tmp.txt"
    mine.write_text("the user's")
    cleaner = [
        sys.executable,
        "-c",
        "import sys; from fplib import storage; print(sorted(p.name for p in storage.clean_stale_temps(sys.argv[1])))",
        str(tmp_path),
    ]
    first = subprocess.run(cleaner, capture_output=True, text=True, env=env, check=True).stdout
    assert first.strip() == str(sorted([old.name, other_host_old.name]))  # the live writer's file stays
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    second = subprocess.run(cleaner, capture_output=True, text=True, env=env, check=True).stdout
    assert second.strip() == str([live.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other_host.name, fresh.name, mine.name])


def test_append_jsonl_repairs_a_torn_line_and_rolls_back_a_failed_append(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    storage.append_jsonl(log, {"a": 1})
    with open(log, "ab") as f:
        f.write(b'{"b": ')  # a kill in the middle of the next line
    assert storage.read_jsonl(log) == [{"a": 1}]
    storage.append_jsonl(log, {"c": 3})
    assert log.read_text() == '{"a": 1}\n{"c": 3}\n'

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", full)
    with pytest.raises(storage.DiskFullError, match=r"log.jsonl: no space left on device \(errno ENOSPC\)"):
        storage.append_jsonl(log, {"d": 4})
    monkeypatch.undo()
    assert log.read_text() == '{"a": 1}\n{"c": 3}\n'
