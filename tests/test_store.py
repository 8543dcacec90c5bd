"""The catalogue's vector store: one contiguous, memory-mapped array; append, tombstone, compact, atomically."""

import errno
import os
import sqlite3

import numpy as np
import pytest
import torch

from fplib import audio, cli, index, storage
from fplib.catalogue import Catalogue, StaleCatalogueError, StoreRows
from fplib.errors import BadFileError
from fplib.extraction import extract
from fplib.features import FrontEnd
from fplib.models.registry import build_model
from fplib.search import Recognizer
from tests.helpers import make_folders

FE = FrontEnd()


def _unit(n, d=128, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _filled(folder, sizes=(5, 7, 3), dtype=None):
    cat = Catalogue(folder, FE, {"sha256": "test"}, store_dtype=dtype)
    vecs = {}
    for i, n in enumerate(sizes):
        v = _unit(n, seed=i)
        s = cat.add(f"/songs/{i}.wav", v, n * 0.5, f"sum{i}")
        vecs[s.id] = v
    return cat, vecs


def test_songs_are_contiguous_rows_of_one_memory_mapped_array(tmp_path):
    cat, vecs = _filled(tmp_path / "cat")
    m = cat.matrix()
    assert isinstance(m, np.memmap) and m.shape == (15, 128) and m.dtype == np.float32
    assert [s.row for s in cat.songs()] == [0, 5, 12]
    for s in cat.songs():
        np.testing.assert_array_equal(cat.vectors(s), vecs[s.id])
        np.testing.assert_array_equal(m[s.row : s.row + s.n_vectors], vecs[s.id])
    assert os.path.getsize(cat.store_path()) == 15 * 128 * 4
    assert not (tmp_path / "cat" / "vectors").exists()  # no per-song files any more
    np.testing.assert_array_equal(cat.sample(100), np.concatenate(list(vecs.values())))  # fewer than n: all, in order
    assert cat.sample(4, seed=1).shape == (4, 128)


def test_store_rows_are_read_by_slice_or_by_any_rows_without_a_memory_map(tmp_path):
    cat, vecs = _filled(tmp_path / "cat", dtype="float16")
    every = np.concatenate(list(vecs.values())).astype(np.float16)
    songs, rows = cat.snapshot()
    assert isinstance(rows, StoreRows) and rows.shape == (15, 128) and rows.dtype == np.float16 and len(rows) == 15
    np.testing.assert_array_equal(rows[5:12], every[5:12])
    np.testing.assert_array_equal(rows[13:40], every[13:])  # clipped like a slice
    assert rows[7:7].shape == (0, 128)
    ids = np.array([[3, 4, 5, 14], [0, 14, 14, 9]])  # runs, repeats, any order: one read per run
    np.testing.assert_array_equal(rows[ids], every[ids])
    with pytest.raises(IndexError, match="not all in the store"):
        rows[np.array([2, 15])]
    with open(cat.store_path(), "r+b") as f:  # cut behind the reader's back: named, never garbage
        f.truncate(10 * 128 * 2)
    with pytest.raises(BadFileError, match=r"vectors\.0\.bin: truncated: rows 5 \.\. 11 of 15"):
        rows[5:12]
    rows.close()


def test_float16_store_halves_the_bytes_and_is_read_as_float32(tmp_path):
    cat, vecs = _filled(tmp_path / "cat", dtype="float16")
    assert cat.matrix().dtype == np.float16 and os.path.getsize(cat.store_path()) == 15 * 128 * 2
    for s in cat.songs():
        v = cat.vectors(s)
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, vecs[s.id].astype(np.float16).astype(np.float32))
        assert np.abs(v - vecs[s.id]).max() < 1e-3
    cat.close()
    with pytest.raises(ValueError, match="stores float16 fingerprints, not float32; convert it: fplib db compact"):
        Catalogue(tmp_path / "cat", FE, store_dtype="float32")
    with pytest.raises(ValueError, match="store_dtype must be one of"):
        Catalogue(tmp_path / "other", FE, {"sha256": "test"}, store_dtype="int8")


