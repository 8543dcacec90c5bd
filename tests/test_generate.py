import json

import numpy as np
import pytest

from fplib import cli, storage
from fplib.generate import DatasetExistsError, GenerateConfig, generate_dataset
from tests.helpers import make_folders, tone, write


@pytest.fixture
def corpus(tmp_path):
    d = make_folders(tmp_path / "in", n_songs=5, seconds=8.0)
    (d["songs"] / "corrupt.mp3").write_text("not audio")
    write(d["songs"] / "silent.wav", np.zeros(8000 * 5, np.float32), 8000)
    write(d["songs"] / "short.wav", tone(0.6), 8000)
    return d


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_layout_json_and_pairs(tmp_path, corpus):
    r = generate_dataset(corpus["songs"], tmp_path / "out", corpus["rir"], corpus["noise"], progress=False)
    assert r.path == tmp_path / "out" / "Dataset_8" and r.complete
    assert {p.name for p in r.path.iterdir()} == {
        "train_set",
        "val_set",
        "Samples",
        "train_data.json",
        "val_data.json",
        "generation.json",
        "progress.jsonl",
    }
    train = json.loads((r.path / "train_data.json").read_text())
    val = json.loads((r.path / "val_data.json").read_text())
    assert not set(train) & set(val)
    assert set(train) | set(val) == {f"song_{i}.flac" for i in range(5)}
    assert all(len(v) == 5 for v in {**train, **val}.values())
    assert r.n_train == 5 * len(train) and r.n_val == 5 * len(val)
    # the seed's naming: "<song>_<second>.wav", and the pair file next to it
    for song, names in train.items():
        for name in names:
            stem = name.removesuffix(".wav")
            assert stem.rsplit("_", 1)[0] == song.removesuffix(".flac")
            assert 0 <= int(stem.rsplit("_", 1)[1]) < 8
            pair = np.load(r.path / "train_set" / f"{stem}.npy", allow_pickle=False)
            assert pair.shape == (2, 256, 32) and pair.dtype == np.float32
            assert pair.min() >= -80 and pair.max() == 0
            assert not np.array_equal(pair[0], pair[1])
    assert len(list((r.path / "val_set").glob("*.npy"))) == r.n_val
    samples = _tree(r.path / "Samples")
    assert len(samples) == 2 * 5 * 3 and sum(s.endswith("_augmented.wav") for s in samples) == 15
    meta = storage.read_json(r.path / "generation.json")
    assert meta["complete"] and meta["pairs"] == {"train": r.n_train, "val": r.n_val}
    assert set(meta["skipped_songs"]) == {"corrupt.mp3", "silent.wav", "short.wav"}
    reasons = dict((p.rsplit("/", 1)[1], why) for p, why in r.skipped)
    assert "not a decodable" in reasons["corrupt.mp3"] and "silent" in reasons["silent.wav"]
    assert "too short" in reasons["short.wav"]


def test_refuses_to_overwrite_unless_told(tmp_path, corpus):
    args = (corpus["songs"], tmp_path / "out", corpus["rir"], corpus["noise"])
    r = generate_dataset(*args, progress=False)
    before = {p: p.stat().st_mtime_ns for p in r.path.rglob("*.npy")}
    again = generate_dataset(*args, progress=False)  # same settings: nothing to do, nothing rewritten
    assert again.n_train == r.n_train and {p: p.stat().st_mtime_ns for p in r.path.rglob("*.npy")} == before
    with pytest.raises(DatasetExistsError, match="different settings"):
        generate_dataset(*args, cfg=GenerateConfig(number_segments=2), progress=False)
    r2 = generate_dataset(*args, cfg=GenerateConfig(number_segments=2), overwrite=True, progress=False)
    assert r2.n_train == 2 * r.n_train // 5


def test_resume_after_interruption_gives_identical_output(tmp_path, corpus):
    full = generate_dataset(corpus["songs"], tmp_path / "a", corpus["rir"], corpus["noise"], progress=False)
    part = generate_dataset(
        corpus["songs"], tmp_path / "b", corpus["rir"], corpus["noise"], progress=False, max_songs=3
    )
    assert not part.complete and not (part.path / "train_data.json").exists()
    assert not storage.read_json(part.path / "generation.json")["complete"]
    # a kill can leave a temporary file behind; it must not be taken for data
    (part.path / "train_set" / ".junk.tmp.npy").write_bytes(b"partial")
    done = generate_dataset(corpus["songs"], tmp_path / "b", corpus["rir"], corpus["noise"], progress=False)
    assert done.complete
    a, b = _tree(full.path), _tree(done.path)
    assert [x for x in b if "junk" not in x] == a
    for rel in a:
        if rel.endswith(".npy"):
            assert np.array_equal(np.load(full.path / rel), np.load(done.path / rel)), rel
    assert (full.path / "train_data.json").read_text() == (done.path / "train_data.json").read_text()


def test_different_seed_gives_different_pairs(tmp_path, corpus):
    a = generate_dataset(corpus["songs"], tmp_path / "a", corpus["rir"], corpus["noise"], progress=False)
    b = generate_dataset(
        corpus["songs"], tmp_path / "b", corpus["rir"], corpus["noise"], progress=False, cfg=GenerateConfig(seed=1)
    )
    assert storage.read_json(a.path / "train_data.json") != storage.read_json(b.path / "train_data.json")


def test_works_without_noise_or_rooms(tmp_path, corpus):
    r = generate_dataset(corpus["songs"], tmp_path / "out", progress=False)
    assert r.complete and r.n_train > 0


def test_seed_cli_flags_and_defaults(tmp_path, corpus, capsys, monkeypatch):
    ap = cli._generate_parser()
    ns = ap.parse_args(["-i", "x"])
    assert (ns.number_segments, ns.train_ratio, ns.impulse_response, ns.background_noise) == (5, 0.8, None, None)
    rc = cli.generate_training_dataset_main(
        [
            "-i",
            str(corpus["songs"]),
            "-n",
            "2",
            "-tr",
            "0.6",
            "-ir",
            str(corpus["rir"]),
            "-bn",
            str(corpus["noise"]),
            "-o",
            str(tmp_path / "cli"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "Dataset_8" in out and "corrupt.mp3" in out
    meta = storage.read_json(tmp_path / "cli" / "Dataset_8" / "generation.json")
    assert meta["settings"]["config"]["number_segments"] == 2 and meta["settings"]["config"]["train_ratio"] == 0.6
    assert cli.generate_training_dataset_main(["-i", str(tmp_path / "missing")]) == 2
    assert "folder not found" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # the seed's default output path is the current folder
    assert cli.generate_training_dataset_main(["-i", str(corpus["songs"]), "-n", "1"]) == 0
    assert (tmp_path / "Dataset_8" / "train_data.json").exists()


def test_songs_that_would_share_pair_files_are_refused(tmp_path):
    d = make_folders(tmp_path / "in", n_songs=2)
    write(d["songs"] / "song_0.wav", tone(3.0), 8000)  # song_0.flac exists too
    with pytest.raises(ValueError, match="would write the same pair files"):
        generate_dataset(d["songs"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
