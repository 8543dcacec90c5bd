"""Every model family through the user's commands, end to end: trainer (all three seed modes share one
loop; dynamic_online here), generate_fingerprints, create_faiss_indexes, recognize, with real audio
files, real checkpoints, real catalogues and real faiss (float or binary) indexes. Small settings keep
each family's run to seconds; the networks are the registered ones."""

import json

import faiss
import numpy as np
import pytest

from fplib import audio, cli, index
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_checkpoint, load_model, save_checkpoint
from fplib.errors import BadFileError
from fplib.models.registry import build_model, kind_of, variant
from tests.helpers import make_folders

# (variant, settings that make it tiny for a test)
FAMILIES = {
    "nafp_small": {"width": 0.125},
    "attn_small": {"width": 0.125},
    "samaf_small": {},
}


@pytest.fixture(scope="module", autouse=True)
def torch_engine():
    """The networks run in torch here: each family's ONNX Runtime path is checked against torch in its own
    tests (test_attn, test_samaf, test_engine), and exporting every family again would double this file's time."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FPLIB_ENGINE", "torch")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("families"), n_songs=4, seconds=6.0)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def trained(request, corpus, tmp_path_factory):
    """One epoch of the family's own objective through the trainer command, then its catalogue and index."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    rc = cli.trainer_main(
        [
            "-ep",
            "1",
            "-bs",
            "4",
            "-m",
            "fp",
            "-o",
            str(out),
            "--arch",
            name,
            "--model_settings",
            json.dumps(FAMILIES[name]),
            "--preload",
            "--workers",
            "0",
            "--items_per_song",
            "2",
            "--val_items_per_song",
            "3",
            "--no_amp",
            "dynamic_online",
            "-p",
            str(corpus["songs"]),
            "-ir",
            str(corpus["rir"]),
            "-bn",
            str(corpus["noise"]),
        ]
    )
    assert rc == 0
    ckpt = out / "fp.pt"
    assert (
        cli.main(
            [
                "generate_fingerprints",
                "-i",
                str(corpus["songs"]),
                "-o",
                str(out / "cat"),
                "--model",
                str(ckpt),
                "--no_progress",
            ]
        )
        == 0
    )
    assert cli.main(["create_faiss_indexes", "-i", str(out / "cat"), "-n", "fp", "-o", str(out / "idx")]) == 0
    return dict(name=name, out=out, ckpt=ckpt, cat=out / "cat", index=out / "idx" / "fp.index")


def test_the_checkpoint_records_the_family_and_its_training_defaults(trained):
    ck = load_checkpoint(trained["ckpt"])
    v = variant(trained["name"])
    assert ck["model_name"] == trained["name"]
    assert ck["train_config"]["temperature"] == v.training.get("temperature", 0.05)
    assert np.isfinite(ck["metrics"]["train_loss"]) and np.isfinite(ck["metrics"]["val_loss"])
    assert 0 < ck["metrics"]["val_pairs"] and "val_top1" in ck["metrics"]
    model, fe = load_model(trained["ckpt"])
    assert model.kind == kind_of(trained["name"]) and not model.training


def test_catalogue_and_index_hold_the_family_kind(trained):
    kind = kind_of(trained["name"])
    with Catalogue(trained["cat"]) as cat:
        assert cat.kind == kind and cat.model["name"] == trained["name"]
        v = cat.vectors(cat.songs()[0])
        loaded = index.load(trained["index"], cat)
    if kind == "binary":
        assert v.dtype == np.uint8 and v.shape[1] * 8 == loaded.d
        assert isinstance(loaded, faiss.IndexBinary) and index.read_meta(trained["index"])["metric"] == "hamming"
    else:
        assert v.dtype == np.float32 and v.shape[1] == loaded.d == 128
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
        assert not isinstance(loaded, faiss.IndexBinary)