def test_a_killed_addition_leaves_nothing_and_its_bytes_are_overwritten(tmp_path, monkeypatch):
    cat, vecs = _filled(tmp_path / "cat")
    state = cat.state()
    real = storage.write_at

    def write_then_die(path, offset, data):  # the rows reach the disk, then the process dies before the commit
        real(path, offset, data)
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "write_at", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        cat.add("/songs/x.wav", _unit(9, seed=9), 4.5, "sumx")
    monkeypatch.undo()
    assert cat.state() == state and cat.store["rows"] == 15
    assert os.path.getsize(cat.store_path()) == 24 * 128 * 4  # the uncommitted tail is there, but unreachable
    s = cat.add("/songs/y.wav", _unit(2, seed=10), 1.0, "sumy")
    assert s.row == 15 and os.path.getsize(cat.store_path()) == 17 * 128 * 4  # cut off and overwritten
    np.testing.assert_array_equal(cat.vectors(s), _unit(2, seed=10))
    for song in cat.songs()[:3]:
        np.testing.assert_array_equal(cat.vectors(song), vecs[song.id])


def test_a_full_disk_names_the_store_and_changes_nothing(tmp_path, monkeypatch):
    cat, _ = _filled(tmp_path / "cat")
    state = cat.state()

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.os, "pwrite", full)
    with pytest.raises(storage.DiskFullError, match=r"vectors\.0\.bin: no space left on device"):
        cat.add("/songs/x.wav", _unit(9, seed=9), 4.5, "sumx")
    monkeypatch.undo()
    assert cat.state() == state and len(cat) == 3 and cat.store["rows"] == 15


def test_nan_fingerprints_are_refused(tmp_path):
    cat, _ = _filled(tmp_path / "cat")
    bad = _unit(3)
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match="bad.wav: its fingerprints contain NaN"):
        cat.add("/songs/bad.wav", bad, 1.5, "bad")
    assert len(cat) == 3


def test_remove_is_a_tombstone_and_compact_frees_it_keeping_ids(tmp_path):
    cat, vecs = _filled(tmp_path / "cat")
    middle = cat.songs()[1]
    cat.remove(middle.id)
    assert cat.store["dead"] == 7 and cat.store["rows"] == 15  # rows stay until compacted
    ids_before = {s.id: (s.first_vector, s.n_vectors) for s in cat.songs()}
    state = cat.state()
    old = cat.store_path()
    store = cat.compact()
    assert store == {"file": "vectors.1.bin", "dtype": "float32", "width": 128, "rows": 8, "dead": 0}
    assert not old.exists() and os.path.getsize(cat.store_path()) == 8 * 128 * 4
    assert cat.state() == state  # vector ids unchanged: indexes built before stay valid
    assert {s.id: (s.first_vector, s.n_vectors) for s in cat.songs()} == ids_before
    assert [s.row for s in cat.songs()] == [0, 5]
    for s in cat.songs():
        np.testing.assert_array_equal(cat.vectors(s), vecs[s.id])
    s = cat.add("/songs/z.wav", _unit(4, seed=20), 2.0, "sumz")  # appends to the new store
    assert s.row == 8 and s.first_vector == 15


def test_a_killed_compaction_leaves_the_old_store_and_its_file_is_cleaned(tmp_path, monkeypatch):
    cat, vecs = _filled(tmp_path / "cat")
    cat.remove(cat.songs()[0].id)
    real = cat._set

    def die_at_switch(key, value):
        if key == "store":
            raise KeyboardInterrupt
        real(key, value)

    monkeypatch.setattr(cat, "_set", die_at_switch)
    with pytest.raises(KeyboardInterrupt):
        cat.compact()
    monkeypatch.undo()
    assert (tmp_path / "cat" / "vectors.1.bin").exists()  # the new file was complete, never switched to
    (tmp_path / "cat" / "vectors.7.bin").write_bytes(b"left by another killed compaction")
    (tmp_path / "cat" / "vectors.backup.bin").write_bytes(b"the user's own file")
    cat.close()
    with Catalogue(tmp_path / "cat") as cat:  # still the old store, rows as before
        assert cat.store["file"] == "vectors.0.bin" and [s.row for s in cat.songs()] == [5, 12]
        for s in cat.songs():
            np.testing.assert_array_equal(cat.vectors(s), vecs[s.id])
        cat.compact(dtype="float16")
        assert sorted(p.name for p in (tmp_path / "cat").glob("vectors.*")) == ["vectors.1.bin", "vectors.backup.bin"]
        assert cat.store_dtype == "float16" and cat.matrix().dtype == np.float16


