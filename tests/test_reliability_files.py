"""Bad files, catalogues, indexes and thresholds, as a user meets them: real truncated and corrupt files,
a real named pipe, real concurrent processes. Every bad input gives ``error: PATH: reason`` (or a skip
with the reason) and a stated exit code, and nothing on disk is created or changed."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from fplib import audio, cli, index, search
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_model, save_checkpoint
from fplib.errors import BadFileError
from fplib.features import FrontEnd
from fplib.models.registry import build_model, model_names
from tests.helpers import music_like, run_cli

FE = FrontEnd()
ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(path: Path, seed: int = 0, **state) -> Path:
    """A real checkpoint of a freshly initialised tiny model (another model than the shipped one)."""
    torch.manual_seed(seed)
    model, settings = build_model("nafp_small", FE, width=0.125)
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_name": "nafp_small",
            "model_settings": settings,
            "frontend": FE.to_dict(),
            **state,
        },
    )
    return path


def _snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under ``roots`` with its kind, size, modification time and content digest."""
    snap = {}
    for root in roots:
        for p in sorted([root, *root.rglob("*")]):
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            snap[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return snap


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three songs; a catalogue and index made by the shipped model, and another catalogue and index of
    the same songs made by another (tiny, untrained) model."""
    root = tmp_path_factory.mktemp("rel")
    songs = root / "songs"
    for i in range(3):
        audio.write(songs / f"s{i}.wav", music_like(8.0, 8000, seed=i), 8000)
    other = _checkpoint(root / "other.pt")
    for name, model in (("shipped", []), ("other", ["--model", other])):
        assert (
            cli.main(
                [
                    "generate_fingerprints",
                    "-i",
                    str(songs),
                    "-o",
                    str(root / name / "cat"),
                    *map(str, model),
                    "--no_progress",
                ]
            )
            == 0
        )
        assert (
            cli.main(
                ["create_faiss_indexes", "-i", str(root / name / "cat"), "-n", "x", "-o", str(root / name / "idx")]
            )
            == 0
        )
    q = root / "q.wav"
    audio.write(q, audio.load(songs / "s1.wav", offset=2.0, duration=3.0), 8000, subtype="FLOAT")
    noise = root / "noise.wav"
    audio.write(noise, (0.3 * np.random.default_rng(0).standard_normal(3 * 8000)).astype(np.float32), 8000)
    return dict(
        root=root,
        songs=songs,
        other=other,
        q=q,
        noise=noise,
        cat=root / "shipped" / "cat",
        index=root / "shipped" / "idx" / "x.index",
        other_cat=root / "other" / "cat",
        other_index=root / "other" / "idx" / "x.index",
    )


def _index_copy(world, tmp_path: Path, which: str = "index") -> Path:
    shutil.copytree(world[which].parent, tmp_path / "idx")
    return tmp_path / "idx" / "x.index"


def _recognize(capsys, world, *extra, index_path=None, cat=None, queries=None):
    return run_cli(
        capsys,
        "recognize",
        *(queries or [world["q"]]),
        "--catalogue",
        cat or world["cat"],
        "--index",
        index_path or world["index"],
        *extra,
    )


# -- silently wrong -------------------------------------------------------------------------------


@pytest.mark.slow
def test_without_a_threshold_file_noise_is_not_identified(world, capsys):
    """The shipped model's default threshold decides for a catalogue it made; another model's catalogue
    without a threshold file is refused (exit 2), never 'every query accepted'."""
    assert not search.threshold_path(world["index"]).exists()
    rc, out, err = _recognize(capsys, world, "--json", queries=[world["q"], world["noise"]])
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and "the shipped model's default" in err
    assert rows[0]["in_database"] and rows[0]["song"] == "s1" and abs(rows[0]["offset_s"] - 2.0) <= 0.125
    assert not rows[1]["in_database"] and rows[1]["song"] is None and rows[1]["reason"] == "margin below the threshold"
    rc, out, err = _recognize(
        capsys, world, "--model", world["other"], index_path=world["other_index"], cat=world["other_cat"]
    )
    assert rc == 2 and not out
    assert err.startswith(f"error: {search.threshold_path(world['other_index'])}: no threshold for this index")
    assert "calibrate_threshold" in err and "--no-threshold" in err


def test_an_index_of_another_models_catalogue_is_refused(world, tmp_path, capsys):
    """Same songs, same vector ids, other model: the song list matches, the model does not."""
    with Catalogue(world["cat"]) as a, Catalogue(world["other_cat"]) as b:
        assert a.state() == b.state() and a.model["sha256"] != b.model["sha256"]  # only the model differs
        with pytest.raises(BadFileError) as e:
            index.load(world["other_index"], a)
        assert e.value.path == str(world["other_index"])
    snap = _snapshot(world["root"])
    rc, out, err = _recognize(capsys, world, "--no-threshold", index_path=world["other_index"])
    reason = (
        f"built from the fingerprints of another model ({world['other'].resolve()}, SHA-256 "
        f"{b.model['sha256'][:12]}...) than the catalogue {world['cat']} ("
    )
    assert rc == 2 and not out and err.startswith(f"error: {world['other_index']}: {reason}"), err
    assert f"rebuild it: create_faiss_indexes -i {world['cat']} -n x -o {world['other_index'].parent}" in err
    new = tmp_path / "new"
    audio.write(new / "n.wav", music_like(5.0, 8000, seed=9), 8000)
    rc, _, err = run_cli(
        capsys, "db", "add", "--catalogue", world["cat"], "--index", world["other_index"], new, "--no_progress"
    )
    assert rc == 2 and err.startswith(f"error: {world['other_index']}: built from the fingerprints of another model")
    assert _snapshot(world["root"]) == snap  # neither catalogue nor index was touched
    # an index from before the model was recorded cannot be checked: refused, to be rebuilt
    idx = _index_copy(world, tmp_path)
    meta = json.loads(idx.with_suffix(".meta.json").read_text())
    del meta["model"]
    idx.with_suffix(".meta.json").write_text(json.dumps(meta))
    rc, _, err = _recognize(capsys, world, "--no-threshold", index_path=idx)
    assert rc == 2 and err.startswith(
        f"error: {idx}: built by an older fplib that did not record which model made "
        f"its vectors, so it cannot be checked against the catalogue; rebuild it: "
    )


@pytest.mark.parametrize(
    "content, reason",
    [
        ('{"threshold": NaN}', "'threshold' must be a finite number or {'windows': [...], 'values': [...]}, got nan"),
        (
            '{"threshold": Infinity, "phases": 1}',
            "'threshold' must be a finite number or {'windows': [...], 'values': [...]}, got inf",
        ),
        (
            '{"threshold": {"windows": [1, 3], "values": [0.1, NaN]}}',
            "'threshold' 'values' must be finite numbers, got [0.1, nan]",
        ),
    ],
)
def test_a_non_finite_threshold_is_refused_naming_the_file(world, tmp_path, capsys, content, reason):
    idx = _index_copy(world, tmp_path)
    path = search.threshold_path(idx)
    path.write_text(content)
    rc, out, err = _recognize(capsys, world, index_path=idx)
    assert rc == 2 and not out
    assert err == f"error: {path}: not a valid threshold file: {reason} (calibrate_threshold writes it)\n"
    rec = search.recognizer_from_files(None, world["cat"], idx, threshold=float("nan"))
    with pytest.raises(ValueError, match="not a finite number"):  # nor through the API
        rec.recognize(world["q"])


# -- tracebacks and hangs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, reason",
    [
        (
            "[0.1, 0.2]",
            "not a valid threshold file: it holds a list, not an object with a 'threshold' "
            "(calibrate_threshold writes it)",
        ),
        (
            '{"phases": 4, "decision": "margin"}',
            "not a valid threshold file: no 'threshold' in it (calibrate_threshold writes it)",
        ),
        (
            "{'threshold': 0.1}",
            "not a valid threshold file: invalid JSON (Expecting property name enclosed in double "
            "quotes at line 1 column 2)",
        ),
        (
            '{"threshold": {"windows": [1, 3], "values": [0.1]}}',
            "not a valid threshold file: 'threshold' needs 'windows' "
            "and 'values', two lists of the same non-zero length (calibrate_threshold writes it)",
        ),
        (
            '{"threshold": 0.1, "decision": "ratio"}',
            "not a valid threshold file: 'decision' must be 'score' or 'margin', "
            "got 'ratio' (calibrate_threshold writes it)",
        ),
        ("", "empty file (0 bytes)"),
        (b"\xff\xfe{", "not a threshold file: not UTF-8 text"),
        (None, "is a folder, not a file"),
    ],
)
@pytest.mark.slow
def test_a_malformed_threshold_file_is_named_with_what_is_wrong(world, tmp_path, capsys, content, reason):
    idx = _index_copy(world, tmp_path)
    path = search.threshold_path(idx)
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    rc, out, err = _recognize(capsys, world, index_path=idx)
    assert (rc, out, err) == (2, "", f"error: {path}: {reason}\n")


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


class _Unblock:
    """A watchdog: if a reader still waits on the named pipe after ``seconds``, open its other end (so the
    test fails instead of hanging) and remember that it had to."""

    def __init__(self, fifo: Path, seconds: float = 20.0):
        self.fifo, self.fired = fifo, False
        self.timer = threading.Timer(seconds, self._fire)

    def _fire(self):
        try:
            os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            self.fired = True
        except OSError:  # nobody was reading it
            pass

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()


FIFO_REASON = "is a named pipe (FIFO), not a regular file; not read (reading it could wait forever)"


@pytest.mark.slow
def test_a_named_pipe_named_like_audio_is_skipped_not_read(world, tmp_path, capsys):
    songs = tmp_path / "songs"
    songs.mkdir()
    shutil.copyfile(world["songs"] / "s0.wav", songs / "s0.wav")
    pipe = _fifo(songs / "song.wav")
    cat = tmp_path / "cat"
    with _Unblock(pipe) as w:
        rc, out, err = run_cli(
            capsys, "generate_fingerprints", "-i", songs, "-o", cat, "--model", world["other"], "--no_progress"
        )
        assert not w.fired, "generate_fingerprints opened the named pipe"
    assert rc == 1 and "1 song(s) added" in out and "1 skipped" in out
    assert f"  {pipe}: {FIFO_REASON}\n" in err
    with _Unblock(pipe) as w:  # given by name, as a query, to db add
        rc, _, err = run_cli(
            capsys, "generate_fingerprints", "-i", pipe, "-o", cat, "--model", world["other"], "--no_progress"
        )
        assert rc == 1 and f"  {pipe}: {FIFO_REASON}\n" in err
        rc, out, err = _recognize(capsys, world, "--no-threshold", queries=[pipe, world["q"]])
        assert rc == 1 and f"error: {pipe}: {FIFO_REASON}\n" in err and "1 identified" in out
        snap = _snapshot(cat)
        assert cli.main(["create_faiss_indexes", "-i", str(cat), "-n", "x", "-o", str(tmp_path / "idx")]) == 0
        rc, _, err = run_cli(
            capsys,
            "db",
            "add",
            "--catalogue",
            cat,
            "--index",
            tmp_path / "idx" / "x.index",
            "--model",
            world["other"],
            pipe,
            "--no_progress",
        )
        assert rc == 2 and f"error: {pipe}: {FIFO_REASON}\n" in err and "nothing was added" in err
        assert not w.fired
    assert _snapshot(cat) == snap


def test_audio_paths_that_are_not_readable_files(world, tmp_path, capsys):
    folder = tmp_path / "album.wav"  # a folder named like audio
    folder.mkdir()
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    rc, _, err = _recognize(capsys, world, "--no-threshold", queries=[folder, empty, tmp_path / "gone.mp3"])
    assert rc == 1
    assert f"error: {folder}: is a folder, not an audio file\n" in err
    assert f"error: {empty}: empty file (0 bytes)\n" in err
    assert f"error: {tmp_path / 'gone.mp3'}: file not found\n" in err


def test_an_unreadable_audio_file_is_permission_denied(world):
    """In a process that gives up root first, if the tests run as root (root reads any file)."""
    folder = Path(tempfile.mkdtemp(prefix="fplib-perm-"))
    try:
        os.chmod(folder, 0o755)
        song = folder / "locked.wav"
        shutil.copyfile(world["songs"] / "s0.wav", song)
        os.chmod(song, 0)
        code = (
            "import os, sys\nfrom fplib import audio, errors\n"
            "if os.geteuid() == 0:\n    os.setgid(65534)\n    os.setuid(65534)\n"
            "try:\n    audio.load(sys.argv[1])\nexcept audio.AudioError as e:\n    print(e)\n"
            "print(errors.file_problem(sys.argv[1]))"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, str(song)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        reason = "permission denied (the file is not readable)"
        assert r.stdout.splitlines() == [f"{song}: {reason}", reason], r.stdout + r.stderr
    finally:
        shutil.rmtree(folder)


def _sqlite_of_another_app(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.close()


CATALOGUE_CASES = {
    "empty": (
        lambda p: p.write_bytes(b""),
        "empty file (0 bytes), not a catalogue database (left as it is; delete it to start a new catalogue here)",
    ),
    "truncated": (
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "truncated or corrupt SQLite database (database disk image is malformed); restore it from a copy or "
        "extract the catalogue again",
    ),
    "text": (
        lambda p: p.write_text("these are my songs\n"),
        "not an SQLite database (a catalogue.sqlite starts with 'SQLite format 3'); not an fplib catalogue, or "
        "overwritten",
    ),
    "other_app": (
        lambda p: (p.unlink(), _sqlite_of_another_app(p)),
        "an SQLite database, but not an fplib catalogue (no table songs, meta)",
    ),
    "folder": (lambda p: (p.unlink(), p.mkdir()), "is a folder, not a file"),
}


@pytest.mark.parametrize("case", CATALOGUE_CASES)
def test_a_bad_catalogue_is_named_and_never_modified(world, tmp_path, capsys, case):
    spoil, reason = CATALOGUE_CASES[case]
    cat = tmp_path / "cat"
    shutil.copytree(world["cat"], cat)
    spoil(cat / "catalogue.sqlite")
    snap = _snapshot(cat)
    with pytest.raises(BadFileError) as e:
        Catalogue(cat)
    assert (e.value.path, e.value.reason) == (str(cat / "catalogue.sqlite"), reason)
    expected = f"error: {cat / 'catalogue.sqlite'}: {reason}\n"
    for argv in (
        ["recognize", world["q"], "--catalogue", cat, "--index", world["index"]],
        ["generate_fingerprints", "-i", world["songs"] / "s0.wav", "-o", cat, "--no_progress"],
        ["create_faiss_indexes", "-i", cat, "-n", "x", "-o", tmp_path / "idx"],
        ["db", "list", "--catalogue", cat],
    ):
        rc, out, err = run_cli(capsys, *argv)
        assert (rc, err) == (2, expected), argv
        assert _snapshot(cat) == snap, argv  # not created, not written, not "repaired"
    assert not (tmp_path / "idx").exists()


def test_opening_a_good_catalogue_changes_nothing(world):
    snap = _snapshot(world["cat"])
    with Catalogue(world["cat"]) as c:
        assert len(c) == 3 and len(c.all_vectors()[0]) == 45
    with Catalogue(world["cat"], FE, c.model) as c:  # as generate_fingerprints opens it
        assert c.state()
    assert _snapshot(world["cat"]) == snap


def test_a_damaged_fingerprint_store_is_named(world, tmp_path, capsys):
    cat = tmp_path / "cat"
    shutil.copytree(world["cat"], cat)
    with Catalogue(cat) as c:
        store, rows = c.store_path(), c.store["rows"]
    store.write_bytes(store.read_bytes()[:300])
    rc, _, err = _recognize(capsys, world, "--no-threshold", cat=cat)
    assert rc == 2 and err == (
        f"error: {store}: truncated: 300 bytes, the catalogue's {rows} rows of 128 float32 "
        f"need {rows * 512}; restore it from a copy or extract the catalogue again\n"
    )
    store.unlink()
    rc, _, err = _recognize(capsys, world, "--no-threshold", cat=cat)
    assert rc == 2 and err == f"error: {store}: missing: the vector store of the catalogue ({rows} rows)\n"


ADDER = r"""
import sys, time
from pathlib import Path
import numpy as np
from fplib.catalogue import AlreadyInCatalogue, Catalogue
from fplib.features import FrontEnd

folder, who, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
(go.parent / f"ready{who}").touch()
while not go.exists():
    time.sleep(0.001)
added, already = [], 0
cat = Catalogue(folder, FrontEnd(), {"sha256": "synthetic"})  # both processes create it at once
for i in range(200):
    for checksum in (f"p{who}-{i}",) + ((f"shared-{i}",) if i < 20 else ()):
        n = 1 + (i * 7 + who) % 5
        v = np.full((n, 128), int(checksum.split("-")[1]) + 1000 * (checksum[0] == "s"), np.float32)
        try:
            s = cat.add(f"{checksum}.wav", v, n / 2, checksum, checksum)
            added.append(s.id)
        except AlreadyInCatalogue:
            already += 1
print(len(added), already)
"""


@pytest.mark.slow
def test_two_processes_add_to_one_catalogue_at_once(tmp_path):
    """Two real processes create one catalogue and add 220 songs each, 20 of them the same audio:
    every addition lands once, with its own vector ids and file (before BEGIN IMMEDIATE, one or two
    additions in 300 failed with "UNIQUE constraint failed: songs.first_vector")."""
    folder, go = tmp_path / "cat", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ADDER, str(folder), str(who), str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in (0, 1)
    ]
    deadline = time.time() + 60
    while not all((tmp_path / f"ready{who}").exists() for who in (0, 1)) and time.time() < deadline:
        time.sleep(0.01)
    go.touch()  # both start adding at once
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    counts = [tuple(map(int, out.split())) for out, _ in results]
    assert sum(a for a, _ in counts) == 420 and sum(b for _, b in counts) == 20  # each shared song once
    with Catalogue(folder) as cat:
        songs = cat.songs()
        assert len(songs) == 420 and Counter(s.checksum for s in songs).most_common(1)[0][1] == 1
        firsts = [s.first_vector for s in songs]
        assert firsts == sorted(firsts) and firsts[0] == 0
        assert all(a.first_vector + a.n_vectors == b.first_vector for a, b in zip(songs, songs[1:]))  # no overlap
        for s in songs:
            v = cat.vectors(s)
            assert v.shape == (s.n_vectors, 128)
            assert v[0, 0] == int(s.checksum.split("-")[1]) + 1000 * s.checksum.startswith("s")
    assert not list(folder.glob(".catalogue.*"))  # the loser's aside copy is gone


@pytest.mark.slow
def test_two_generate_fingerprints_on_the_same_songs_at_once(world, tmp_path):
    """Both create the catalogue and fingerprint the same three songs: each lands once, nothing fails."""
    cmd = [
        sys.executable,
        "-m",
        "fplib.cli",
        "generate_fingerprints",
        "-i",
        str(world["songs"]),
        "-o",
        str(tmp_path / "cat"),
        "--model",
        str(world["other"]),
        "--no_progress",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    with Catalogue(tmp_path / "cat") as c, Catalogue(world["other_cat"]) as ref:
        assert sorted(s.name for s in c.songs()) == ["s0", "s1", "s2"]
        for s in c.songs():
            np.testing.assert_array_equal(c.vectors(s), ref.vectors(next(r for r in ref.songs() if r.name == s.name)))


# -- unclear messages: checkpoints and indexes ---------------------------------------------------------


def _bad_checkpoints(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    ck = torch.load(good, weights_only=True)
    data = good.read_bytes()
    folder.mkdir()
    (folder / "empty.pt").write_bytes(b"")
    (folder / "dir.pt").mkdir()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save(ck["model"], folder / "state_dict.pt")
    with open(folder / "other.pkl", "wb") as f:
        pickle.dump(Counter(a=1), f)
    torch.save([1, 2, 3], folder / "list.pt")
    torch.save({**ck, "model_settings": {**ck["model_settings"], "width": 0.25}}, folder / "wider.pt")
    torch.save({**ck, "model_name": "resnet"}, folder / "arch.pt")
    (folder / "text.pt").write_text("weights\n")
    torch.save(build_model("nafp_small", FE, width=0.125)[0], folder / "whole_model.pt")
    return {
        "missing": (folder / "none.pt", "file not found"),
        "folder": (folder / "dir.pt", "is a folder, not a file"),
        "empty": (folder / "empty.pt", "empty file (0 bytes)"),
        "truncated": (
            folder / "truncated.pt",
            "truncated or corrupt torch file (incomplete archive); copy or train it again",
        ),
        "text": (folder / "text.pt", "not a torch checkpoint (not a torch.save archive)"),
        "bare state dict": (
            folder / "state_dict.pt",
            f"a bare state dict ({len(ck['model'])} tensors, no settings): "
            "an fplib checkpoint also holds 'model_name', 'model_settings', 'frontend', as trainer "
            "and fplib.pretrained.export write it",
        ),
        "another pickle": (
            folder / "other.pkl",
            "a plain Python pickle, not a torch checkpoint (fplib checkpoints are "
            "torch.save archives written by trainer or fplib.pretrained.export)",
        ),
        "a whole model": (
            folder / "whole_model.pt",
            "holds pickled Python objects (such as fplib.models.nafp.NAFP), "
            "not only tensors and settings, e.g. a whole saved model: not an fplib checkpoint (fplib "
            "never unpickles code)",
        ),
        "a list": (
            folder / "list.pt",
            "not an fplib model checkpoint: it holds a list, not a dict of weights and settings",
        ),
        "unknown architecture": (
            folder / "arch.pt",
            f"unknown architecture 'resnet' (fplib has {', '.join(model_names())})",
        ),
        "wrong architecture": (
            folder / "wider.pt",
            "its weights do not fit the 'nafp_small' architecture with "
            f"settings { ({**ck['model_settings'], 'width': 0.25}) } (size mismatch for "
            "encoder.0.conv_t.weight: copying a param with shape torch.Size([16, 1, 1, 3]) from "
            "checkpoint, the shape in current model is torch.Size([32, 1, 1, 3]); 64 more)",
        ),
    }


def test_every_bad_checkpoint_is_named_with_what_is_wrong(world, tmp_path, capsys):
    cases = _bad_checkpoints(tmp_path / "ck", world["other"])
    for case, (path, reason) in cases.items():
        with pytest.raises(BadFileError) as e:
            load_model(path)
        assert (e.value.path, e.value.reason) == (str(path), reason), case
    path, reason = cases["bare state dict"]  # was: "error: 'frontend'"
    for argv in (
        ["recognize", world["q"], "--catalogue", world["cat"], "--index", world["index"], "--model", path],
        ["generate_fingerprints", "-i", world["songs"], "-o", tmp_path / "cat", "--model", path],
    ):
        rc, out, err = run_cli(capsys, *argv)
        assert (rc, out, err) == (2, "", f"error: {path}: {reason}\n")
    assert not (tmp_path / "cat").exists()


def test_a_broken_model_card_is_named(world, tmp_path, monkeypatch, capsys):
    from fplib import pretrained

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copyfile(pretrained.default_model(), shipped / f"{pretrained.NAME}.pt")
    card = shipped / f"{pretrained.NAME}.json"
    monkeypatch.setenv(pretrained.DIR_ENV, str(shipped))
    for content, reason in (
        (
            "{",
            "not a valid model card: invalid JSON (Expecting property name enclosed in double "
            "quotes at line 1 column 2)",
        ),
        ("[]", "not a model card (a list); reinstall fplib or pass --model CHECKPOINT"),
    ):
        card.write_text(content)
        rc, _, err = _recognize(capsys, world)
        assert (rc, err) == (2, f"error: {card}: {reason}\n")
    assert not pretrained.is_shipped("x") and pretrained.default_threshold() is None  # as if not installed


def _spoil(idx: Path, case: str):
    meta, mapping = idx.with_suffix(".meta.json"), idx.with_suffix(".json")
    data = idx.read_bytes()
    if case == "truncated":
        idx.write_bytes(data[: len(data) // 2])
        return idx, "not a readable faiss index, truncated or corrupt (faiss: read error: "
    if case == "not an index":
        idx.write_bytes(b"\x00" * 64)
        return idx, "not a readable faiss index, truncated or corrupt (faiss: "
    if case == "empty":
        idx.write_bytes(b"")
        return idx, "empty file (0 bytes)\n"
    if case == "folder":
        idx.unlink()
        idx.mkdir()
        return idx, "is a folder, not a file\n"
    if case == "meta missing":
        meta.unlink()
        return meta, f"missing: the metadata of {idx} (written with it by create_faiss_indexes); rebuild the index\n"
    if case == "meta corrupt":
        meta.write_text(meta.read_text()[:40])
        return meta, "not a valid index metadata file: invalid JSON ("
    if case == "meta a list":
        meta.write_text("[]")
        return meta, "not an fplib index metadata file: it holds a list, not an object\n"
    if case == "mapping missing":
        mapping.unlink()
        return mapping, f"missing: the song mapping of {idx} (written with it); rebuild it: "
    if case == "mapping corrupt":
        mapping.write_text('{"0": "s0", ')
        return mapping, "not a valid index song mapping: invalid JSON ("
    if case == "mapping of other songs":
        mapping.write_text('{"0": "a", "15": "b"}')
        return mapping, "not the song mapping of the catalogue "
    raise AssertionError(case)


INDEX_CASES = [
    "truncated",
    "not an index",
    "empty",
    "folder",
    "meta missing",
    "meta corrupt",
    "meta a list",
    "mapping missing",
    "mapping corrupt",
    "mapping of other songs",
]


@pytest.mark.slow
def test_every_bad_index_file_is_named_with_what_is_wrong(world, tmp_path, capsys):
    for case in INDEX_CASES:
        idx = _index_copy(world, tmp_path / case.replace(" ", "_"))
        path, reason = _spoil(idx, case)
        snap = _snapshot(idx.parent, world["cat"])
        rc, out, err = _recognize(capsys, world, "--no-threshold", index_path=idx)
        assert rc == 2 and not out and err.startswith(f"error: {path}: {reason}"), (case, err)
        rc, _, err2 = run_cli(capsys, "db", "list", "--catalogue", world["cat"], "--index", idx)
        assert rc == 2 and err2 == err, case
        assert _snapshot(idx.parent, world["cat"]) == snap, case
    # an index of another state of the catalogue (a song added behind its back)
    cat = tmp_path / "cat"
    shutil.copytree(world["cat"], cat)
    with Catalogue(cat) as c:
        c.add("x.wav", np.ones((4, 128), np.float32) / np.sqrt(128), 2.5, "x", "x")
    rc, _, err = _recognize(capsys, world, "--no-threshold", cat=cat)
    assert rc == 2 and err.startswith(
        f"error: {world['index']}: built from another state of the catalogue (45 vectors, catalogue {cat} has 49)"
    )


@pytest.mark.slow
def test_db_add_on_a_full_disk_fails_clearly_and_changes_nothing(world, tmp_path, capsys, monkeypatch):
    from fplib import storage
    from tests import faults

    shutil.copytree(world["cat"], tmp_path / "cat")
    idx = _index_copy(world, tmp_path)
    new = tmp_path / "new.wav"
    audio.write(new, music_like(6.0, 8000, seed=9), 8000)
    before = _snapshot(tmp_path / "cat", idx.parent)
    with Catalogue(tmp_path / "cat") as cat:
        state = cat.state()
    monkeypatch.setattr(storage, "atomic_path", storage.atomic_path)  # restored after the test
    monkeypatch.setattr(storage, "append_jsonl", storage.append_jsonl)
    faults.install("enospc:x.index")
    rc, _, err = run_cli(capsys, "db", "add", new, "--catalogue", tmp_path / "cat", "--index", idx)
    assert rc == 1, err
    assert "x.index: no space left on device" in err and "Traceback" not in err

    def files(snap):  # the song was added, then rolled back: the same files, the same songs in the catalogue
        return {p: v for p, v in snap.items() if v[3] is not None and not p.endswith(("catalogue.sqlite", ".bin"))}

    assert files(_snapshot(tmp_path / "cat", idx.parent)) == files(before)
    assert set(_snapshot(tmp_path / "cat", idx.parent)) == set(before)
    with Catalogue(tmp_path / "cat") as cat, Catalogue(world["cat"]) as ref:
        assert cat.state() == state and len(cat) == 3
        index.load(idx, cat)  # the index still belongs to the catalogue
        for a, b in zip(cat.songs(), ref.songs()):  # the same fingerprints; the new song's rows are dead space
            np.testing.assert_array_equal(cat.vectors(a), ref.vectors(b))
        assert cat.store["rows"] == ref.store["rows"] + cat.store["dead"] and cat.store["dead"] == 11


def test_an_index_name_that_is_a_path_is_refused_by_the_library(world, tmp_path):
    with Catalogue(world["cat"]) as cat:
        for name in ("../x", "a/b", "..", ""):
            with pytest.raises(ValueError, match="must be a plain name, not a path"):
                index.build(cat, name, tmp_path)
    assert not any(tmp_path.iterdir())