def test_recognize_names_the_song_and_offset(trained, corpus, tmp_path, capsys):
    """A clean excerpt on the database's window grid has the database's own fingerprints, so even one
    epoch of training must name the song and the offset exactly, with the top score."""
    q = tmp_path / "q.wav"
    audio.write(q, audio.load(corpus["songs"] / "song_2.flac", offset=1.5, duration=3.0), 8000, subtype="FLOAT")
    capsys.readouterr()
    rc = cli.main(
        [
            "recognize",
            "--model",
            str(trained["ckpt"]),
            "--catalogue",
            str(trained["cat"]),
            "--index",
            str(trained["index"]),
            "--no-threshold",
            "--json",
            str(q),
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    best = out["matches"][0]
    assert best["song"] == "song_2" and best["offset_s"] == pytest.approx(1.5)
    assert best["score"] == pytest.approx(1.0, abs=1e-4)


def test_another_familys_checkpoint_is_refused(trained, corpus, tmp_path, capsys):
    others = [n for n in FAMILIES if n != trained["name"]]
    # a catalogue refuses fingerprints of another model (by checkpoint checksum)
    model, settings = build_model(others[0], **FAMILIES[others[0]])
    ck = load_checkpoint(trained["ckpt"])
    path = tmp_path / "other.pt"
    save_checkpoint(
        path,
        {"model": model.state_dict(), "model_name": others[0], "model_settings": settings, "frontend": ck["frontend"]},
    )
    capsys.readouterr()
    rc = cli.main(
        [
            "generate_fingerprints",
            "-i",
            str(corpus["songs"]),
            "-o",
            str(trained["cat"]),
            "--model",
            str(path),
            "--no_progress",
        ]
    )
    assert rc == 2 and "cannot be mixed" in capsys.readouterr().err
    # a checkpoint whose weights are another family's is named with the reason
    ck["model_name"] = others[0]
    save_checkpoint(tmp_path / "mislabelled.pt", ck)
    with pytest.raises(BadFileError, match=f"not those of the '{others[0]}' architecture|do not fit the '{others[0]}'"):
        load_model(tmp_path / "mislabelled.pt")


def test_listening_ranks_songs_as_the_recognizer_does(trained, corpus):
    """Live listening's incremental matching gives the recogniser's songs, offsets and scores for every
    kind of fingerprint (binary codes are compared by Hamming similarity in both)."""
    from fplib import listen
    from fplib.search import recognizer_from_files

    def rec():
        return recognizer_from_files(trained["ckpt"], trained["cat"], trained["index"], no_threshold=True)

    reference, listener = rec(), listen.Listener(rec(), window_s=3.0, change_s=None)
    wav = audio.load(corpus["songs"] / "song_1.flac", offset=0.7, duration=4.0)
    wav = wav + 0.05 * np.random.default_rng(0).standard_normal(len(wav)).astype(np.float32)
    checked = 0
    for k in range(0, len(wav), 2900):
        listener.feed(wav[k : k + 2900])
        buf = listener.buffer()
        if len(buf) < 8000:
            continue
        ours, theirs = listener.matches(), reference.recognize(buf, top=1000).matches
        assert [(m.name, m.offset_s) for m in ours] == [(m.name, m.offset_s) for m in theirs]
        np.testing.assert_allclose([m.score for m in ours], [m.score for m in theirs], atol=1e-5)
        checked += 1
    assert checked >= 6


def test_every_trained_model_is_evaluated_side_by_side(corpus, tmp_path):
    """A run with a float model (the catalogue's) and a binary one trained beside it: the comparison builds
    the other model's catalogue of the same songs under the same names and a faiss binary index, and one
    evaluation scores both on the same queries, each with its own threshold and database size."""
    from fplib import evaluate, runs
    from fplib.data import IRBank, NoiseBank
    from fplib.search import Recognizer

    run = runs.Run(tmp_path / "run")
    fe = None
    for name, train_dir in (
        ("nafp_small", run.train_dir("online")),
        ("samaf_small", run.train_dir("online", "samaf_small")),
    ):
        model, settings = build_model(name, **FAMILIES[name])
        fe = model.fe
        save_checkpoint(
            runs.checkpoint(train_dir),
            {"model": model.state_dict(), "model_name": name, "model_settings": settings, "frontend": fe.to_dict()},
        )
    assert sorted(run.trained()) == ["online", "online_samaf_small"]
    ckpt = run.checkpoint("online")
    model, fe = load_model(ckpt)
    from fplib.checkpoints import model_description
    from fplib.extraction import extract

    cat = Catalogue(run.catalogue, fe, model_description(ckpt, model))
    songs = audio.list_audio(corpus["songs"])
    extract(songs[:3], cat, model, progress=False, root=corpus["songs"])
    main = Recognizer(model, cat, index.build(cat, "main", run.index_dir), phases=2)
    others = evaluate.trained_systems(run, cat, skip_sha256=cat.model["sha256"], phases=2)
    assert list(others) == ["samaf_small online"]
    other = others["samaf_small online"]
    assert other.kind == "binary" and isinstance(other.index, faiss.IndexBinary)
    assert [s.name for s in other.catalogue.songs()] == [s.name for s in cat.songs()]
    systems = {"neural": main, **others}
    protocol = evaluate.Protocol(
        lengths=(3.0,), snrs=(10.0,), queries_per_cell=2, calibration_per_cell=2, noise_only_per_length=1
    )
    irs, noises = IRBank(audio.list_audio(corpus["rir"])), NoiseBank(audio.list_audio(corpus["noise"]))
    result = evaluate.benchmark(
        systems, {str(s): s.stem for s in songs[:3]}, [str(s) for s in songs[3:]], irs, noises, protocol, progress=False
    )
    head = result.headline(evaluate.db_bytes_per_second(systems, cat.songs()))
    assert [h["system"] for h in head] == ["neural", "samaf_small online"]
    # the float index's code + 8-byte id per 0.5 s (a catalogue this small keeps flat float codes); the binary
    # index's 16-byte code + 8-byte id
    assert [h["db_bytes_per_s"] for h in head] == [2 * index.bytes_per_vector(main.index), 48.0]
    assert index.bytes_per_vector(other.index) == 16 + 8
    assert np.isfinite(other.threshold_at(3.0)) and np.isfinite(main.threshold_at(3.0))  # each calibrated
    # built once: a second call reuses the catalogue and index of the same checkpoint
    again = evaluate.trained_systems(run, cat, skip_sha256=cat.model["sha256"])
    assert len(again["samaf_small online"].catalogue) == 3