def test_a_truncated_or_missing_store_is_named(tmp_path):
    cat, _ = _filled(tmp_path / "cat")
    path = cat.store_path()
    cat.close()
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(
        BadFileError,
        match=r"vectors\.0\.bin: truncated: 1000 bytes, the catalogue's 15 rows of "
        r"128 float32 need 7680",
    ):
        Catalogue(tmp_path / "cat")
    path.unlink()
    with pytest.raises(BadFileError, match=r"vectors\.0\.bin: missing: the vector store of the catalogue"):
        Catalogue(tmp_path / "cat")


def _as_older_fplib(folder, cat):
    """Rewrite a catalogue as fplib wrote it before the vector store: one .npy per song, no row column."""
    (folder / "vectors").mkdir()
    for s in cat.songs():
        np.save(folder / "vectors" / f"{s.id}.npy", cat.vectors(s))
    path = cat.store_path()
    cat.close()
    path.unlink()
    with sqlite3.connect(folder / "catalogue.sqlite") as db:
        db.execute("ALTER TABLE songs DROP COLUMN row")
        db.execute("DELETE FROM meta WHERE key = 'store'")


def test_a_catalogue_of_an_older_fplib_is_read_then_converted(tmp_path, capsys):
    folder = tmp_path / "cat"
    cat, vecs = _filled(folder)
    _as_older_fplib(folder, cat)
    with Catalogue(folder) as old:
        assert old.legacy and old.store_dtype == "float32"
        for s in old.songs():
            np.testing.assert_array_equal(old.vectors(s), vecs[s.id])
        assert not isinstance(old.matrix(), np.memmap) and list(old.rows_of(old.songs())) == [0, 5, 12]
        with pytest.raises(
            ValueError,
            match=f"older fplib .one file per song.; convert it once, then add: fplib db compact --catalogue {folder}",
        ):
            old.add("/songs/n.wav", _unit(2), 1.0, "new")
    assert cli.main(["db", "compact", "--catalogue", str(folder), "--no_progress"]) == 0
    assert "converted from one file per song" in capsys.readouterr().out
    assert not (folder / "vectors").exists()
    with Catalogue(folder) as cat:
        assert not cat.legacy and [s.row for s in cat.songs()] == [0, 5, 12]
        for s in cat.songs():
            np.testing.assert_array_equal(cat.vectors(s), vecs[s.id])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("nafp_small", FE, width=0.125)[0].eval()
    root = tmp_path_factory.mktemp("store")
    songs = make_folders(root, n_songs=4, seconds=8.0)["songs"]
    return model, songs, root


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_recognition_reads_the_store_rows_and_survives_compaction(world, tmp_path, dtype):
    model, songs, _ = world
    cat = Catalogue(tmp_path / "cat", FE, {"sha256": "test"}, store_dtype=dtype)
    extract(audio.list_audio(songs), cat, model, progress=False, root=songs)
    path = index.build(cat, "idx", tmp_path, factory="Flat")
    rec = Recognizer(model, cat, path)
    assert isinstance(rec.matrix, StoreRows) and rec.matrix.dtype == np.dtype(dtype)
    wav = audio.load(cat.songs()[2].path, FE.sr)
    q = wav[int(2.0 * FE.sr) : int(5.0 * FE.sr)]
    first = rec.recognize(q)
    assert first.best.name == cat.songs()[2].name and first.best.offset_s == 2.0
    assert first.best.score == pytest.approx(1.0, abs=2e-3 if dtype == "float16" else 1e-5)
    cat.remove(cat.songs()[0].id)  # through the catalogue only: rebuild the index, then compact
    path = index.build(cat, "idx", tmp_path, factory="Flat")
    cat.compact()
    again = Recognizer(model, cat, path).recognize(q)
    assert (again.best.name, again.best.offset_s) == (first.best.name, first.best.offset_s)
    assert again.best.score == pytest.approx(first.best.score, abs=1e-6)


