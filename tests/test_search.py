import faiss
import numpy as np
import pytest
import torch

from fplib import audio, index, search
from fplib.catalogue import Catalogue
from fplib.errors import BadFileError
from fplib.extraction import extract, fingerprint, song_name
from fplib.features import FrontEnd, n_windows
from fplib.models.registry import build_model
from fplib.search import Recognizer, calibrate_threshold
from tests.helpers import make_folders, tone, write

FE = FrontEnd()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("nafp_small", FE, width=0.125)[0].eval()


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    root = tmp_path_factory.mktemp("songs")
    d = make_folders(root, n_songs=4, seconds=8.0)
    (d["songs"] / "broken.mp3").write_text("not audio")
    write(d["songs"] / "short.wav", tone(0.7), 8000)
    return d["songs"]


def _catalogue(tmp_path, songs, model):
    cat = Catalogue(tmp_path / "cat", FE, {"sha256": "test"})
    res = extract(audio.list_audio(songs), cat, model, progress=False, root=songs)
    return cat, res


def test_song_names_are_paths_under_the_folder(tmp_path):
    folder = tmp_path / "my music"
    assert song_name(folder / "album" / "track 1.mp3", folder) == "album/track 1"
    assert song_name(folder / "a.flac", str(folder) + "/") == "a"
    assert song_name(tmp_path / "elsewhere" / "b.wav", folder) == "b"  # not under the folder: the file's stem
    assert song_name(tmp_path / "c.ogg") == "c"


def test_extract_resumes_and_reports(tmp_path, songs, model):
    cat, res = _catalogue(tmp_path, songs, model)
    assert len(res.added) == 4 and sorted(p.rsplit("/", 1)[1] for p, _ in res.skipped) == ["broken.mp3", "short.wav"]
    for s in cat.songs():
        assert s.n_vectors == n_windows(int(round(s.duration * FE.sr)), FE) == 15
        v = cat.vectors(s)
        assert v.shape == (15, 128) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert [s.first_vector for s in cat.songs()] == [0, 15, 30, 45]
    again = extract(audio.list_audio(songs), cat, model, progress=False)
    assert not again.added and len(again.already) == 4  # same audio is never added twice
    cat.close()
    with pytest.raises(ValueError, match="front end"):
        Catalogue(tmp_path / "cat", FrontEnd(f_min=0.0))
    with pytest.raises(ValueError, match="cannot be mixed"):
        Catalogue(tmp_path / "cat", FE, {"sha256": "other"})
    with pytest.raises(FileNotFoundError, match="04_extract_fingerprints"):
        Catalogue(tmp_path / "nothing")


def test_recognize_finds_song_and_offset(tmp_path, songs, model):
    cat, _ = _catalogue(tmp_path, songs, model)
    path = index.build(cat, "demo", tmp_path / "idx")
    rec = Recognizer(model, cat, path, nprobe=8)
    # an untrained model's fingerprints all look alike, so votes are counted on the nearest neighbour only
    voter = Recognizer(model, cat, path, nprobe=8, k=1)
    for s in cat.songs():
        wav = audio.load(s.path, FE.sr)
        for start in (0.0, 2.5):
            q = wav[int(start * FE.sr) : int((start + 3) * FE.sr)]
            for method, r in (("sequence", rec.recognize(q)), ("vote", voter.recognize(q, method="vote"))):
                assert r.in_database and r.best.song_id == s.id and r.best.offset_s == start, (method, s.name)
            assert r.timings_ms["frontend_model_ms"] > 0
    best = rec.recognize(audio.load(cat.songs()[0].path, FE.sr)[:16000])
    assert best.best.score == pytest.approx(1.0, abs=1e-4)  # identical windows: cosine 1
    silent = rec.recognize(np.zeros(24000, np.float32))
    assert not silent.in_database and silent.reason == "silent query"
    with pytest.raises(ValueError, match="too short"):
        rec.recognize(np.zeros(4000, np.float32) + 0.1)
    with pytest.raises(audio.AudioError, match="not a decodable"):
        rec.recognize(songs / "broken.mp3")
    rec.threshold = 2.0  # nothing reaches it
    assert not rec.recognize(audio.load(cat.songs()[0].path, FE.sr)[:16000]).in_database


