"""Duplicates in a catalogue: what a song's name means (its path under the folder given), a name added twice
(another folder, another catalogue), a file replaced under its name, identical audio under another name,
and near-identical recordings (album and compilation copies) found when added and answered as one song.

Real files of synthetic music, fingerprinted by the shipped model (so that a copy's fingerprints match
and unrelated songs' do not, as in a user's catalogue)."""

import shutil

import numpy as np
import pytest

from fplib import audio, cli, db, pretrained
from fplib.catalogue import Catalogue
from fplib.errors import Refused
from fplib.extraction import extract, fingerprint_folders
from fplib.search import Answer, recognizer_from_files
from tests.helpers import music_like, write

SR = 8000
SECONDS = 12.0
pytestmark = pytest.mark.slow  # the shipped model fingerprints every song (a few seconds a test on 2 cores)


def _song(seed: int) -> np.ndarray:
    return music_like(SECONDS, SR, seed=seed)


def _near_copy(x: np.ndarray) -> np.ndarray:
    """Another copy of the same recording: 4 dB quieter, 0.1 s later, other bytes (16-bit FLAC, not WAV)."""
    return (0.63 * np.r_[np.zeros(int(0.1 * SR), np.float32), x]).astype(np.float32)


@pytest.fixture(scope="module")
def ckpt():
    return pretrained.default_model()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Folders A (x, y), B (x: other audio under the same name, z), C (w: the same bytes as A/y)."""
    root = tmp_path_factory.mktemp("dups")
    write(root / "A" / "x.wav", _song(1), SR)
    write(root / "A" / "y.wav", _song(2), SR)
    write(root / "B" / "x.wav", _song(3), SR)
    write(root / "B" / "z.wav", _song(4), SR)
    (root / "C").mkdir()
    shutil.copy(root / "A" / "y.wav", root / "C" / "w.wav")
    write(root / "comp" / "x copy.flac", _near_copy(_song(1)), SR)
    return root


def _names(cat) -> list[str]:
    with Catalogue(cat) as c:
        return sorted(s.name for s in c.songs())


def _fp(inputs, cat, ckpt):
    return fingerprint_folders([str(i) for i in inputs], cat, ckpt, workers=0, progress=False)


def test_another_folder_with_the_same_names_adds_no_name_twice(tmp_path, folders, ckpt):
    """generate_fingerprints on another folder holding a song of the same name: the name is already taken (by
    another file), so the file is skipped, named with the reason, and the catalogue keeps one song a name."""
    cat = tmp_path / "cat"
    _fp([folders / "A"], cat, ckpt)
    again = _fp([folders / "B"], cat, ckpt)
    assert _names(cat) == ["x", "y", "z"]
    assert [s.name for s in again.added] == ["z"]
    assert [f for f, _ in again.skipped] == [str(folders / "B" / "x.wav")]
    reason = again.skipped[0][1]
    assert "a song named 'x' is already in the catalogue" in reason and str(folders / "A" / "x.wav") in reason


def test_a_file_replaced_under_its_name_replaces_its_song_and_unchanged_files_are_not_decoded(
    tmp_path, folders, ckpt, monkeypatch
):
    music, cat = tmp_path / "music", tmp_path / "cat"
    shutil.copytree(folders / "A", music)
    first = _fp([music], cat, ckpt)
    old = {s.name: s for s in first.added}
    write(music / "x.wav", _song(5), SR)  # the file is replaced: other audio under the same name
    decoded = []
    load = audio.load
    monkeypatch.setattr(audio, "load", lambda path, *a, **kw: decoded.append(str(path)) or load(path, *a, **kw))
    again = _fp([music], cat, ckpt)
    assert decoded == [str(music / "x.wav")]  # the unchanged file is recognised by its bytes, never decoded
    assert again.already == [str(music / "y.wav")] and not again.added and not again.skipped
    assert [(new.name, gone.id) for new, gone in again.replaced] == [("x", old["x"].id)]
    with Catalogue(cat) as c:
        songs = {s.name: s for s in c.songs()}
        assert sorted(songs) == ["x", "y"] and songs["y"].id == old["y"].id
        assert songs["x"].checksum != old["x"].checksum and songs["x"].id != old["x"].id
        assert c.store["dead"] == old["x"].n_vectors  # the old fingerprints are gone (freed by compact)


def test_the_command_says_what_it_did(tmp_path, folders, ckpt, capsys):
    """generate_fingerprints counts and names what it added, replaced, left unchanged and skipped as
    duplicates (the same audio under another name)."""
    music, cat = tmp_path / "music", tmp_path / "cat"
    shutil.copytree(folders / "A", music)
    run = ["generate_fingerprints", "-i", str(music), "-o", str(cat), "--model", str(ckpt), "--no_progress"]
    assert cli.main([*run, "--workers", "0"]) == 0
    capsys.readouterr()
    write(music / "x.wav", _song(5), SR)
    shutil.copy(folders / "B" / "z.wav", music / "z.wav")
    shutil.copy(music / "y.wav", music / "y again.wav")
    assert cli.main([*run, "--workers", "0"]) == 0
    out, err = capsys.readouterr()
    text = out + err
    assert "1 song(s) added" in out and "1 replaced" in out and "1 already there" in out and "1 duplicate" in out
    assert "added: z" in text and "replaced: x" in text
    assert f"{music / 'y again.wav'}: the same audio as song 2 'y'" in text
    assert _names(cat) == ["x", "y", "z"]


def test_db_merge_refuses_a_name_already_there_unless_replace_and_reports_identical_audio(
    tmp_path, folders, ckpt, capsys
):
    a, b, c, target = tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "merged"
    _fp([folders / "A"], a, ckpt)
    _fp([folders / "B"], b, ckpt)
    _fp([folders / "C"], c, ckpt)
    assert [s.name for s in db.merge(target, [a]).added] == ["x", "y"]
    with pytest.raises(Refused) as refused:
        db.merge(target, [b])
    assert refused.value.problems == [
        (f"{b}: 'x'", f"a song named 'x' is already in {target}, with other audio (--replace: {b}'s replaces it)")
    ]
    assert _names(target) == ["x", "y"]
    merged = db.merge(target, [b], replace=True)
    assert [s.name for s in merged.added] == ["z"] and [(n.name, o.name) for n, o in merged.replaced] == [("x", "x")]
    with Catalogue(target) as t, Catalogue(b) as other:
        assert {s.name: s.checksum for s in t.songs()}["x"] == {s.name: s.checksum for s in other.songs()}["x"]
    again = db.merge(target, [c])  # the same audio as y, named w: not added, and said so
    assert not again.added and [(new.name, s.name) for new, s in again.duplicates] == [("w", "y")]
    assert db.merge(target, [a, b], replace=True).unchanged == 3  # b's x wins again: nothing changes
    capsys.readouterr()
    other = tmp_path / "other"
    assert cli.main(["db", "merge", "--catalogue", str(other), str(a), str(b), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert f"error: {b}: 'x': a song named 'x' is already in {a}, with other audio" in err
    assert "nothing was merged" in err
    assert cli.main(["db", "merge", "--catalogue", str(other), str(a), str(b), "--no_progress", "--replace"]) == 0
    assert "3 song(s) added from 2 catalogue(s)" in capsys.readouterr().out  # the last catalogue's x


def test_db_add_refuses_a_name_there_and_replace_replaces_it_in_the_index_too(tmp_path, folders, ckpt):
    cat = tmp_path / "cat"
    _fp([folders / "A"], cat, ckpt)
    idx = db.build_index(cat, "idx", tmp_path / "idx", factory="Flat").path
    new = str(folders / "B" / "x.wav")
    with pytest.raises(Refused) as refused:
        db.add(cat, idx, [new], ckpt, progress=False)
    assert refused.value.problems == [(new, "a song named 'x' is already in the catalogue (--replace replaces it)")]
    old = {s.name: s for s in db.list_songs(cat)}
    added = db.add(cat, idx, [new], ckpt, progress=False, replace=True)
    assert not added.added and [(n.name, o.id) for n, o in added.replaced] == [("x", old["x"].id)]
    songs = {s.name: s for s in db.list_songs(cat, idx)}  # the index matches the catalogue
    assert sorted(songs) == ["x", "y"] and songs["x"].path == new


@pytest.fixture(scope="module")
def copies(tmp_path_factory, folders, ckpt):
    """A catalogue of x, y, z and 'comp/x copy' (x again, quieter, later, other bytes), with its index."""
    root = tmp_path_factory.mktemp("copies")
    music = root / "music"
    shutil.copytree(folders / "A", music)
    shutil.copy(folders / "B" / "z.wav", music / "z.wav")
    shutil.copytree(folders / "comp", music / "comp")
    made = _fp([music], root / "cat", ckpt)
    idx = db.build_index(root / "cat", "idx", root / "idx", factory="Flat").path
    return {"music": music, "cat": root / "cat", "index": idx, "made": made}


def test_near_identical_songs_are_found_when_added_and_recorded(copies):
    found = [(c.name, c.original_name) for c in copies["made"].copies]
    assert found == [("x", "comp/x copy")]  # one pair (the later song is the copy): unrelated songs are not copies
    with Catalogue(copies["cat"]) as c:
        [pair] = c.copies()
        assert (pair.name, pair.original_name) == ("x", "comp/x copy")
        assert abs(pair.offset_s) < 0.26 and pair.score > 0.8


def test_a_query_of_a_song_in_the_catalogue_twice_is_answered(copies):
    """The margin decision compares the best song with the next song that is not a copy of it: a query of x
    is in the database (either copy named, the other mentioned), where x against its copy was a tie."""
    rec = recognizer_from_files(None, copies["cat"], copies["index"])
    assert rec.decision == "margin"
    x = audio.load(copies["music"] / "x.wav", SR)
    r = rec.recognize(x[3 * SR : 8 * SR])
    assert r.in_database, r.reason
    names = {r.best.name, *r.copies}
    assert names == {"x", "comp/x copy"}
    assert r.confidence >= r.threshold and r.confidence > r.best.score - r.matches[1].score
    other = ({"x", "comp/x copy"} - {r.best.name}).pop()
    assert f"(also in the catalogue as {other!r}: the same recording)" in Answer("q", r).lines()[0]


def test_listen_treats_copies_as_one_song(copies):
    from fplib import listen

    rec = recognizer_from_files(None, copies["cat"], copies["index"])
    x = audio.load(copies["music"] / "x.wav", SR)
    events = listen.Listener(rec).feed(x[: 10 * SR])
    assert [e.name in ("x", "comp/x copy") for e in events if e.kind == "match"][:1] == [True]


def test_songs_added_by_an_interrupted_or_library_run_are_checked_by_the_next_command(tmp_path, copies, ckpt):
    """Copies are looked for among the songs not yet checked: songs that extract() (no check) or a killed
    run added are checked by the next generate_fingerprints, db add or db merge."""
    from fplib.checkpoints import load_model, model_description

    cat = tmp_path / "cat"
    model, fe = load_model(ckpt)
    with Catalogue(cat, fe, model_description(ckpt)) as c:
        extract(audio.list_audio(copies["music"]), c, model, progress=False, root=copies["music"], workers=0)
        assert c.copies() == []
    again = _fp([copies["music"]], cat, ckpt)
    assert not again.added and [(c.name, c.original_name) for c in again.copies] == [("x", "comp/x copy")]
    assert _fp([copies["music"]], cat, ckpt).copies == []  # found once, recorded


def test_a_large_catalogue_is_compared_through_its_index(tmp_path, copies, ckpt, monkeypatch):
    """Beyond EXACT_WINDOWS the exact search is left out (it grows with the catalogue times the songs added):
    create_faiss_indexes compares the songs through the index it builds, and fplib db add through the index."""
    from fplib import copies as fpcopies

    monkeypatch.setattr(fpcopies, "EXACT_WINDOWS", 10)
    cat = tmp_path / "cat"
    assert _fp([copies["music"]], cat, ckpt).copies is None  # not looked for yet, and said so
    built = db.build_index(cat, "idx", tmp_path / "idx", factory="Flat")
    assert [(c.name, c.original_name) for c in built.copies] == [("x", "comp/x copy")]
    live = write(tmp_path / "more" / "x live.flac", 0.8 * _near_copy(_song(1)), SR)
    added = db.add(cat, built.path, [str(live)], ckpt, progress=False)
    assert {(c.name, c.original_name) for c in added.copies} <= {("x live", "x"), ("x live", "comp/x copy")}
    assert added.copies
    with Catalogue(cat) as c:
        assert len(c.copies()) == 1 + len(added.copies)
