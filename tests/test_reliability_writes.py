"""Writes that fail (issue 29): a read-only or unwritable destination, a full disk while SQLite commits or
between an index's files, a killed compaction or calibration, the negatives' corpus written where it was
not needed, a closed standard output.

A read-only destination is a real one: the test folder bind-mounted read-only (the whole folder, or a
single file such as ``catalogue.sqlite``) in a mount namespace (``unshare -Urm``), where even root gets
EROFS (root ignores file permissions, so chmod cannot stand in for it). A full disk is a real small tmpfs
in such a namespace, filled up to leave room for the vector store's new rows but not for SQLite's
journal. The commands run inside the namespace in one Python process (:data:`DRIVER`), through
``fplib.cli.main`` as the console scripts call it, each with its own captured output.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fplib import audio, calibrate, cli, search, storage
from fplib.catalogue import Catalogue
from fplib.features import FrontEnd
from tests.helpers import make_folders, music_like

ROOT = Path(__file__).resolve().parents[1]
FE = FrontEnd()
TINY = ["-ep", "1", "-bs", "4", "--arch", "nafp_small", "--model_settings", '{"width": 0.125}', "-m", "tiny"]
CHEAP = ["--lengths", "1", "--snrs", "10", "--queries", "1", "--noise_only", "1", "--phases", "1", "--no_progress"]

# Runs fplib commands in this process, one after another; argv[1]: a JSON file {"commands": [[...], ...],
# "fill": {"file": F, "leave": BYTES} (optional)}, argv[2]: where the results go (rc, out, err, and which
# of the long steps each command started: index.build, calibrate.calibrate_recognizer).
DRIVER = r"""
import contextlib, errno, io, json, os, sys, traceback
import torch
torch.set_num_threads(1)
from fplib import calibrate, cli, index