def test_readers_keep_their_snapshot_across_a_compaction_by_another_process(tmp_path):
    folder = tmp_path / "cat"
    cat, vecs = _filled(folder)
    cat.remove(cat.songs()[0].id)
    songs, m = cat.snapshot()
    with Catalogue(folder) as other:  # another writer compacts: new file, new rows
        other.compact()
    assert [s.row for s in songs] == [5, 12] and not (folder / "vectors.0.bin").exists()
    for s in songs:  # the open old file is still readable at the old rows (its name is gone, not its data)
        np.testing.assert_array_equal(m[s.row : s.row + s.n_vectors], vecs[s.id])
    with pytest.raises(StaleCatalogueError, match="compacted since song .* was read .*vectors.0.bin.*vectors.1.bin"):
        cat.vectors(songs[0])  # never another song's rows
    for s in cat.songs():  # read again: the new rows
        np.testing.assert_array_equal(cat.vectors(s), vecs[s.id])


def test_the_vector_store_is_reached_by_fault_injection(tmp_path, monkeypatch):
    from tests import faults

    cat, _ = _filled(tmp_path / "cat")
    state = cat.state()
    for name in ("atomic_path", "append_jsonl", "write_at"):  # restored after the test
        monkeypatch.setattr(storage, name, getattr(storage, name))
    faults.install("enospc:vectors.*.bin")
    with pytest.raises(storage.DiskFullError, match=r"vectors\.0\.bin: no space left"):
        cat.add("/songs/x.wav", _unit(4, seed=4), 2.0, "sumx")
    assert cat.state() == state and cat.store["rows"] == 15


def test_the_db_operations_are_library_functions_all_or_nothing(world, tmp_path):
    """What ``generate_fingerprints``, ``create_faiss_indexes`` and ``fplib db`` do, called directly: an
    addition with one unusable file is refused whole (Refused names the file) and changes nothing."""
    from fplib import db
    from fplib.checkpoints import save_checkpoint
    from fplib.errors import Refused
    from fplib.extraction import fingerprint_folders

    model, songs, _ = world
    ckpt = tmp_path / "model.pt"
    save_checkpoint(
        ckpt,
        {
            "model": model.state_dict(),
            "model_name": "nafp_small",
            "frontend": FE.to_dict(),
            "model_settings": build_model("nafp_small", FE, width=0.125)[1],
        },
    )
    files = audio.list_audio(songs)
    cat = tmp_path / "cat"
    made = fingerprint_folders([str(f) for f in files[:2]], cat, ckpt, workers=0, progress=False)
    assert [s.name for s in made.added] == [files[0].stem, files[1].stem] and made.songs == 2
    with pytest.raises(Refused) as refused:
        fingerprint_folders([str(tmp_path / "nowhere")], cat, ckpt, progress=False)
    assert refused.value.problems == [(str(tmp_path / "nowhere"), "no such file or folder")]
    built = db.build_index(cat, "idx", tmp_path / "idx", factory="Flat")
    assert built.songs == 2 and built.path == tmp_path / "idx" / "idx.index"
    with Catalogue(cat) as c:
        before = c.state(), c.store["rows"], storage.read_json(built.path.with_suffix(".meta.json"))
    with pytest.raises(Refused) as refused:
        db.add(cat, built.path, [str(files[2]), str(files[0])], ckpt, progress=False)
    assert refused.value.consequence == "nothing was added"
    assert refused.value.problems == [(str(files[0]), f"already in the catalogue as song 1 {files[0].stem!r}")]
    with Catalogue(cat) as c:
        assert (c.state(), c.store["rows"], storage.read_json(built.path.with_suffix(".meta.json"))) == before
    added = db.add(cat, built.path, [str(files[2])], ckpt, progress=False)
    assert [s.name for s in added.added] == [files[2].stem] and added.songs == 3
    assert [s.name for s in db.list_songs(cat, built.path)] == [f.stem for f in files[:3]]
    with pytest.raises(Refused, match="'nope': no song with this name or id"):
        db.remove(cat, built.path, [files[1].stem, "nope"])
    assert len(db.list_songs(cat)) == 3
    removed = db.remove(cat, built.path, [files[1].stem])
    assert [s.name for s in removed.removed] == [files[1].stem] and removed.songs == 2
    compacted = db.compact(cat)
    assert (compacted.songs, compacted.dtype, compacted.file) == (2, "float32", "vectors.1.bin")
    assert compacted.bytes_after < compacted.bytes_before
    merged = db.merge(tmp_path / "merged", [cat])
    assert merged.songs == 2 and [s.name for s in merged.added] == [files[0].stem, files[2].stem]
    assert db.merge(tmp_path / "merged", [cat]).added == []  # resumes: nothing twice