def test_query_phases_find_off_grid_starts(tmp_path, songs, model):
    cat, _ = _catalogue(tmp_path, songs, model)
    path = index.build(cat, "demo", tmp_path / "idx")
    plain, phased = Recognizer(model, cat, path, nprobe=8), Recognizer(model, cat, path, nprobe=8, phases=4)
    s = cat.songs()[1]
    start = 2.625  # 0.375 s before the grid point at 3.0 s
    q = audio.load(s.path, FE.sr)[int(start * FE.sr) : int((start + 3) * FE.sr)]
    r = phased.recognize(q)
    assert r.best.song_id == s.id and r.best.offset_s == pytest.approx(start)
    assert r.best.score == pytest.approx(1.0, abs=1e-4)  # the phase starting 0.375 s in lies on the grid
    assert plain.recognize(q).best.score < r.best.score
    assert phased.recognize(q, method="vote").matches  # the vote uses the first phase
    with pytest.raises(ValueError, match="phases"):
        Recognizer(model, cat, path, phases=3)  # 4000 samples do not split in 3


def test_margin_decision_compares_best_with_the_next_song(tmp_path, songs, model):
    cat, _ = _catalogue(tmp_path, songs, model)
    path = index.build(cat, "demo", tmp_path / "idx")
    q = audio.load(cat.songs()[0].path, FE.sr)[: 3 * FE.sr]
    by_score, by_margin = Recognizer(model, cat, path), Recognizer(model, cat, path, decision="margin")
    r, m = by_score.recognize(q), by_margin.recognize(q)
    assert r.confidence == r.best.score and len(m.matches) >= 2
    assert m.confidence == pytest.approx(m.matches[0].score - m.matches[1].score)
    by_margin.threshold = m.confidence + 1e-6  # the score alone would pass this; the margin does not
    assert by_margin.recognize(q).reason == "margin below the threshold" and m.best.score > by_margin.threshold
    with pytest.raises(ValueError, match="decision"):
        Recognizer(model, cat, path, decision="ratio")


def test_index_files_metric_and_settings(tmp_path, songs, model):
    cat, _ = _catalogue(tmp_path, songs, model)
    path = index.build(cat, "demo", tmp_path / "idx", nprobe=3)
    assert path.exists() and path.with_suffix(".json").exists()
    mapping = index.storage.read_json(path.with_suffix(".json"))
    assert mapping == {"0": "song_0", "15": "song_1", "30": "song_2", "45": "song_3"}  # the seed's format
    idx = index.load(path, cat)
    assert idx.metric_type == faiss.METRIC_INNER_PRODUCT and idx.ntotal == 60
    assert index.get_nprobe(idx) == 1  # 60 vectors train a single list
    meta = index.storage.read_json(path.with_suffix(".meta.json"))
    assert meta["factory"] == "IVF1,Flat" and meta["notes"]


def _synthetic_catalogue(tmp_path, n_songs=20, per_song=500, seed=0):
    rng = np.random.default_rng(seed)
    cat = Catalogue(tmp_path / "syn", FE, {"sha256": "synthetic"})
    for i in range(n_songs):
        v = rng.standard_normal((per_song, 128)).astype(np.float32)
        cat.add(f"song{i}.wav", v / np.linalg.norm(v, axis=1, keepdims=True), per_song / 2, f"c{i}", f"song{i}")
    return cat


@pytest.mark.slow
def test_ivfpq_defaults_polysemous_off_nprobe_really_set(tmp_path):
    cat = _synthetic_catalogue(tmp_path)
    path = index.build(cat, "big", tmp_path / "idx", nlist=64, m=32, nprobe=16)
    idx = index.load(path, cat)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(idx))
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.nlist == 64 and ivf.pq.M == 32
    assert not ivf.do_polysemous_training
    assert ivf.nprobe == 16  # as saved
    assert index.get_nprobe(index.load(path, cat, nprobe=5)) == 5  # set on loading
    assert index.get_nprobe(index.load(path, cat)) == 16  # for that index only: the file still holds 16
    assert index.bytes_per_vector(idx) == 40  # 32-byte PQ code + 8-byte id (IVF-PQ32)
    _, v = cat.all_vectors()
    _, found = idx.search(v[:200], 1)
    assert (found[:, 0] == np.arange(200)).mean() > 0.9  # a stored vector finds itself