cfg = json.load(open(sys.argv[1]))
fill = cfg.get("fill")
if fill:  # fill the file system, then free "leave" bytes
    fd = os.open(fill["file"], os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    size = os.lseek(fd, 0, os.SEEK_END)
    os.ftruncate(fd, size - fill["leave"])
    os.close(fd)
started = []
def spy(module, name):
    real = getattr(module, name)
    def wrapper(*a, **k):
        started.append(name)
        return real(*a, **k)
    setattr(module, name, wrapper)
spy(index, "build")
spy(calibrate, "calibrate_recognizer")
results = []
for argv in cfg["commands"]:
    started.clear()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except BaseException:
            traceback.print_exc()
            rc = 99
    results.append({"argv": argv, "rc": rc, "out": out.getvalue(), "err": err.getvalue(), "started": list(started)})
json.dump(results, open(sys.argv[2], "w"))
"""


def _env(tmp: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "FPLIB_OUTPUTS": str(tmp / "outputs"),
    }


def _namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode == 0


def _in_namespace(tmp: Path, setup: str, commands: list[list], fill: dict | None = None) -> list[dict]:
    """Run ``setup`` (shell lines: mounts) then :data:`DRIVER` on ``commands`` in a new user and mount
    namespace; the results of each command."""
    if not _namespace_available():
        pytest.skip("needs unshare and user namespaces to mount a read-only folder or a small tmpfs")
    driver, cfg, res = tmp / "driver.py", tmp / "cfg.json", tmp / "results.json"
    driver.write_text(DRIVER)
    cfg.write_text(json.dumps({"commands": [[str(a) for a in c] for c in commands], "fill": fill}))
    script = f"{setup}\nexec {_q(sys.executable)} {_q(driver)} {_q(cfg)} {_q(res)}\n"
    p = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, env=_env(tmp), cwd=ROOT, timeout=600
    )
    if p.returncode == 3:
        pytest.skip(f"cannot mount here: {p.stderr}")
    assert p.returncode == 0, p.stderr
    return json.loads(res.read_text())


def _q(s) -> str:
    return "'" + str(s).replace("'", "'\\''") + "'"


def _read_only(*paths: Path) -> str:
    """Shell lines bind-mounting each path (a folder or a file) read-only onto itself."""
    return "\n".join(
        f"mount --bind {_q(p)} {_q(p)} && mount -o remount,ro,bind {_q(p)} {_q(p)} || exit 3" for p in paths
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Four songs in a catalogue and index made by the shipped model; two more songs; a one-song catalogue
    to merge; negatives, rooms and noises to calibrate with; songs to train on."""
    root = tmp_path_factory.mktemp("writes")
    for i in range(4):
        audio.write(root / "songs" / f"s{i}.wav", music_like(8.0, 8000, seed=i), 8000)
    for i in range(2):
        audio.write(root / "extra" / f"new{i}.wav", music_like(8.0, 8000, seed=11 + i), 8000)
        audio.write(root / "neg" / f"neg{i}.wav", music_like(8.0, 8000, seed=21 + i), 8000)
    audio.write(root / "one" / "new0.wav", music_like(8.0, 8000, seed=11), 8000)
    audio.write(root / "for_shard" / "shard0.wav", music_like(8.0, 8000, seed=31), 8000)
    train = make_folders(root / "train", n_songs=3, seconds=4.0)
    for argv in (
        ["generate_fingerprints", "-i", root / "songs", "-o", root / "cat", "--no_progress"],
        ["generate_fingerprints", "-i", root / "for_shard", "-o", root / "shard", "--no_progress"],
        ["create_faiss_indexes", "-i", root / "cat", "-n", "x", "-o", root / "idx"],
    ):
        assert cli.main([str(a) for a in argv]) == 0
    return {"root": root, **{k: root / k for k in ("songs", "extra", "one", "neg", "cat", "idx", "shard")}, **train}


def _copy(world, dest: Path) -> Path:
    """A copy of the world's catalogue and index under ``dest``."""
    for name in ("cat", "idx"):
        shutil.copytree(world[name], dest / name)
    return dest


def _error_line(r: dict) -> str:
    return r["err"].strip().splitlines()[-1] if r["err"].strip() else ""


# -- check_writable ---------------------------------------------------------------------------------


def test_check_writable_accepts_a_writable_place_and_leaves_nothing_there(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    assert storage.check_writable(tmp_path) == tmp_path
    assert storage.check_writable(tmp_path / "f") == tmp_path / "f"
    assert storage.check_writable(tmp_path / "new" / "deeper", folder=True) == tmp_path / "new" / "deeper"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the probe is gone, nothing was created


def test_check_writable_refuses_what_is_not_a_folder(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(storage.NotWritableError) as e:
        storage.check_writable(tmp_path / "f" / "cat")
    assert str(e.value) == f"{tmp_path / 'f' / 'cat'}: cannot be written: {tmp_path / 'f'} is a file, not a folder"
    with pytest.raises(storage.NotWritableError) as e:
        storage.check_writable(tmp_path / "f", folder=True)
    assert str(e.value) == f"{tmp_path / 'f'}: cannot be written: a file, not a folder"
    assert cli.exit_code(e.value) == 2


@pytest.mark.slow
def test_check_writable_says_permission_denied(tmp_path):
    """A folder and a file without write permission; in a process that gives up root first if the tests run
    as root (root may write anywhere)."""
    folder = Path(tempfile.mkdtemp(prefix="fplib-perm-"))
    try:
        os.chmod(folder, 0o755)
        locked = folder / "locked"
        locked.mkdir()
        (folder / "file").write_bytes(b"x")
        os.chmod(folder / "file", 0o444)
        os.chmod(locked, 0o555)
        code = (
            "import os, sys\nfrom fplib import storage\n"
            "if os.geteuid() == 0:\n    os.setgid(65534)\n    os.setuid(65534)\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        storage.check_writable(p)\n        print('ok')\n"
            "    except storage.NotWritableError as e:\n        print(e)\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, str(locked), str(locked / "new"), str(folder / "file")],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(tmp_path),
        )
        assert r.stdout.splitlines() == [
            f"{locked}: cannot be written: permission denied (errno EACCES)",
            f"{locked / 'new'}: cannot be written: permission denied (errno EACCES)",
            f"{folder / 'file'}: cannot be written: permission denied (errno EACCES)",
        ], r.stdout + r.stderr
    finally:
        os.chmod(folder / "locked", 0o755)
        shutil.rmtree(folder)


@pytest.mark.slow
def test_check_writable_says_read_only_file_system(tmp_path):
    if not _namespace_available():
        pytest.skip("needs unshare and user namespaces to mount a read-only folder")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "f").write_bytes(b"x")
    code = (
        "import sys\nfrom fplib import storage\nfor p in sys.argv[1:]:\n"
        "    try:\n        storage.check_writable(p)\n        print('ok')\n"
        "    except storage.NotWritableError as e:\n        print(e)\n"
    )
    ro = tmp_path / "ro"
    script = f"{_read_only(ro)}\nexec {_q(sys.executable)} -c {_q(code)} {_q(ro)} {_q(ro / 'f')} {_q(ro / 'a' / 'b')}"
    p = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, env=_env(tmp_path))
    if p.returncode == 3:
        pytest.skip(f"cannot mount here: {p.stderr}")
    reason = "read-only file system (errno EROFS)"
    assert p.stdout.splitlines() == [
        f"{ro}: cannot be written: {reason}",
        f"{ro / 'f'}: cannot be written: {reason}",
        f"{ro / 'a' / 'b'}: cannot be written: {reason}",
    ], p.stdout + p.stderr


# -- 1. every command that writes, on a read-only destination -----------------------------------------


@pytest.mark.slow
def test_every_writing_command_refuses_a_read_only_destination_before_its_work(world, tmp_path):
    """Before: tracebacks (OSError EROFS, sqlite3.OperationalError 'attempt to write a readonly database'),
    create_faiss_indexes and calibrate_threshold only after building the index / calibrating."""
    ro, ro2 = _copy(world, tmp_path / "ro"), _copy(world, tmp_path / "ro2")
    shutil.copytree(world["cat"], ro2 / "cat2")
    idx = ro / "idx" / "x.index"
    commands = {
        ro / "cat": [
            ["generate_fingerprints", "-i", world["extra"], "-o", ro / "cat", "--no_progress"],
            ["db", "add", "--catalogue", ro / "cat", "--index", idx, world["extra"], "--no_progress"],
            ["db", "remove", "--catalogue", ro / "cat", "--index", idx, "s1"],
            ["db", "compact", "--catalogue", ro / "cat", "--no_progress"],
            ["db", "merge", "--catalogue", ro / "cat", world["shard"], "--no_progress"],
        ],
        ro / "newcat": [["generate_fingerprints", "-i", world["extra"], "-o", ro / "newcat", "--no_progress"]],
        ro / "idx": [
            ["create_faiss_indexes", "-i", world["cat"], "-n", "y", "-o", ro / "idx"],
            [
                "calibrate_threshold",
                "--catalogue",
                ro / "cat",
                "--index",
                idx,
                "--negatives",
                world["neg"],
                "--rooms",
                world["rir"],
                "--noises",
                world["noise"],
                *CHEAP,
            ],
        ],
        ro / "gen": [["generate_training_dataset", "-i", world["songs"], "-n", "1", "-o", ro / "gen"]],
        ro / "run": [
            [
                "trainer",
                *TINY,
                "-o",
                ro / "run",
                "dynamic_online",
                "-p",
                world["songs"],
                "-ir",
                world["rir"],
                "-bn",
                world["noise"],
            ]
        ],
        # the folder can be written, the database or the vector store cannot
        ro2 / "cat" / "catalogue.sqlite": [
            ["db", "remove", "--catalogue", ro2 / "cat", "--index", ro2 / "idx" / "x.index", "s1"]
        ],
        ro2 / "cat2" / "vectors.0.bin": [
            ["generate_fingerprints", "-i", world["extra"], "-o", ro2 / "cat2", "--no_progress"]
        ],
    }
    flat = [(path, argv) for path, cs in commands.items() for argv in cs]
    setup = _read_only(ro, ro2 / "cat" / "catalogue.sqlite", ro2 / "cat2" / "vectors.0.bin")
    results = _in_namespace(tmp_path, setup, [argv for _, argv in flat])
    failures = []
    for (path, argv), r in zip(flat, results):
        want = f"error: {path}: cannot be written: read-only file system (errno EROFS); nothing was done"
        if r["rc"] != 2 or _error_line(r) != want or "Traceback" in r["err"] or r["started"]:
            failures.append(f"{' '.join(map(str, argv[:2]))}: exit {r['rc']}, started {r['started']}\n{r['err']}")
    assert not failures, "\n\n".join(failures)


# -- 2. a full disk while SQLite commits ---------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_while_sqlite_commits_is_one_line_and_rolls_back(world, tmp_path):
    """A real tmpfs with room for the new song's rows in the vector store but not for SQLite's journal.
    Before: generate_fingerprints ended in 'sqlite3.OperationalError: database or disk is full', and db add
    in a second traceback from undoing the addition."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    idx = mnt / "idx" / "x.index"
    setup = (
        f"mount -t tmpfs -o size=1m tmpfs {_q(mnt)} || exit 3\n"
        f"cp -a {_q(world['cat'])} {_q(world['idx'])} {_q(mnt)}/ || exit 4"
    )
    commands = [
        ["generate_fingerprints", "-i", world["one"], "-o", mnt / "cat", "--no_progress"],
        ["db", "add", "--catalogue", mnt / "cat", "--index", idx, world["one"], "--no_progress"],
        ["db", "list", "--catalogue", mnt / "cat", "--index", idx],
    ]
    # the new song's 15 rows of 128 float32 need two more 4-KiB pages of the store file; db add one more for the
    # undo record it writes first
    gen, add, ls = _in_namespace(tmp_path, setup, commands, fill={"file": str(mnt / "filler"), "leave": 12288})
    full = f"error: {mnt / 'cat' / 'catalogue.sqlite'}: no space left on device (errno ENOSPC) while writing it; "
    assert gen["rc"] == 1 and "Traceback" not in gen["err"], gen["err"]
    assert _error_line(gen) == full + (
        "free some space, then run the same command again to continue (fingerprinted songs are kept)"
    ), gen["err"]
    assert add["rc"] == 1 and "Traceback" not in add["err"], add["err"]
    assert _error_line(add) == full + "free some space, then run the same command again", add["err"]
    assert ls["rc"] == 0 and len(ls["out"].splitlines()) == 4, ls  # nothing was added, the index still matches


@pytest.mark.slow
@pytest.mark.parametrize("command", ["add", "remove"])
def test_a_full_disk_between_the_index_files_leaves_catalogue_and_index_as_they_were(
    world, tmp_path, capsys, monkeypatch, command
):
    """The index's mapping (x.json) cannot be written after x.index was replaced. Before: x.index stayed new
    (db add: holding the songs taken out of the catalogue again; db remove: the catalogue kept the removal),
    and the pair no longer matched."""
    from fplib import index
    from tests import faults

    ws = _copy(world, tmp_path)
    idx = ws / "idx" / "x.index"
    with Catalogue(ws / "cat") as cat:
        state = cat.state()
    for name in ("atomic_path", "append_jsonl", "write_at"):  # restored after the test
        monkeypatch.setattr(storage, name, getattr(storage, name))
    faults.install("enospc:x.json")
    what = [world["one"], "--no_progress"] if command == "add" else ["s1"]
    capsys.readouterr()
    rc = cli.main(["db", command, "--catalogue", str(ws / "cat"), "--index", str(idx), *map(str, what)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"error: {ws / 'idx' / 'x.json'}: no space left on device (errno ENOSPC) while writing it; free some space, "
        f"then run the same command again"
    )
    with Catalogue(ws / "cat") as cat:
        assert cat.state() == state and len(cat) == 4
        index.load(idx, cat)  # the index still belongs to the catalogue
    assert not [f for f in (ws / "idx").iterdir() if storage.is_temp_file(f)]


def test_restored_on_failure_puts_every_file_back(tmp_path):
    a, b, c = tmp_path / "a.index", tmp_path / "a.json", tmp_path / "new.json"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(storage.DiskFullError):
        with storage.restored_on_failure(a, b, c):
            with storage.atomic_path(a) as tmp:  # replaced by name, as fplib writes files
                tmp.write_text("new a")
            with storage.atomic_path(c) as tmp:
                tmp.write_text("new c")
            raise storage.DiskFullError(b)
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert c.read_text() == "new c"  # a file that was not there is not removed: it was not kept
    with storage.restored_on_failure(a, b):
        storage.write_json(b, {"new": True})
    assert storage.read_json(b) == {"new": True} and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.index",
        "a.json",
        "new.json",
    ]


# -- 3. a killed compaction ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_compaction_cleans_up_after_a_killed_one(world, tmp_path):
    """Before: the killed compaction's temporary store (as large as the store) stayed for good."""
    cat = shutil.copytree(world["cat"], tmp_path / "cat")
    p = subprocess.run(
        [sys.executable, "-m", "tests.faults", "db", "compact", "--catalogue", str(cat), "--no_progress"],
        env={**_env(tmp_path), "FPLIB_FAULT": "kill-torn:vectors.*.bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr
    [temp] = [f for f in cat.iterdir() if storage.is_temp_file(f)]
    assert temp.name.startswith(".vectors.1.") and storage.is_stale_temp(temp)
    assert cli.main(["db", "compact", "--catalogue", str(cat), "--no_progress"]) == 0
    assert sorted(f.name for f in cat.iterdir()) == ["catalogue.sqlite", "vectors.1.bin"]
    with Catalogue(cat) as c:
        assert len(c) == 4 and c.store["rows"] == c.matrix().shape[0]


@pytest.mark.slow
def test_calibrate_threshold_cleans_up_after_a_killed_one(world, tmp_path):
    """Before: the half-written threshold of a calibration killed while writing it stayed beside the index."""
    ws = _copy(world, tmp_path)
    argv = ["calibrate_threshold", "--catalogue", ws / "cat", "--index", ws / "idx" / "x.index"]
    argv = [str(a) for a in (*argv, "--negatives", world["neg"], "--rooms", world["rir"], "--noises", world["noise"])]
    argv += ["--accept_miss", *CHEAP]
    p = subprocess.run(
        [sys.executable, "-m", "tests.faults", *argv],
        env={**_env(tmp_path), "FPLIB_FAULT": "kill-torn:*.threshold.json"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr
    [temp] = [f for f in (ws / "idx").iterdir() if storage.is_temp_file(f)]
    assert temp.name.startswith(".x.threshold.") and storage.is_stale_temp(temp)
    assert cli.main(argv) == 0
    assert not [f for f in (ws / "idx").iterdir() if storage.is_temp_file(f)]
    assert search.threshold_path(ws / "idx" / "x.index").exists()


# -- 1 (continued). calibrate_threshold prints its table before writing ---------------------------------


@pytest.mark.slow
def test_calibrate_threshold_prints_its_table_before_writing(world, tmp_path, capsys, monkeypatch):
    """Before: a failed write of NAME.threshold.json lost the table it had computed."""
    ws = _copy(world, tmp_path)

    def full(index, *content):
        raise storage.DiskFullError(search.threshold_path(index))

    monkeypatch.setattr(search, "save_threshold", full)
    argv = ["--catalogue", ws / "cat", "--index", ws / "idx" / "x.index", "--negatives", world["neg"]]
    argv += ["--rooms", world["rir"], "--noises", world["noise"], "--accept_miss", *CHEAP]
    capsys.readouterr()
    rc = cli.calibrate_threshold_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"error: {ws / 'idx' / 'x.threshold.json'}: no space left on device (errno ENOSPC) while writing it"
        )
    )
    assert "threshold" in out.splitlines()[0] and "FPR (held-back)" in out.splitlines()[0]
    assert out.splitlines()[1].split()[0] == "1s"


# -- 4. calibrate_threshold --negatives: no built-in songs --------------------------------------------


@pytest.mark.slow
def test_given_negatives_generate_no_built_in_songs(world, tmp_path, monkeypatch):
    """Before: --negatives still generated the built-in songs (19 MiB of them by default) in outputs/."""
    monkeypatch.setenv("FPLIB_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("FPLIB_CACHE", str(tmp_path / "cache"))
    neg = calibrate.choose_negatives([world["neg"]], builtin_songs=2, progress=False)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if p.name.startswith("song_")], written
    assert sorted(map(str, neg.music)) == [str(world["neg"] / "neg0.wav"), str(world["neg"] / "neg1.wav")]
    assert neg.rooms and neg.noises  # the built-in rooms and noises: what degrading the queries needs
    where = Path(neg.rooms[0]).parent.parent
    assert where.is_relative_to(tmp_path / "cache") and all(Path(f).is_relative_to(where) for f in neg.noises)
    assert neg.describe() == (
        f"rooms and noises: {len(neg.rooms)} built-in simulated rooms and {len(neg.noises)} built-in noises "
        f"(generated once, cached in {where}); --rooms and --noises give your own"
    )
    # with rooms and noises given nothing is generated at all
    shutil.rmtree(tmp_path / "cache")
    neg = calibrate.choose_negatives([world["neg"]], world["rir"], world["noise"], builtin_songs=2, progress=False)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "outputs").exists()
    assert neg.describe() is None


# -- 5. a closed standard output --------------------------------------------------------------------


class _ClosedPipe(io.TextIOBase):
    """Standard output whose reader has gone (``fplib db list | head``)."""

    def write(self, s):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def _small_catalogue(folder: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    with Catalogue(folder, FE, {"kind": "float"}) as cat:
        for i in range(n):
            v = rng.standard_normal((4, 8)).astype(np.float32)
            cat.add(folder / f"song{i}.wav", v / np.linalg.norm(v, axis=1, keepdims=True), 2.0, f"{i:064x}")
    return folder


def test_a_closed_standard_output_ends_a_listing_quietly(tmp_path, capsys, monkeypatch):
    """Before: BrokenPipeError escaped from the command."""
    cat = _small_catalogue(tmp_path / "cat")
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert cli.main(["db", "list", "--catalogue", str(cat)]) == cli.BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_fplib_db_list_into_a_closed_pipe(tmp_path):
    """A real pipe whose reader closed before the command wrote (``| head`` that has read enough)."""
    cat = _small_catalogue(tmp_path / "cat", 200)
    p = subprocess.Popen(
        [sys.executable, "-m", "fplib.cli", "db", "list", "--catalogue", str(cat)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path),
        cwd=ROOT,
    )
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipeError" not in err, err


# -- a killed fplib db add or remove is undone by running it again -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "op, fault",
    [
        ("add", "kill-before:x.index"),  # the songs committed to the catalogue, the index not yet written
        ("add", "kill-after:x.json"),  # between the index's files: the index and its mapping new, its metadata old
        ("remove", "kill-before:x.index"),  # the songs removed from the catalogue, the index not yet written
    ],
)
def test_a_killed_db_add_or_remove_is_undone_by_running_it_again(world, tmp_path, op, fault):
    """Before: the rerun was refused (the index no longer matched its catalogue) and the index had to be
    rebuilt by hand; now the rerun undoes the killed change, says so, and makes the whole change."""
    ws = _copy(world, tmp_path)
    where = ["--catalogue", str(ws / "cat"), "--index", str(ws / "idx" / "x.index")]
    argv = ["db", "add", *where, str(world["extra"]), "--no_progress"] if op == "add" else ["db", "remove", *where]
    argv += ["s1", "s2"] if op == "remove" else []
    p = subprocess.run(
        [sys.executable, "-m", "tests.faults", *argv],
        env={**_env(tmp_path), "FPLIB_FAULT": fault},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "fplib.cli", *argv], env=_env(tmp_path), cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"an interrupted fplib db {op} was undone first: {ws / 'cat'}"), p.stdout
    with Catalogue(ws / "cat") as c:
        names = sorted(s.name for s in c.songs())
    assert names == (["new0", "new1", "s0", "s1", "s2", "s3"] if op == "add" else ["s0", "s3"])
    v = subprocess.run(
        [sys.executable, "-m", "fplib.cli", "db", "verify", *where], env=_env(tmp_path), cwd=ROOT, capture_output=True
    )
    assert v.returncode == 0, v.stdout
    assert not (ws / "cat" / ".db-undo").exists()
    assert not [f.name for d in (ws / "cat", ws / "idx") for f in d.glob(".*.tmp*")]  # no temporary file left


@pytest.mark.slow
def test_a_db_add_while_another_changes_the_catalogue_is_refused(world, tmp_path, capsys):
    """The undo record of a db add or remove that still runs is not played by another one: that is refused."""
    ws = _copy(world, tmp_path)
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (ws / "cat" / ".db-undo").mkdir()
        storage.write_json(
            ws / "cat" / ".db-undo" / "journal.json", {"what": "add", "by": [storage.this_process()[0], busy.pid]}
        )
        where = ["--catalogue", str(ws / "cat"), "--index", str(ws / "idx" / "x.index")]
        assert cli.main(["db", "add", *where, str(world["extra"]), "--no_progress"]) == 2
        assert f"fplib db add (process {busy.pid}) is changing it now" in capsys.readouterr().err
    finally:
        busy.kill()
        busy.wait()
    with Catalogue(ws / "cat") as c:
        assert len(c) == 4
