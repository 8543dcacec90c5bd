"""Stored data is checked before it is trusted (issue 29): the vector store against the checksums of its
songs' rows recorded when they were stored, the faiss index against the checksum of its file and a sampled
re-score of the catalogue's own windows, a threshold file against the index, catalogue and model it was
calibrated for; ``fplib db verify`` checks everything in depth. Catalogues and indexes written before these
records open as before (the records are "not recorded")."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import faiss
import numpy as np
import pytest

from fplib import audio, cli, db, index, search
from fplib.catalogue import Catalogue
from fplib.errors import BadFileError
from fplib.features import FrontEnd
from tests.helpers import music_like, run_cli

FE = FrontEnd()


def _unit(rng: np.random.Generator, n: int, d: int = 128) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _catalogue(folder: Path, songs: int = 3, windows: int = 20, seed: int = 0, dtype: str | None = None) -> Path:
    """A catalogue of ``songs`` songs of ``windows`` random unit vectors each (no network: fast)."""
    rng = np.random.default_rng(seed)
    with Catalogue(folder, FE, {"sha256": "synthetic"}, store_dtype=dtype) as c:
        for i in range(songs):
            c.add(f"s{i}.wav", _unit(rng, windows), windows / 2, f"{seed}-{i}", f"s{i}")
    return folder


def _swap(folder: Path, a: str = "s0", b: str = "s1") -> Path:
    """Swap the rows of songs ``a`` and ``b`` (of the same length) in the store, as a damaged copy would."""
    with Catalogue(folder) as c:
        songs = {s.name: s for s in c.songs()}
        path, row = c.store_path(), c.store["width"] * np.dtype(c.store_dtype).itemsize
    sa, sb = songs[a], songs[b]
    assert sa.n_vectors == sb.n_vectors
    data = bytearray(path.read_bytes())
    ra, rb = slice(sa.row * row, (sa.row + sa.n_vectors) * row), slice(sb.row * row, (sb.row + sb.n_vectors) * row)
    data[ra], data[rb] = data[rb], data[ra]
    path.write_bytes(bytes(data))
    return path


def _pq_index(tmp_path: Path) -> tuple[Path, Path]:
    """A catalogue of 1,000 windows and an IVF-PQ index of it (enough vectors to keep the PQ codebooks)."""
    cat = _catalogue(tmp_path / "cat", songs=10, windows=100)
    with Catalogue(cat) as c:
        path = index.build(c, "x", tmp_path / "idx")
    assert "PQ32" in index.read_meta(path)["factory"]
    return cat, path


def _flip_codebook(path: Path, n: int = 400, seed: int = 0) -> None:
    """Change ``n`` bytes of the PQ codebook inside the index file ``path`` (found by its bytes)."""
    whole = index.read_index(path)  # kept while its parts are read
    codebook = faiss.vector_to_array(faiss.downcast_index(faiss.extract_index_ivf(whole)).pq.centroids).tobytes()
    data = bytearray(path.read_bytes())
    at = bytes(data).find(codebook)
    assert at > 0
    rng = np.random.default_rng(seed)
    for p in at + rng.choice(len(codebook), n, replace=False):
        data[p] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))


def _drop_records(cat: Path | None = None, idx: Path | None = None) -> None:
    """Make ``cat`` and ``idx`` look written by an fplib before these records."""
    if cat is not None:
        with sqlite3.connect(cat / "catalogue.sqlite") as con:
            con.execute("DROP TABLE IF EXISTS row_checksums")
    if idx is not None:
        meta = index.meta_path(idx)
        m = json.loads(meta.read_text())
        m.pop("file", None)
        meta.write_text(json.dumps(m))


# -- the vector store, checked on open ------------------------------------------------------------


def test_a_store_whose_rows_were_swapped_is_refused_on_open(tmp_path, capsys):
    cat = _catalogue(tmp_path / "cat")
    store = _swap(cat)
    with pytest.raises(BadFileError) as e:
        Catalogue(cat)
    assert e.value.path == str(store) and "song 1 's0'" in str(e.value) and "fplib db verify" in str(e.value)
    rc, out, err = run_cli(capsys, "db", "list", "--catalogue", cat)
    assert rc == 2 and not out and err.startswith(f"error: {store}: the fingerprints of song 1 's0' (rows 0 .. 19)")


def test_another_catalogues_store_of_the_same_size_is_refused_on_open(tmp_path):
    ours, theirs = _catalogue(tmp_path / "a", seed=0), _catalogue(tmp_path / "b", seed=1)
    with Catalogue(ours) as a, Catalogue(theirs) as b:
        mine, other = a.store_path(), b.store_path()
    assert mine.stat().st_size == other.stat().st_size
    shutil.copyfile(other, mine)
    with pytest.raises(BadFileError, match="differ from the checksum recorded when they were stored"):
        Catalogue(ours)


def test_the_records_follow_add_remove_and_compact(tmp_path):
    cat = _catalogue(tmp_path / "cat", songs=4)
    with Catalogue(cat) as c:
        c.remove(2)
        c.add("new.wav", _unit(np.random.default_rng(9), 20), 10.0, "new", "new")
    assert all(ok for _, ok, _ in db.verify(cat))
    db.compact(cat, "float16")  # other rows, another dtype: recorded again
    assert [(name, ok) for name, ok, _ in db.verify(cat)] == [
        ("catalogue database", True),
        ("vector store", True),
        ("song fingerprints", True),
    ]
    _swap(cat, "s0", "new")
    with pytest.raises(BadFileError, match="song 1 's0'"):
        Catalogue(cat)


def test_a_catalogue_without_the_records_opens_and_compact_records_them(tmp_path, capsys):
    cat = _catalogue(tmp_path / "cat")
    _drop_records(cat)
    store = _swap(cat)  # not detectable without the records: opens as before
    Catalogue(cat).close()
    rc, out, _ = run_cli(capsys, "db", "verify", "--catalogue", cat)
    assert (
        rc == 0
        and (
            f"song fingerprints: not recorded: no checksum for 3 of 3 songs (stored by an older fplib); record them: "
            f"fplib db compact --catalogue {cat}\n"
        )
        in out
    )
    with Catalogue(cat) as c:
        c.add("new.wav", _unit(np.random.default_rng(9), 20), 10.0, "new", "new")  # recorded from now on
    assert "no checksum for 3 of 4 songs" in run_cli(capsys, "db", "verify", "--catalogue", cat)[1]
    db.compact(cat)
    rc, out, _ = run_cli(capsys, "db", "verify", "--catalogue", cat)
    assert rc == 0 and "song fingerprints: ok: 4 songs" in out
    assert store.exists() is False  # compaction wrote a new store (the swap is now the catalogue's content)


def test_compact_refuses_to_keep_damaged_rows(tmp_path):
    cat = _catalogue(tmp_path / "cat")
    store = _swap(cat)
    before = store.read_bytes()
    with pytest.raises(BadFileError, match="song 1 's0'"):
        db.compact(cat)
    assert store.read_bytes() == before and sorted(p.name for p in cat.iterdir()) == ["catalogue.sqlite", store.name]


# -- the index, checked on load -------------------------------------------------------------------


def test_flipped_bytes_in_a_pq_codebook_are_refused_on_load(tmp_path, capsys):
    cat, idx = _pq_index(tmp_path)
    _flip_codebook(idx)
    with Catalogue(cat) as c, pytest.raises(BadFileError) as e:
        index.load(idx, c)
    assert e.value.path == str(idx) and "differs from the checksum recorded when it was written" in str(e.value)
    rc, out, err = run_cli(capsys, "db", "list", "--catalogue", cat, "--index", idx)
    assert rc == 2 and "matches" not in out + err and err.startswith(f"error: {idx}: its content differs")


def test_the_sampled_rescore_catches_a_damaged_codebook_without_a_recorded_checksum(tmp_path, capsys):
    cat, idx = _pq_index(tmp_path)
    _drop_records(idx=idx)  # an index written before the checksum was recorded
    with Catalogue(cat) as c:
        index.load(idx, c)  # undamaged: loads
        assert index.rescore(index.read_index(idx), c, 32) == (32, 32)
    _flip_codebook(idx)
    with Catalogue(cat) as c, pytest.raises(BadFileError, match=r"found only \d+ of them"):
        index.load(idx, c)
    rc, out, err = run_cli(capsys, "db", "list", "--catalogue", cat, "--index", idx)
    assert rc == 2 and "matches" not in err


def test_a_large_index_is_checked_by_a_sampled_checksum_on_load(tmp_path, monkeypatch):
    monkeypatch.setattr(index, "FULL_CHECK_BYTES", 1000)
    monkeypatch.setattr(index, "SAMPLE_BLOCK", 512)
    monkeypatch.setattr(index, "SAMPLE_HEAD", 4096)
    cat, idx = _pq_index(tmp_path)
    assert idx.stat().st_size > 50_000 and "sampled_sha256" in index.read_meta(idx)["file"]
    with Catalogue(cat) as c:
        index.load(idx, c)
    _flip_codebook(idx)  # in the head: always read
    with Catalogue(cat) as c, pytest.raises(BadFileError, match="differs from the checksum"):
        index.load(idx, c)
    assert not all(ok for _, ok, _ in db.verify(cat, idx))


# -- fplib db verify ------------------------------------------------------------------------------


def test_db_verify_checks_everything_and_says_ok(tmp_path, capsys):
    cat, idx = _pq_index(tmp_path)
    rc, out, err = run_cli(capsys, "db", "verify", "--catalogue", cat, "--index", idx)
    assert rc == 0 and not err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "catalogue database",
        "vector store",
        "song fingerprints",
        "index file",
        "index against the catalogue",
        "index re-score",
    ]
    assert all(line.split(": ")[1] == "ok" for line in lines), out
    assert "10 songs" in lines[2] and "256 of 256" in lines[5]


def test_db_verify_names_every_damage_and_exits_1(tmp_path, capsys):
    cat, idx = _pq_index(tmp_path)
    _swap(cat, "s3", "s7")
    _flip_codebook(idx)
    rc, out, _ = run_cli(capsys, "db", "verify", "--catalogue", cat, "--index", idx)
    assert rc == 1
    got = {line.split(": ")[0]: line.split(": ")[1] for line in out.splitlines()}
    assert got["song fingerprints"] == "damaged" and got["index file"] == "damaged"
    assert got["catalogue database"] == got["vector store"] == "ok"
    assert "2 of 10 songs" in out and "4 's3'" in out and "8 's7'" in out


def test_db_verify_of_a_corrupt_database_or_a_truncated_store_exits_1(tmp_path, capsys):
    cat = _catalogue(tmp_path / "cat")
    with Catalogue(cat) as c:
        store = c.store_path()
    store.write_bytes(store.read_bytes()[:100])
    rc, out, _ = run_cli(capsys, "db", "verify", "--catalogue", cat)
    assert rc == 1 and out.startswith("catalogue database: ok") and f"vector store: damaged: {store}: truncated" in out


def test_db_verify_usage_errors_exit_2(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "db", "verify", "--catalogue", tmp_path / "nothing")
    assert rc == 2 and "no catalogue here" in err
    rc, _, err = run_cli(capsys, "db", "verify")
    assert rc == 2


def test_db_verify_of_records_not_written_says_how_to_record_them(tmp_path, capsys):
    cat, idx = _pq_index(tmp_path)
    _drop_records(cat, idx)
    rc, out, _ = run_cli(capsys, "db", "verify", "--catalogue", cat, "--index", idx)
    assert rc == 0
    assert f"fplib db compact --catalogue {cat}" in out
    assert f"index file: not recorded: rebuild it to record one: create_faiss_indexes -i {cat} -n x" in out
    assert "index re-score: ok" in out


# -- the threshold file ---------------------------------------------------------------------------


def test_a_threshold_calibrated_for_another_index_is_refused(tmp_path):
    cat = _catalogue(tmp_path / "cat", songs=10, windows=100)
    with Catalogue(cat) as c:
        x = index.build(c, "x", tmp_path / "idx")
        y = index.build(c, "y", tmp_path / "idx", factory="Flat")
    search.save_threshold(x, {"threshold": 0.1})
    saved = json.loads(search.threshold_path(x).read_text())
    assert set(saved["calibrated_for"]) >= {"index_sha256", "catalogue_state", "model_sha256"}
    with Catalogue(cat) as c:
        assert search.resolve_threshold(x, c) == (saved, str(search.threshold_path(x)))
    shutil.copyfile(search.threshold_path(x), search.threshold_path(y))
    with Catalogue(cat) as c, pytest.raises(BadFileError) as e:
        search.resolve_threshold(y, c)
    assert e.value.path == str(search.threshold_path(y))
    assert "calibrated for another index" in str(e.value) and f"calibrate_threshold --catalogue {cat} --index {y}" in (
        str(e.value)
    )


def test_a_threshold_of_another_catalogue_or_model_is_refused_and_of_this_one_grown_since_is_said_older(tmp_path):
    cat = _catalogue(tmp_path / "cat", songs=10, windows=100)
    with Catalogue(cat) as c:
        x = index.build(c, "x", tmp_path / "idx")
    search.save_threshold(x, {"threshold": 0.1})
    path = search.threshold_path(x)
    saved = json.loads(path.read_text())
    other = dict(saved, calibrated_for=dict(saved["calibrated_for"], model_sha256="0" * 64))
    path.write_text(json.dumps(other))
    with Catalogue(cat) as c, pytest.raises(BadFileError, match="another model"):
        search.resolve_threshold(x, c)
    path.write_text(json.dumps(saved))
    other = tmp_path / "other"  # another catalogue (here a copy grown by a song), its index, this threshold
    shutil.copytree(cat, other / "cat")
    with Catalogue(other / "cat") as c:
        song = c.add("new.wav", _unit(np.random.default_rng(5), 30), 15.0, "new", "new")
        y = index.build(c, "x", other / "idx")
    shutil.copyfile(path, search.threshold_path(y))
    with Catalogue(other / "cat") as c, pytest.raises(BadFileError, match="another catalogue's: " + str(cat)):
        search.resolve_threshold(y, c)
    with Catalogue(cat) as c:  # a song added to this catalogue through fplib db: the index follows, the threshold
        song = c.add("new.wav", _unit(np.random.default_rng(5), 30), 15.0, "new", "new")  # is said to be older
        index.add_songs(x, c, [song])
        saved_, source = search.resolve_threshold(x, c)
    assert saved_ == saved and source.startswith(f"{path} (warning: calibrated before songs were added")
    assert "(10 songs then, 11 now)" in source and f"calibrate_threshold --catalogue {cat}" in source


def test_a_threshold_file_of_an_older_fplib_loads_with_a_warning(tmp_path):
    cat = _catalogue(tmp_path / "cat")
    with Catalogue(cat) as c:
        x = index.build(c, "x", tmp_path / "idx")
    search.threshold_path(x).write_text('{"threshold": 0.1}')
    with Catalogue(cat) as c:
        saved, source = search.resolve_threshold(x, c)
    assert saved == {"threshold": 0.1}
    assert source.startswith(f"{search.threshold_path(x)} (warning: it does not record") and "calibrate_threshold" in (
        source
    )


# -- end to end, with the shipped model -----------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("stored")
    songs = root / "songs"
    for i in range(3):
        audio.write(songs / f"s{i}.wav", music_like(8.0, 8000, seed=i), 8000)
    assert cli.main(["generate_fingerprints", "-i", str(songs), "-o", str(root / "cat"), "--no_progress"]) == 0
    for name, factory in (("x", "Flat"), ("y", "IVF1,Flat")):
        argv = ["create_faiss_indexes", "-i", str(root / "cat"), "-n", name, "-o", str(root / "idx")]
        assert cli.main([*argv, "--factory", factory]) == 0
    q = root / "q.wav"
    audio.write(q, audio.load(songs / "s1.wav", offset=2.0, duration=3.0), 8000, subtype="FLOAT")
    return dict(root=root, cat=root / "cat", x=root / "idx" / "x.index", y=root / "idx" / "y.index", q=q)


@pytest.mark.slow
def test_recognize_refuses_a_store_whose_rows_were_swapped(world, tmp_path, capsys):
    argv = ["recognize", world["q"], "--catalogue", world["cat"], "--index", world["x"], "--json"]
    rc, out, _ = run_cli(capsys, *argv)
    assert rc == 0 and json.loads(out)["song"] == "s1"
    cat = tmp_path / "cat"
    shutil.copytree(world["cat"], cat)
    store = _swap(cat)  # before: "s0", confidence 0.408 against a threshold of 0.099, exit 0
    argv[3] = cat
    rc, out, err = run_cli(capsys, *argv)
    assert (rc, out) == (2, "") and err.startswith(f"error: {store}: the fingerprints of song ")
    rc, out, err = run_cli(capsys, "db", "list", "--catalogue", cat, "--index", world["x"])
    assert rc == 2 and not out and "matches" not in err
    rc, out, _ = run_cli(capsys, "db", "verify", "--catalogue", cat, "--index", world["x"])
    assert rc == 1 and "song fingerprints: damaged: 2 of 3 songs" in out


@pytest.mark.slow
def test_recognize_refuses_a_threshold_calibrated_for_another_index(world, tmp_path, capsys):
    idx = tmp_path / "idx"
    shutil.copytree(world["x"].parent, idx)
    x, y = idx / "x.index", idx / "y.index"
    search.save_threshold(x, {"threshold": 0.5, "phases": 4, "decision": "margin"})
    shutil.copyfile(search.threshold_path(x), search.threshold_path(y))
    rc, _, err = run_cli(capsys, "recognize", world["q"], "--catalogue", world["cat"], "--index", x)
    assert rc == 0, err
    rc, out, err = run_cli(capsys, "recognize", world["q"], "--catalogue", world["cat"], "--index", y)
    assert (rc, out) == (2, "") and err.startswith(f"error: {search.threshold_path(y)}: calibrated for another index")
    assert err.count("\n") == 1 and f"calibrate_threshold --catalogue {world['cat']} --index {y}" in err


@pytest.mark.slow
def test_calibrate_threshold_records_what_it_calibrated_for(world, tmp_path, monkeypatch):
    from fplib import calibrate

    class Stub:  # the calibration itself is tested elsewhere: what is written around it here
        missed = []

        def to_json(self):
            return {"threshold": 0.2, "phases": 4, "decision": "margin"}

    monkeypatch.setattr(calibrate, "choose_negatives", lambda *a, **k: calibrate.Negatives([world["q"]], [], []))
    monkeypatch.setattr(calibrate, "IRBank", lambda *a, **k: None)
    monkeypatch.setattr(calibrate, "NoiseBank", lambda *a, **k: None)
    monkeypatch.setattr(calibrate, "calibrate_recognizer", lambda *a, **k: Stub())
    idx = tmp_path / "idx"
    shutil.copytree(world["x"].parent, idx)
    done = calibrate.calibrate_index(world["cat"], idx / "x.index", say=None, progress=False)
    saved = json.loads(done.path.read_text())
    assert saved["calibrated_for"] == search.threshold_record(idx / "x.index")
    with Catalogue(world["cat"]) as c:
        assert saved["calibrated_for"]["catalogue_state"] == c.state()
        assert saved["calibrated_for"]["model_sha256"] == c.model["sha256"]
        assert search.resolve_threshold(idx / "x.index", c)[1] == str(done.path)


def test_a_binary_catalogue_and_index_are_checked_alike(tmp_path, capsys):
    rng = np.random.default_rng(0)
    cat = tmp_path / "cat"
    with Catalogue(cat, FE, {"sha256": "synthetic", "kind": "binary"}) as c:
        for i in range(6):
            c.add(f"s{i}.wav", rng.integers(0, 256, (60, 16), dtype=np.uint8), 30.0, f"b{i}", f"s{i}")
        idx = index.build(c, "b", tmp_path / "idx")
        index.load(idx, c)
    rc, out, _ = run_cli(capsys, "db", "verify", "--catalogue", cat, "--index", idx)
    assert rc == 0 and "index re-score: ok: 256 of 256" in out, out
    _swap(cat, "s2", "s4")
    with pytest.raises(BadFileError, match="song 3 's2'"):
        Catalogue(cat)