@pytest.mark.slow
@pytest.mark.parametrize("factory", [None, "IVF16_HNSW32,PQ32x4fs"])  # the default, and the large catalogues' kind
def test_add_and_remove_songs_without_rebuilding(tmp_path, factory):
    cat = _synthetic_catalogue(tmp_path, n_songs=10)
    path = index.build(cat, "big", tmp_path / "idx", nlist=16, nprobe=16, factory=factory)
    rng = np.random.default_rng(9)
    v = rng.standard_normal((300, 128)).astype(np.float32)
    new = cat.add("new.wav", v / np.linalg.norm(v, axis=1, keepdims=True), 150, "new", "new song")
    with pytest.raises(ValueError, match="another state of the catalogue"):
        index.load(path, cat)  # the catalogue changed behind the index's back
    idx = index.add_songs(path, cat, [new])
    assert idx.ntotal == 10 * 500 + 300
    _, found = index.load(path, cat).search(cat.vectors(new)[:50], 1)
    assert (found[:, 0] >= new.first_vector).mean() > 0.9
    assert index.storage.read_json(path.with_suffix(".json"))[str(new.first_vector)] == "new song"
    gone = cat.songs()[3]
    gone_vectors = cat.vectors(gone)[:50]
    in_gone = lambda ids: (ids >= gone.first_vector) & (ids < gone.first_vector + 500)  # noqa: E731
    assert in_gone(index.load(path, cat).search(gone_vectors, 1)[1]).mean() > 0.9  # before: they find themselves
    idx = index.remove_songs(path, cat, [gone.id])
    assert idx.ntotal == 10 * 500 + 300 - 500 and gone.id not in {s.id for s in cat.songs()}
    _, found = index.load(path, cat).search(gone_vectors, 3)  # after: not even among the nearest three
    assert not in_gone(found).any()
    assert str(gone.first_vector) not in index.storage.read_json(path.with_suffix(".json"))


@pytest.mark.slow
def test_hnsw_coarse_quantiser_looks_further_than_nprobe(tmp_path):
    cat = _synthetic_catalogue(tmp_path, n_songs=4)
    path = index.build(cat, "hnsw", tmp_path / "idx", factory="IVF32_HNSW32,PQ32x4fs", nprobe=8)
    idx = index.load(path, cat)
    ivf = faiss.extract_index_ivf(idx)
    quantizer = faiss.downcast_index(ivf.quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat) and ivf.nprobe == 8 and quantizer.hnsw.efSearch == 16
    index.set_nprobe(idx, 20)
    assert quantizer.hnsw.efSearch == index.HNSW_EF_PER_PROBE * 20
    assert index.bytes_per_vector(idx) == 24  # 32 codes of 4 bits + 8-byte id


@pytest.mark.slow
def test_default_index_on_a_large_catalogue_points_to_the_measured_choice(tmp_path, capsys, monkeypatch):
    assert index.large_catalogue_choice(999_999) is None
    assert index.large_catalogue_choice(1_000_000) == ("IVF1024,PQ32x4fs", 64)
    assert index.large_catalogue_choice(50_000_000) == ("IVF4096,PQ32x4fs", 256)
    cat = _synthetic_catalogue(tmp_path, n_songs=4)  # 2,000 windows: "large" for this test
    monkeypatch.setattr(index, "LARGE_CATALOGUES", ((2_000, "IVF16,PQ32x4fs", 8),))
    index.build(cat, "default", tmp_path / "idx")
    assert "--factory IVF16,PQ32x4fs --nprobe 8 was measured" in capsys.readouterr().out
    index.build(cat, "chosen", tmp_path / "idx", factory="IVF16,PQ32x4fs", nprobe=8)  # chosen: no note
    assert "--factory" not in capsys.readouterr().out


@pytest.mark.slow
def test_merge_shards_built_from_one_quantiser(tmp_path):
    cat = _synthetic_catalogue(tmp_path, n_songs=8, per_song=400)
    ids, v = cat.all_vectors()
    base = index.new_index("IVF16,PQ16", 128)
    index.train_index(base, v, 10_000)
    paths = []
    for k, (lo, hi) in enumerate(((0, 1600), (1600, 3200))):
        shard = faiss.clone_index(base)
        shard.add_with_ids(v[lo:hi], ids[lo:hi])
        paths.append(tmp_path / f"shard{k}.index")
        faiss.write_index(shard, str(paths[-1]))
    assert index.merge(paths).ntotal == 3200


def test_threshold_calibration():
    scores = np.linspace(0, 1, 101)
    t = calibrate_threshold(scores, 0.05)
    assert np.mean(scores >= t) <= 0.05 and np.mean(scores >= t) >= 0.03
    assert np.mean(scores >= calibrate_threshold(scores, 0.0)) == 0.0
    with pytest.raises(ValueError):
        calibrate_threshold([], 0.01)


