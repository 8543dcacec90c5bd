"""The evaluation side of the real training corpus, on a tiny corpus folder written here by hand (no dpkg-deb,
no model): the leakage check by path and by decoded audio (fplib.corpus.leaks, listed_songs, training_list),
the held-out check against a corpus (fplib.heldout.check_held_out, model_corpora, check_not_in_corpus),
Calibration.missed, corpus_negatives, training_folders and resolve, sources.record_split, the shipped models by
name (fplib.pretrained, fplib.cli._model_path) and calibrate_threshold's refusal to write a threshold that
misses its target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fplib import audio, calibrate, corpus, heldout, pretrained, runs, search, sources, storage
from fplib.cli import _model_path, calibrate_threshold_main
from fplib.synth.music import synth_song
from fplib.synth.noise import synth_noise
from fplib.synth.rooms import simulate_rir

SR = 8000
SONG_S = 3.0
PKG = "fake-pkg"
VERSION = "0.1-1"
V1_SHA256 = "23efb8e81612901d78a2f7b16e86fe2d386ae72bd00a8dc8870e9140bff49946"  # fplib-small-v1.pt


def _song(seed: int) -> np.ndarray:
    return synth_song(seed, SONG_S, SR)[0]


def _record(
    root: Path, rel: str, role: str, split: str | None, status: str = "kept", name: str | None = None, **extra
) -> dict:
    path = root / rel
    wav = audio.load(path, SR, allow_silent=True)
    member = f"usr/share/{PKG}/{role}/{name or Path(rel).stem}.ogg"
    return {
        "key": f"{role}:{PKG}:{member}",
        "package": PKG,
        "version": VERSION,
        "file": member,
        "role": role,
        "split": split,
        "licence": "CC-BY-SA-4.0",
        "status": status,
        "path": rel,
        "seconds": round(wav.shape[0] / SR, 3),
        "sha256": corpus.decoded_sha256(wav),
        **extra,
    }


def _write_corpus(root: Path, rooms_val: bool = True) -> dict:
    """A corpus as build_corpus lays it out: two training songs, one held-out song, one duplicate moved out,
    a skipped song, a recorded noise (in the manifest), rooms and synthetic noises (not in it)."""
    songs = {
        "train/music/fake-pkg/alpha.flac": _song(1),
        "train/music/fake-pkg/beta.flac": _song(2),
        "val/music/fake-pkg/gamma.flac": _song(3),
        "duplicates/train/music/fake-pkg/alpha_fast.flac": _song(4),
    }
    for rel, wav in songs.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        audio.write(root / rel, wav, SR, subtype="PCM_16")
    others = {
        "val/noise/fake-pkg/wind.flac": synth_noise("white", 5, 2.0, SR),
        "train/noise/synthetic/pink_00.flac": synth_noise("pink", 6, 2.0, SR),
        "val/noise/synthetic/brown_01.flac": synth_noise("brown", 7, 2.0, SR),
        "train/rooms/plain/room_000.flac": simulate_rir(8, SR)[0],
    }
    if rooms_val:
        others["val/rooms/plain/room_000.flac"] = simulate_rir(9, SR)[0]
    for rel, wav in others.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        audio.write(root / rel, wav, SR, subtype="PCM_16")
    files = [
        _record(root, "train/music/fake-pkg/alpha.flac", "music", "train"),
        _record(root, "train/music/fake-pkg/beta.flac", "music", "train"),
        _record(root, "val/music/fake-pkg/gamma.flac", "music", "val"),
        _record(
            root,
            "duplicates/train/music/fake-pkg/alpha_fast.flac",
            "music",
            "train",
            status="duplicate",
            duplicate_of=f"music:{PKG}:usr/share/{PKG}/music/alpha.ogg",
            speed=0.95,
            share=0.9,
        ),
        _record(root, "val/noise/fake-pkg/wind.flac", "noise", "val"),
        {
            "key": f"music:{PKG}:usr/share/{PKG}/music/broken.ogg",
            "package": PKG,
            "version": VERSION,
            "file": f"usr/share/{PKG}/music/broken.ogg",
            "role": "music",
            "split": "train",
            "licence": "CC-BY-SA-4.0",
            "status": "skipped",
            "reason": "decoding failed",
        },
    ]
    manifest = {"kind": corpus.KIND, "sample_rate": SR, "packages": {PKG: VERSION}, "files": files}
    storage.write_json(root / corpus.MANIFEST, manifest)
    return manifest


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """The corpus in ``BASE/outputs/corpus``; ``BASE/elsewhere``: a copy of its held-out song as WAV (same
    decoded audio, other bytes), a copy of its duplicate, and an unrelated song."""
    base = tmp_path_factory.mktemp("corpus_eval")
    root = base / "outputs" / "corpus"
    manifest = _write_corpus(root)
    other = base / "elsewhere"
    other.mkdir()
    gamma = audio.load(root / "val/music/fake-pkg/gamma.flac", SR, allow_silent=True)
    audio.write(other / "gamma_copy.wav", gamma, SR, subtype="PCM_16")
    dup = audio.load(root / "duplicates/train/music/fake-pkg/alpha_fast.flac", SR, allow_silent=True)
    audio.write(other / "dup_copy.wav", dup, SR, subtype="PCM_16")
    audio.write(other / "unrelated.wav", _song(99), SR, subtype="PCM_16")
    return {
        "base": base,
        "root": root,
        "manifest": manifest,
        "other": other,
        "train": sorted((root / "train/music").rglob("*.flac")),
        "val": root / "val/music/fake-pkg/gamma.flac",
        "copy": other / "gamma_copy.wav",
        "dup_copy": other / "dup_copy.wav",
        "unrelated": other / "unrelated.wav",
    }


def test_fixture_copy_has_same_decoded_audio_but_other_bytes(fake):
    """The premise of the decoded-audio tests: the copy is another file with the same decoded samples."""
    assert fake["copy"].read_bytes() != fake["val"].read_bytes()
    assert corpus.audio_hashes(fake["copy"], SR) == {corpus.decoded_sha256(audio.load(fake["val"], SR))}
    hashes = corpus.manifest_songs(fake["root"] / "manifest.json")[1]
    assert corpus.audio_hashes(fake["unrelated"], SR).isdisjoint(hashes)


# -- 1. leaks, training_list, listed_songs ------------------------------------------------------------------


def test_manifest_songs_are_music_of_any_split_and_duplicates(fake):
    paths, hashes = corpus.manifest_songs(fake["root"] / corpus.MANIFEST)
    root = fake["root"].resolve()
    assert paths == {
        str(root / r)
        for r in (
            "train/music/fake-pkg/alpha.flac",
            "train/music/fake-pkg/beta.flac",
            "val/music/fake-pkg/gamma.flac",
            "duplicates/train/music/fake-pkg/alpha_fast.flac",
        )
    }
    noise = [r for r in fake["manifest"]["files"] if r["role"] == "noise"][0]
    assert len(hashes) == 4 and noise["sha256"] not in hashes


def test_leaks_by_path_and_by_decoded_audio(fake):
    songs = corpus.manifest_songs(fake["root"] / corpus.MANIFEST)
    queries = [
        fake["train"][0],
        fake["val"],
        fake["copy"],
        fake["dup_copy"],
        fake["unrelated"],
        fake["root"] / "val/noise/fake-pkg/wind.flac",
    ]
    assert corpus.leaks(queries, songs) == [str(q) for q in queries[:4]]
    # each way alone: by path only (no hashes) finds the corpus files, not the copies...
    assert corpus.leaks(queries, (songs[0], set())) == [str(q) for q in queries[:2]]
    # ...by decoded audio only (no paths) finds the copies too
    assert corpus.leaks(queries, (set(), songs[1])) == [str(q) for q in queries[:4]]


def test_leaks_by_path_through_a_relative_path_and_a_link(fake, tmp_path, monkeypatch):
    paths = corpus.manifest_songs(fake["root"] / corpus.MANIFEST)[0]
    link = tmp_path / "linked.flac"
    link.symlink_to(fake["val"])
    monkeypatch.chdir(fake["root"])
    assert corpus.leaks(["val/music/fake-pkg/gamma.flac", link], (paths, set())) == [
        "val/music/fake-pkg/gamma.flac",
        str(link),
    ]


def test_leaks_skips_an_undecodable_file(fake, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 100)
    songs = corpus.manifest_songs(fake["root"] / corpus.MANIFEST)
    assert corpus.leaks([bad, fake["copy"]], songs) == [str(fake["copy"])]


def test_training_list_and_listed_songs(fake, tmp_path):
    listed = corpus.training_list(fake["root"] / corpus.MANIFEST)
    assert listed["kind"] == "fplib-corpus-songs" and listed["sample_rate"] == SR
    assert listed["packages"] == {PKG: VERSION}
    assert sorted((s["split"], s["status"]) for s in listed["songs"]) == [
        ("train", "duplicate"),
        ("train", "kept"),
        ("train", "kept"),
        ("val", "kept"),
    ]
    assert all("path" not in s and len(s["sha256"]) == 64 for s in listed["songs"])
    path = tmp_path / "model.training.json"
    path.write_text(json.dumps(listed))
    songs = corpus.listed_songs(path)
    assert songs[0] == set()
    assert songs[1] == corpus.manifest_songs(fake["root"] / corpus.MANIFEST)[1]
    queries = [fake["copy"], fake["dup_copy"], fake["unrelated"], fake["train"][1]]
    assert corpus.leaks(queries, songs) == [str(fake["copy"]), str(fake["dup_copy"]), str(fake["train"][1])]


# -- 2. check_held_out against a corpus ------------------------------------------------------------------------


def test_check_held_out_refuses_every_corpus_song(fake):
    training = [str(p) for p in fake["train"]]
    heldout.check_held_out([str(fake["unrelated"])], training)  # unrelated music passes
    for q in (fake["train"][0], fake["val"], fake["copy"], fake["dup_copy"]):
        with pytest.raises(heldout.HeldOutError):
            heldout.check_held_out([str(fake["unrelated"]), str(q)], training)


def test_check_held_out_names_the_corpus(fake):
    with pytest.raises(heldout.HeldOutError, match="training corpus") as e:
        heldout.check_held_out([str(fake["copy"])], [str(p) for p in fake["train"]])
    assert str((fake["root"] / corpus.MANIFEST).resolve()) in str(e.value)
    assert str(fake["copy"]) in str(e.value)


def test_check_held_out_without_a_corpus_compares_paths_only(fake, tmp_path):
    """Training songs outside any corpus: a copy of them elsewhere is not refused (only the paths count)."""
    own = tmp_path / "own"
    own.mkdir()
    audio.write(own / "song.wav", audio.load(fake["val"], SR), SR, subtype="PCM_16")
    heldout.check_held_out([str(fake["val"]), str(fake["unrelated"])], [str(own / "song.wav")])
    with pytest.raises(heldout.HeldOutError, match="training split"):
        heldout.check_held_out([str(own / "song.wav")], [str(own / "song.wav")])


# -- 3. model_corpora, check_not_in_corpus ---------------------------------------------------------------------


def _checkpoint(path: Path, params: dict | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({} if params is None else {"params": params}, path)
    return path


def test_model_corpora_from_listed_songs_and_train_path(fake, tmp_path):
    ckpt = _checkpoint(tmp_path / "models" / "small.pt", {"train_path": str(fake["root"] / "train" / "music")})
    listed = tmp_path / "models" / "small.training.json"
    storage.write_json(listed, corpus.training_list(fake["root"] / corpus.MANIFEST))
    found = heldout.model_corpora(ckpt)
    manifest_path = (fake["root"] / corpus.MANIFEST).resolve()
    assert [where for _, where in found] == [str(listed), str(manifest_path)]
    assert found[0][0] == corpus.listed_songs(listed)
    assert found[1][0] == corpus.manifest_songs(manifest_path)
    for songs, where in found:
        heldout.check_not_in_corpus([str(fake["unrelated"])], songs, where)
        with pytest.raises(heldout.HeldOutError, match="training corpus"):
            heldout.check_not_in_corpus([str(fake["unrelated"]), str(fake["copy"])], songs, where)


def test_model_corpora_relative_outputs_corpus_param(fake, tmp_path, monkeypatch):
    """``corpus: outputs/corpus`` (the real profile's parameter) is found under $FPLIB_OUTPUTS."""
    monkeypatch.setenv(storage.OUTPUTS_ENV, str(fake["base"] / "outputs"))
    monkeypatch.chdir(tmp_path)
    ckpt = _checkpoint(tmp_path / "m.pt", {"corpus": "outputs/corpus", "model": "nafp_small"})
    found = heldout.model_corpora(ckpt)
    assert [where for _, where in found] == [str((fake["root"] / corpus.MANIFEST).resolve())]


def test_model_corpora_none_without_corpus(fake, tmp_path):
    assert heldout.model_corpora(_checkpoint(tmp_path / "a.pt", None)) == []
    assert heldout.model_corpora(_checkpoint(tmp_path / "b.pt", {"train_path": str(fake["other"])})) == []


# -- 4. Calibration.missed --------------------------------------------------------------------------------------


def _row(length: float, fpr: float | None, n_test: int) -> calibrate.LengthCalibration:
    fp = None if fpr is None else int(round(fpr * n_test))
    return calibrate.LengthCalibration(length, int(2 * length - 1), 0.1, n_test, n_test, fp, fpr)


def _calibration(rows: list[calibrate.LengthCalibration], target: float = 0.05) -> calibrate.Calibration:
    return calibrate.Calibration(
        threshold=search.Threshold(tuple(r.windows for r in rows), (0.1,) * len(rows)),
        target_fpr=target,
        phases=4,
        decision="margin",
        per_length=rows,
        measured_fpr=0.1,
        negatives=calibrate.NegativesUsed(["a"], ["b"]),
    )


def test_calibration_missed_beyond_two_standard_errors():
    # target 5 %, 100 held-back queries: one standard error is sqrt(0.05 x 0.95 / 100) = 2.18 %, the limit 9.36 %
    rows = [
        _row(1.0, 0.02, 100),
        _row(2.0, 0.09, 100),
        _row(3.0, 0.10, 100),
        _row(5.0, 0.30, 100),
        _row(10.0, None, 100),
        _row(20.0, 0.5, 0),
    ]
    cal = _calibration(rows)
    assert [r.length_s for r in cal.missed] == [3.0, 5.0]
    # fewer queries: a wider margin, so 10 % of 20 queries is within it (limit 14.7 %)
    assert _calibration([_row(1.0, 0.10, 20), _row(2.0, 0.15, 20)]).missed == [_row(2.0, 0.15, 20)]
    assert _calibration([_row(1.0, 0.05, 100)]).missed == []


def test_calibration_missed_with_a_zero_target():
    cal = _calibration([_row(1.0, 0.0, 100), _row(2.0, 0.01, 100)], target=0.0)
    assert [r.length_s for r in cal.missed] == [2.0]


# -- 5. corpus_negatives ----------------------------------------------------------------------------------------


def test_corpus_negatives_lists_the_held_out_files(fake):
    neg = calibrate.corpus_negatives(fake["root"])
    root = fake["root"]
    assert neg.music == [root / "val/music/fake-pkg/gamma.flac"] and neg.real and neg.where == str(root / "val/music")
    assert neg.rooms == [root / "val/rooms/plain/room_000.flac"]
    assert neg.noises == [root / "val/noise/fake-pkg/wind.flac", root / "val/noise/synthetic/brown_01.flac"]


def test_corpus_negatives_default_root_under_outputs(fake, monkeypatch):
    monkeypatch.setenv(storage.OUTPUTS_ENV, str(fake["base"] / "outputs"))
    neg = calibrate.corpus_negatives()
    assert neg is not None and [p.name for p in neg.music] == ["gamma.flac"]


def test_corpus_negatives_none_without_manifest_or_val_rooms(fake, tmp_path):
    plain = tmp_path / "plain"
    (plain / "val" / "music").mkdir(parents=True)
    audio.write(plain / "val" / "music" / "x.wav", _song(5), SR)
    assert calibrate.corpus_negatives(plain) is None
    assert calibrate.corpus_negatives(tmp_path / "missing") is None
    no_rooms = tmp_path / "no_rooms"
    _write_corpus(no_rooms, rooms_val=False)
    assert calibrate.corpus_negatives(no_rooms) is None
    # a val music folder without audio: also None
    empty = tmp_path / "empty_val"
    _write_corpus(empty)
    (empty / "val/music/fake-pkg/gamma.flac").unlink()
    assert calibrate.corpus_negatives(empty) is None


def test_calibrate_on_corpus_without_corpus_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no corpus"):
        calibrate.calibrate_on_corpus(object(), tmp_path)


# -- 6. training_folders, resolve -----------------------------------------------------------------------------------


def test_training_folders(fake):
    folders = corpus.training_folders(fake["root"])
    root = fake["root"]
    assert folders == {
        "train_set": root / "train/music",
        "train_impulse_responses": root / "train/rooms",
        "train_background_noises": root / "train/noise",
        "val_set": root / "val/music",
        "val_impulse_responses": root / "val/rooms",
        "val_background_noises": root / "val/noise",
    }
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        corpus.training_folders(fake["other"])


def test_resolve(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(storage.OUTPUTS_ENV, str(tmp_path / "outs"))
    assert corpus.resolve("outputs/x") == (tmp_path / "outs" / "x").resolve()
    assert corpus.resolve(Path("outputs") / "corpus" / "val") == (tmp_path / "outs" / "corpus" / "val").resolve()
    assert corpus.resolve(fake["root"]) == fake["root"]  # absolute: as it is
    (tmp_path / "here").mkdir()
    assert corpus.resolve("here") == Path("here")  # relative and present in the current folder
    assert corpus.resolve("params/real") == storage.project_root() / "params" / "real"  # else the project's
    monkeypatch.delenv(storage.OUTPUTS_ENV)
    assert corpus.resolve("outputs/x") == storage.project_root() / "outputs" / "x"


def test_training_folders_of_a_relative_outputs_path(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(storage.OUTPUTS_ENV, str(fake["base"] / "outputs"))
    folders = corpus.training_folders("outputs/corpus")
    assert folders["val_set"] == fake["root"].resolve() / "val" / "music"


# -- 7. record_split ---------------------------------------------------------------------------------------------


def test_record_split_tells_training_songs(fake, tmp_path):
    folders = corpus.training_folders(fake["root"])
    out = tmp_path / "run"
    assert sources.record_split(folders, out) == folders
    split = storage.read_json(runs.Run(out).online_split)
    assert sorted(split) == [
        "train/train_background_noises",
        "train/train_impulse_responses",
        "train/train_set",
        "val/val_background_noises",
        "val/val_impulse_responses",
        "val/val_set",
    ]
    assert split["val/val_set"] == [str(fake["val"].resolve())]
    songs = heldout.training_songs(out)
    assert songs == [str(p.resolve()) for p in fake["train"]]
    assert all(Path(s).is_absolute() for s in songs)
    # the run's training songs then refuse every song of the corpus as a query
    with pytest.raises(heldout.HeldOutError):
        heldout.check_held_out([str(fake["copy"])], songs)
    heldout.check_held_out([str(fake["unrelated"])], songs)


def test_record_split_of_relative_folders_writes_absolute_paths(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(fake["root"])
    out = tmp_path / "run"
    sources.record_split({"train_set": Path("train/music"), "val_set": Path("val/music")}, out)
    assert heldout.training_songs(out) == [str(p.resolve()) for p in fake["train"]]


# -- 8. the shipped models by name --------------------------------------------------------------------------------


@pytest.fixture
def shipped_dir(monkeypatch):
    monkeypatch.delenv(pretrained.DIR_ENV, raising=False)
    return Path(pretrained.__file__).resolve().parent


def test_pretrained_names_and_default_model(shipped_dir):
    assert pretrained.NAMES[0] == pretrained.NAME and "fplib-small-v1" in pretrained.NAMES  # v1 stays loadable
    assert pretrained.default_model(name="fplib-small-v1") == shipped_dir / "fplib-small-v1.pt"
    assert pretrained.default_model() == pretrained.default_model(name=pretrained.NAME)
    assert pretrained.card(name="fplib-small-v1")["sha256"] == V1_SHA256
    for bad in ("fplib-small-v9", "fplib-small-v1.pt", ""):
        with pytest.raises(pretrained.PretrainedError, match="not a shipped model"):
            pretrained.default_model(name=bad)
    assert pretrained.default_threshold(name="fplib-small-v9") is None
    with pytest.raises(pretrained.PretrainedError):
        pretrained.update_card({"licence": "x"}, name="nope")


def test_shipped_name(shipped_dir, tmp_path):
    assert pretrained.shipped_name(V1_SHA256) == "fplib-small-v1"
    assert pretrained.is_shipped(V1_SHA256)
    assert pretrained.shipped_name("0" * 64) is None and not pretrained.is_shipped("0" * 64)
    assert pretrained.shipped_name(None) is None and pretrained.shipped_name("") is None
    assert pretrained.shipped_name(V1_SHA256, tmp_path) is None  # a folder without the card


def test_model_path_by_name_or_file(shipped_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _model_path("fplib-small-v1") == str(shipped_dir / "fplib-small-v1.pt")
    assert _model_path(None) == str(shipped_dir / f"{pretrained.NAME}.pt")
    assert _model_path("some/file.pt") == "some/file.pt"
    assert _model_path("fplib-small-v9") == "fplib-small-v9"  # not a name: a file, checked where it is read
    # a file named like a shipped model, in the current folder, is that file
    (tmp_path / "fplib-small-v1").write_bytes(b"x")
    assert _model_path("fplib-small-v1") == "fplib-small-v1"


def test_recognizer_from_files_resolves_a_shipped_name(shipped_dir, tmp_path, monkeypatch):
    seen = []

    def fake_load(checkpoint, *a, **k):
        seen.append(checkpoint)
        raise RuntimeError("stop here")

    monkeypatch.setattr(search, "load_model", fake_load)
    monkeypatch.chdir(tmp_path)
    for model in ("fplib-small-v1", None, "my.pt"):
        with pytest.raises(RuntimeError, match="stop here"):
            search.recognizer_from_files(model, tmp_path / "cat", tmp_path / "x.index")
    default = str(shipped_dir / f"{pretrained.NAME}.pt")
    assert [str(s) for s in seen] == [str(shipped_dir / "fplib-small-v1.pt"), default, "my.pt"]


# -- 9. calibrate_threshold refuses to write a threshold that misses ------------------------------------------------


@pytest.fixture
def calibrate_cli(fake, tmp_path, monkeypatch):
    rows = [_row(1.0, 0.05, 40), _row(2.0, 0.25, 40), _row(3.0, None, 40)]
    cal = _calibration(rows)
    calls = {}

    def fake_recognizer(*a, **k):
        calls["recognizer"] = (a, k)
        return "recognizer"

    def fake_calibrate(rec, negatives, irs, noises, *a, **k):
        calls["calibrate"] = (rec, negatives, irs, noises)
        return cal

    neg = calibrate.corpus_negatives(fake["root"])
    monkeypatch.setattr(calibrate, "corpus_negatives", lambda root=None: neg)
    monkeypatch.setattr(calibrate, "calibrate_recognizer", fake_calibrate)
    monkeypatch.setattr(search, "recognizer_from_files", fake_recognizer)
    index = tmp_path / "index" / "songs.index"
    index.parent.mkdir()
    argv = ["--catalogue", str(tmp_path / "catalogue"), "--index", str(index), "--model", "m.pt", "--no_progress"]
    return {"argv": argv, "out": tmp_path / "index" / "songs.threshold.json", "calls": calls, "cal": cal, "neg": neg}


def test_calibrate_threshold_refuses_a_missed_target(calibrate_cli, capsys):
    c = calibrate_cli
    assert [r.length_s for r in c["cal"].missed] == [2.0]
    assert calibrate_threshold_main(c["argv"]) == 1
    out, err = capsys.readouterr()
    assert "error:" in err and "2.0 s" in err and "1.0 s" not in err and "was not written" in err
    assert "--accept_miss" in err
    assert not c["out"].exists()
    # the table marks the missed length only
    marked = [line for line in out.splitlines() if "misses the target" in line]
    assert len(marked) == 1 and marked[0].strip().startswith("2s")
    # the corpus's held-out songs, rooms and noises were used
    rec, negatives, irs, noises = c["calls"]["calibrate"]
    assert rec == "recognizer" and negatives == c["neg"].music
    assert irs.files == c["neg"].rooms and noises.files == c["neg"].noises
    assert "held-out songs of the real training corpus" in out


def test_calibrate_threshold_accept_miss_writes(calibrate_cli, capsys):
    c = calibrate_cli
    assert calibrate_threshold_main(c["argv"] + ["--accept_miss"]) == 0
    written = storage.read_json(c["out"])
    assert written == json.loads(json.dumps(c["cal"].to_json()))
    assert "error:" not in capsys.readouterr().err


def test_calibrate_threshold_writes_when_nothing_misses(calibrate_cli, monkeypatch):
    c = calibrate_cli
    c["cal"].per_length[1] = _row(2.0, 0.05, 40)
    assert c["cal"].missed == []
    assert calibrate_threshold_main(c["argv"]) == 0
    assert storage.read_json(c["out"])["per_length"][1]["fpr"] == 0.05