def test_scattered_rows_are_read_in_few_calls_and_come_back_in_order(tmp_path, monkeypatch):
    """rows[ids]: rows at most StoreRows.MERGE_GAP apart are one read (a live recogniser asks for thousands of
    short runs a second); any order, repeats and far-apart rows come back as asked."""
    every = np.arange(500 * 4, dtype=np.float32).reshape(500, 4)
    path = tmp_path / "v.bin"
    every.tofile(path)
    rows = StoreRows(path, "float32", 4, 500, cache_bytes=0)  # (the cache is tried below)
    reads = []
    real = rows.read
    monkeypatch.setattr(rows, "read", lambda lo, hi: reads.append((lo, hi)) or real(lo, hi))
    ids = np.array([40, 3, 3, 10, 11, 12, 30, 499, 200, 201, 44, 0])
    np.testing.assert_array_equal(rows[ids], every[ids])
    assert reads == [(0, 45), (200, 202), (499, 500)]  # gaps of 7-18 rows merged; 155 and 297 are not
    assert rows[np.array([], dtype=np.int64)].shape == (0, 4)
    rows.close()


def test_cached_rows_come_back_as_stored_and_are_read_once(tmp_path, monkeypatch):
    """rows[ids] through the block cache: the rows asked for, in any shape, order and with repeats, the last
    partial block included; a block already read is not read again until newer blocks have replaced it; a
    request wider than the cache is read directly, and gives the same rows."""
    n, B = 1000, StoreRows.BLOCK_ROWS
    every = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    path = tmp_path / "v.bin"
    every.tofile(path)
    rows = StoreRows(path, "float32", 4, n, cache_bytes=3 * B * 16)  # 3 blocks
    assert rows.slots == 3
    reads = []
    real = rows.read
    monkeypatch.setattr(rows, "read", lambda lo, hi: reads.append((lo, hi)) or real(lo, hi))
    ids = np.array([[5, 70], [999, 5]])
    np.testing.assert_array_equal(rows[ids], every[ids])
    assert reads == [(0, 2 * B), (n // B * B, (n // B + 1) * B)]  # two adjacent blocks in one read; the last
    np.testing.assert_array_equal(rows[np.array([B - 1, 1, 2 * B - 1, n - 1])], every[[B - 1, 1, 2 * B - 1, n - 1]])
    assert len(reads) == 2  # all cached
    np.testing.assert_array_equal(rows[np.array([300, 6])], every[[300, 6]])  # replaces the oldest (block 0)...
    assert reads[2:] == [(4 * B, 5 * B)]  # ...but not block 0, which this request needs: block 1 goes
    np.testing.assert_array_equal(rows[np.array([70])], every[[70]])
    assert reads[3:] == [(B, 2 * B)]
    wide = np.arange(0, n, 50)  # 20 blocks > 3 slots: read directly
    np.testing.assert_array_equal(rows[wide], every[wide])
    with pytest.raises(IndexError):
        rows[np.array([n])]
    rows.close()