def test_the_threshold_file_has_one_writer_and_reads_back_equal(tmp_path):
    """save_threshold is the one writer of NAME.threshold.json, load_threshold its reader: what is written
    (a calibration's JSON, threshold by length and its measurements) reads back equal; settings the reader
    would refuse are never written."""
    from fplib.calibrate import Calibration, LengthCalibration, NegativesUsed

    rows = [LengthCalibration(1.0, 1, 0.4, 20, 20, 1, 0.05), LengthCalibration(3.0, 5, 0.3, 20, 0, None, None)]
    cal = Calibration(
        search.Threshold((1, 5, 19), (0.4, 0.3, 0.2)),
        0.05,
        4,
        "margin",
        rows,
        0.05,
        NegativesUsed(["a.wav"], ["b.wav"], skipped=[("c.wav", "not audio")], rooms=["r.wav"]),
    )
    path = search.save_threshold(tmp_path / "songs.index", cal.to_json())
    assert path == search.threshold_path(tmp_path / "songs.index") == tmp_path / "songs.threshold.json"
    assert search.load_threshold(path) == cal.to_json()
    saved = search.load_threshold(path)
    assert saved["per_length"][1] == {
        "length_s": 3.0,
        "windows": 5,
        "threshold": 0.3,
        "n_calibration": 20,
        "n_test": 0,
        "false_positives": None,
        "fpr": None,
    }
    assert saved["negatives"]["skipped"] == [["c.wav", "not audio"]] and saved["negatives"]["cross_fit"] is False
    with pytest.raises(BadFileError, match="not a valid threshold file"):
        search.save_threshold(tmp_path / "bad.index", {"threshold": float("nan")})
    assert not search.threshold_path(tmp_path / "bad.index").exists()


def test_no_other_code_writes_a_threshold_file():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    writers = [
        f"{f.relative_to(root)}: {line.strip()}"
        for f in [*root.glob("fplib/**/*.py"), *root.glob("benchmarks/**/*.py"), *root.glob("notebooks/*.ipynb")]
        for line in f.read_text(encoding="utf-8").splitlines()
        if "write_json(" in line and ("threshold_path" in line or "threshold.json" in line)
    ]
    assert not writers, writers


def test_answers_to_query_files_are_counted(tmp_path, songs, model):
    """Recognitions: an Answer per file in order (a file that cannot be read is an error, the rest go on),
    counted; an answer reads as the command prints it, as text or JSON."""
    cat, _ = _catalogue(tmp_path, songs, model)
    rec = Recognizer(model, cat, index.build(cat, "x", tmp_path), threshold=2.0)  # nothing is accepted
    files = [str(f) for f in audio.list_audio(songs)]
    run = search.Recognitions(rec, files, top=2)
    answers = list(run)
    assert [a.query for a in answers] == files
    bad = [a for a in answers if a.error is not None]
    assert sorted(a.query.rsplit("/", 1)[1] for a in bad) == ["broken.mp3", "short.wav"]
    assert (run.identified, run.not_in_database, run.failed) == (0, 4, 2)
    assert run.summary() == "6 queries: 0 identified, 4 not in the database, 2 failed"
    ok = next(a for a in answers if a.error is None)
    assert ok.lines()[0].startswith(f"{ok.query} [0.0-8.0 s]: not in the database (score below the threshold")
    assert ok.to_json()["in_database"] is False and ok.to_json()["song"] is None and ok.to_json()["file"] == ok.query
    assert bad[0].to_json() == {"file": bad[0].query, "error": bad[0].error}
    assert bad[0].lines() in ([f"error: {bad[0].error}"], [f"{bad[0].query}: error: {bad[0].error}"])
    matches = [search.Match(1, "a", 2.0, 0.9), search.Match(2, "b", 0.5, 0.4)]
    hit = search.Answer(
        "q.wav", search.Result(True, matches, confidence=0.5, threshold=0.3, query_s=3.0), decision="margin"
    )
    assert hit.lines() == [
        "q.wav [0.0-3.0 s]: a at 2.0 s (score 0.900, confidence 0.500 >= threshold 0.300)",
        "q.wav   2. b at 0.5 s (score 0.400)",
    ]
    assert hit.to_json()["song"] == "a" and hit.to_json()["decision"] == "margin"
    cat.close()


def test_empty_catalogue_is_an_error(tmp_path):
    cat = Catalogue(tmp_path / "empty", FE, {})
    with pytest.raises(ValueError, match="empty"):
        index.build(cat, "x", tmp_path)


def test_fingerprint_is_batched_consistently(model):
    wav = tone(5.0)
    a = fingerprint(wav, model, FE, batch=2)
    b = fingerprint(wav, model, FE, batch=256)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_small_catalogue_trains_pq_without_faiss_warnings(tmp_path, capfd):
    # fewer vectors than faiss's 39 per PQ centroid (9,984): the codebooks train on what there is,
    # deliberately, and faiss prints nothing (it used to print one warning per sub-quantiser)
    cat = _synthetic_catalogue(tmp_path, n_songs=8, per_song=250)
    n = len(cat.all_vectors()[0])
    assert 256 <= n < 39 * 256
    capfd.readouterr()
    path = index.build(cat, "small", tmp_path / "idx", nlist=16, m=32, nprobe=16)
    err = capfd.readouterr().err
    assert "WARNING" not in err, err
    idx = index.load(path, cat)  # kept alive: the IVF view below points into it
    ivf = faiss.downcast_index(faiss.extract_index_ivf(idx))
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.pq.M == 32
