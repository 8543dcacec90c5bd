from pathlib import Path

import numpy as np
import pytest
import torch

from fplib import audio, cli, evaluate, heldout, index, search, storage, viz
from fplib import queries as fpqueries
from fplib.calibrate import CALIBRATION_LENGTHS, CALIBRATION_SNRS
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_checkpoint, model_description, save_checkpoint
from fplib.data import IRBank, NoiseBank
from fplib.extraction import extract
from fplib.features import FrontEnd
from fplib.landmark import Landmark
from fplib.models.registry import build_model
from fplib.search import Recognizer, calibrate
from tests.helpers import make_folders

FE = FrontEnd()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    d = make_folders(root, n_songs=5, seconds=12.0)
    songs = audio.list_audio(d["songs"])
    torch.manual_seed(0)
    model, settings = build_model("nafp_small", FE, width=0.125)
    ckpt = root / "model.pt"
    save_checkpoint(
        ckpt,
        {"model": model.state_dict(), "model_name": "nafp_small", "model_settings": settings, "frontend": FE.to_dict()},
    )
    cat = Catalogue(root / "cat", FE, model_description(ckpt))
    extract(songs[:3], cat, model.eval(), progress=False)
    path = index.build(cat, "t", root / "idx")
    irs, noises = IRBank(audio.list_audio(d["rir"])), NoiseBank(audio.list_audio(d["noise"]))
    return dict(root=root, songs=songs, cat=cat, path=path, model=model.eval(), irs=irs, noises=noises, ckpt=ckpt)


def test_queries_are_seeded_off_grid_and_written_out(setup, tmp_path):
    in_db = {str(s.path): s.name for s in setup["cat"].songs()}
    out = [str(p) for p in setup["songs"][3:]]
    qs = fpqueries.plan_queries(in_db, out, len(setup["irs"]), [1, 3], [0, 10], 3, seed=0)
    assert len(qs) == 2 * 2 * 3 * 2 and sum(q.in_database for q in qs) == 12
    assert qs == fpqueries.plan_queries(in_db, out, len(setup["irs"]), [1, 3], [0, 10], 3, seed=0)
    assert any(abs(q.start_s * 2 - round(q.start_s * 2)) > 1e-3 for q in qs), "positions are not on the 0.5-s grid"
    assert all(q.start_s + q.length_s <= 12.0 for q in qs)
    fpqueries.save_queries(tmp_path / "q.json", qs)
    assert fpqueries.load_queries(tmp_path / "q.json") == qs
    wav = fpqueries.render(qs[0], setup["irs"], setup["noises"])
    assert wav.shape == (int(qs[0].length_s * 8000),) and np.isfinite(wav).all() and np.abs(wav).max() <= 1
    np.testing.assert_array_equal(wav, fpqueries.render(qs[0], setup["irs"], setup["noises"]))


def test_repeats_are_found_and_silence_is_never_queried(tmp_path):
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 24000, 20000))
    gap = np.zeros(40000, np.float32)  # 5 s of digital silence
    song = np.concatenate([a, b, a, gap, c])  # a 2-s section played twice, at 0 s and 5 s
    audio.write(tmp_path / "loop.wav", song, 8000, subtype="FLOAT")
    assert fpqueries.find_repeats(song, 4000, 8000, 8000) == (5.5,)  # 1 s from inside the repeated section
    assert fpqueries.find_repeats(song, 20000, 8000, 8000) == ()  # inside b: no other copy
    half = song.copy()
    half[40000:56000] = 0.5 * a + 0.5 * rng.standard_normal(16000).astype(np.float32) * 0.1
    assert fpqueries.find_repeats(half, 4000, 8000, 8000) == ()  # similar is not the same audio
    qs = fpqueries.plan_queries({str(tmp_path / "loop.wav"): "loop"}, [], 1, [1, 3], [0], 40, seed=0)
    assert len(qs) == 80
    for q in qs:
        clip = song[int(round(q.start_s * 8000)) : int(round((q.start_s + q.length_s) * 8000))]
        assert audio.peak_dbfs(clip) > audio.SILENCE_DBFS, q  # never cut from the silent gap
        if q.length_s == 1 and q.start_s + 1 <= 1.95:
            assert len(q.repeats) == 1 and abs(q.repeats[0] - q.start_s - 5.0) < 1e-3, q
    # a prediction at the repeat counts as a hit; elsewhere it does not
    q = next(q for q in qs if q.repeats)
    rows = [{"system": "neural", "query": q.id, "predicted": ["loop"], "offsets": [q.repeats[0]], "accepted": True}]
    assert evaluate.score([q], rows)[0]["top1"] == 1.0
    rows[0]["offsets"] = [q.start_s + 2.0]
    assert evaluate.score([q], rows)[0]["top1"] == 0.0


def test_identical_embeddings_score_100_percent(setup):
    """Clean, grid-aligned queries of songs in the database: every system query is a hit."""
    cat = setup["cat"]
    rec = Recognizer(setup["model"], cat, setup["path"])
    rows, qs = [], []
    for i, s in enumerate(cat.songs()):
        q = fpqueries.Query(i, True, s.path, s.name, 2.0, 3.0, 99.0, 0, 0)
        wav = audio.load(s.path, offset=2.0, duration=3.0)
        r = rec.recognize(wav)
        rows.append(
            {
                "system": "neural",
                "query": i,
                "predicted": [m.name for m in r.matches],
                "offsets": [m.offset_s for m in r.matches],
                "accepted": r.in_database,
                "total_ms": 1.0,
            }
        )
        qs.append(q)
    table = evaluate.score(qs, rows)
    assert table[0]["top1"] == 1.0 and table[0]["song"] == 1.0 and table[0]["fp_rate"] is None
    rows[0]["offsets"][0] += 0.6  # an offset more than 0.5 s off is not a top-1 hit, but the song is right
    table = evaluate.score(qs, rows)
    assert table[0]["top1"] == pytest.approx(2 / 3) and table[0]["song"] == 1.0
    rows[1]["accepted"] = False  # rejected by the threshold: a miss, though ranked first
    table = evaluate.score(qs, rows)
    assert table[0]["top1"] == pytest.approx(1 / 3) and table[0]["ranked1"] == pytest.approx(2 / 3)


def test_held_out_is_enforced(setup, tmp_path):
    songs = [str(p) for p in setup["songs"]]
    heldout.check_held_out(songs[3:], songs[:3])
    link = tmp_path / "linked.flac"
    link.symlink_to(songs[0])
    with pytest.raises(heldout.HeldOutError, match="training split"):
        heldout.check_held_out([songs[4], str(link)], songs[:3])


def test_per_length_threshold_and_calibration(setup):
    rec = Recognizer(setup["model"], setup["cat"], setup["path"])
    out = [str(p) for p in setup["songs"][3:]]
    qs = fpqueries.plan_queries({}, out, len(setup["irs"]), [1, 3], [5], 4, seed=1)
    scores = evaluate.calibration_scores(rec, qs, setup["irs"], setup["noises"], [1, 3], 2, seed=2, progress=False)
    assert set(scores) == {1, 5} and all(len(v) >= 4 for v in scores.values())
    t = calibrate(scores, 0.0)
    assert t(1) > max(scores[1]) and t(5) > max(scores[5]) and min(t(1), t(5)) <= t(3) <= max(t(1), t(5))
    rec.threshold = t
    assert not any(rec.recognize(fpqueries.render(q, setup["irs"], setup["noises"])).in_database for q in qs)


def test_landmark_baseline_finds_clean_excerpts(setup):
    lm = Landmark()
    for s in setup["cat"].songs():
        lm.add(s.name, audio.load(s.path))
    s = setup["cat"].songs()[1]
    m = lm.match(audio.load(s.path, offset=3.3, duration=6.0))
    assert m and m[0].name == s.name and abs(m[0].offset_s - 3.3) < 0.1
    assert lm.bytes_per_second(36.0) > 0


def test_cli_index_and_recognize(setup, tmp_path, capsys):
    assert cli.create_faiss_indexes_main(["-i", str(setup["cat"].folder), "-n", "cli", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "cli.index").exists() and (tmp_path / "cli.json").exists()
    s = setup["cat"].songs()[0]
    storage.write_json(tmp_path / "q.json", {})
    common = [
        "--model",
        str(setup["ckpt"]),
        "--catalogue",
        str(setup["cat"].folder),
        "--index",
        str(tmp_path / "cli.index"),
    ]
    assert cli.recognize_main([s.path, *common]) == 2  # no threshold file: it will not guess
    assert "run calibrate_threshold" in capsys.readouterr().err
    rc = cli.recognize_main([s.path, str(tmp_path / "q.json"), *common, "--no-threshold"])
    out, err = capsys.readouterr()
    assert rc == 1 and f"{s.name} at 0.0 s" in out and "q.json: not a decodable audio file" in err
    assert cli.create_faiss_indexes_main(["-i", str(tmp_path / "none"), "-n", "x"]) == 2
    other = Catalogue(tmp_path / "other", FE, {"sha256": "another model"})
    extract(setup["songs"][:1], other, setup["model"], progress=False)
    index.build(other, "o", tmp_path)
    assert (
        cli.recognize_main(
            [
                s.path,
                "--model",
                str(setup["ckpt"]),
                "--catalogue",
                str(other.folder),
                "--index",
                str(tmp_path / "o.index"),
                "--no-threshold",
            ]
        )
        == 2
    )
    assert "made by another model" in capsys.readouterr().err


def test_cli_uses_the_phases_the_threshold_was_calibrated_with(setup, tmp_path, capsys):
    assert cli.create_faiss_indexes_main(["-i", str(setup["cat"].folder), "-n", "ph", "-o", str(tmp_path)]) == 0
    search.save_threshold(tmp_path / "ph.index", {"threshold": 0.0, "target_fpr": 0.05, "phases": 4})
    s = setup["cat"].songs()[2]
    common = [
        "--model",
        str(setup["ckpt"]),
        "--catalogue",
        str(setup["cat"].folder),
        "--index",
        str(tmp_path / "ph.index"),
    ]
    audio.write(tmp_path / "q.wav", audio.load(s.path, offset=1.375, duration=4.0), 8000)
    assert cli.recognize_main([str(tmp_path / "q.wav"), *common]) == 0
    assert f"{s.name} at 1.4 s (score 1.000, " in capsys.readouterr().out  # a phase 0.125 s in lies on the grid
    assert cli.recognize_main([str(tmp_path / "q.wav"), *common, "--phases", "2"]) == 2
    assert "calibrated with phases 4, not 2" in capsys.readouterr().err
    # a file written before the decision was recorded was calibrated on the best score
    assert cli.recognize_main([str(tmp_path / "q.wav"), *common, "--decision", "margin"]) == 2
    assert "calibrated with decision score, not margin" in capsys.readouterr().err


def test_query_songs_demo_split_or_the_catalogues_own_songs(setup, tmp_path):
    cat, songs = setup["cat"], [str(p) for p in setup["songs"]]
    rows = cat.songs()
    # the demo: the catalogue holds the split's in-database songs; a trained one is refused
    split = {"in_database": songs[1:3], "out_of_database": songs[3:]}
    qs = heldout.query_songs(rows, split, [])
    assert qs.demo_split and list(qs.in_db) == songs[1:3] and qs.out_db == songs[3:]
    with pytest.raises(heldout.HeldOutError):
        heldout.query_songs(rows, split, songs[1:2])
    # any other catalogue: its own songs at their recorded paths, trained ones left out (distractors)
    other = {"in_database": [str(tmp_path / "not_in_the_catalogue.flac")], "out_of_database": songs[3:]}
    qs = heldout.query_songs(rows, other, songs[:1])
    assert not qs.demo_split and qs.in_db == {s.path: s.name for s in rows[1:]} and qs.left_out == [rows[0].path]
    assert heldout.query_songs(rows, None, [], out_of_db=songs[4:]).out_db == songs[4:]
    with pytest.raises(heldout.HeldOutError, match="all 3 songs"):
        heldout.query_songs(rows, other, songs[:3])
    with pytest.raises(heldout.HeldOutError):  # a trained song is no out-of-database query either
        heldout.query_songs(rows, other, songs[3:4])
    with pytest.raises(ValueError, match="no out-of-database songs"):
        heldout.query_songs(rows, None, [])
    copy = tmp_path / "copy.flac"
    copy.write_bytes(Path(songs[0]).read_bytes())  # the same audio under another name is in the database
    with pytest.raises(ValueError, match="in the catalogue"):
        heldout.query_songs(rows, None, [], out_of_db=[str(copy)])


def test_headline_confidences_and_worked_query(setup):
    cat, irs, noises = setup["cat"], setup["irs"], setup["noises"]
    rec = Recognizer(setup["model"], cat, setup["path"], phases=2, decision="margin", threshold=0.0)
    in_db = {s.path: s.name for s in cat.songs()}
    qs = fpqueries.plan_queries(in_db, [str(p) for p in setup["songs"][3:]], len(irs), [1, 3], [10, 30], 1, seed=3)
    rows = evaluate.run(qs, irs, noises, neural=rec, landmark=None, progress=False)
    head = evaluate.headline(qs, rows, {"neural": 80.0})
    assert [(r["system"], r["length_s"]) for r in head] == [("neural", 1), ("neural", 3)]
    table = evaluate.score(qs, rows)
    for h in head:  # all SNRs pooled: the mean of the per-SNR cells (equal counts)
        cells = [t for t in table if t["length_s"] == h["length_s"]]
        assert h["n"] == sum(t["n"] for t in cells) == 2 and h["n_out"] == 2 and h["db_bytes_per_s"] == 80.0
        assert h["top1"] == pytest.approx(np.mean([t["top1"] for t in cells])) and h["top1"] <= h["ranked1"]
        assert h["fp_rate"] == pytest.approx(np.mean([t["fp_rate"] for t in cells]))
    conf = evaluate.confidences(qs, rows)
    assert set(conf) == {1, 3} and all(
        len(c["out"]) == 2 and len(c["right"]) + len(c["wrong"]) == 2 for c in conf.values()
    )
    q = evaluate.worked_query(qs, rows, 2.5)
    assert q.in_database and q.length_s == 3
    # with a condition's copies of the queries (their rows marked by an impossible confidence), the plain
    # queries' figures are unchanged and the condition is asked for by name
    qs_c = fpqueries.with_conditions(qs, ("mp3_64",))
    copies = qs_c[len(qs) :]
    assert [c.condition for c in copies] == ["mp3_64"] * len(qs)
    by_query = {r["query"]: r for r in rows if r["system"] == "neural"}
    rows_c = rows + [{**by_query[o.id], "query": c.id, "confidence": 99.0} for o, c in zip(qs, copies)]
    assert evaluate.confidences(qs_c, rows_c) == conf
    assert {v for c in evaluate.confidences(qs_c, rows_c, condition="mp3_64").values() for k in c for v in c[k]} == {
        99.0
    }
    assert not evaluate.worked_query(qs_c, rows_c, 2.5).condition
    md = viz.headline_markdown(head)
    assert md.count("\n| neural |") == 2 and "ranked first" in md and "80" in md
    r = rec.recognize(fpqueries.render(q, irs, noises))
    al = rec.alignment(fpqueries.render(q, irs, noises), r.best, context_s=1.0)
    assert al["similarity"].shape == (len(al["query_s"]), len(al["song_s"]))
    assert len(al["query_s"]) == 2 * 5 - 1  # 3 s at a 0.25-s hop
    assert al["song_s"][0] <= r.best.offset_s and al["song_s"][-1] >= r.best.offset_s + 2.0
    viz.plt.close(viz.plot_alignment(al, truth_s=q.start_s))
    viz.plt.close(viz.plot_confidences(conf, {1: 0.1, 3: 0.05}))


def test_the_catalogue_model_is_the_one_recorded(setup, tmp_path):
    from fplib.search import catalogue_model

    model, path = catalogue_model(setup["cat"])
    assert path == setup["ckpt"].resolve() and isinstance(model, torch.nn.Module)
    other = tmp_path / "other.pt"
    save_checkpoint(other, {**load_checkpoint(setup["ckpt"]), "note": "other weights"})
    with pytest.raises(ValueError, match="another model"):
        catalogue_model(setup["cat"], other)


def test_protocol_fields_defaults_and_checks():
    p = evaluate.Protocol()
    assert p.n_calibration == 2 * p.queries_per_cell and p.n_noise_only == p.n_calibration
    q = evaluate.Protocol(queries_per_cell=30, noise_only_per_length=4)
    assert (q.n_calibration, q.n_noise_only) == (60, 4)
    assert evaluate.Protocol(lengths=[1, 2]).lengths == (1.0, 2.0)  # a list from a notebook parameter
    assert CALIBRATION_LENGTHS == p.lengths and CALIBRATION_SNRS == p.snrs
    for bad in ({"lengths": []}, {"queries_per_cell": 0}, {"target_fpr": 1.0}, {"method": "guess"}):
        with pytest.raises(ValueError):
            evaluate.Protocol(**bad)
    assert evaluate.split_out_of_database(["a", "b", "c", "d", "e"]) == (["a", "c", "e"], ["b", "d"])


def test_benchmark_runs_several_systems_on_the_same_queries(setup):
    """Two neural systems and the landmark baseline in one call: each neural system gets its own
    threshold from the same calibration queries, and every system answers every test query; the
    result is what the protocol's steps give when run one by one."""
    cat, irs, noises = setup["cat"], setup["irs"], setup["noises"]
    systems = {
        "a": Recognizer(setup["model"], cat, setup["path"]),
        "b": Recognizer(setup["model"], cat, setup["path"], decision="margin"),
        "audfprint": evaluate.landmark_system(cat.songs(), 100.0),
    }
    in_db = {s.path: s.name for s in cat.songs()}
    out_db = [str(p) for p in setup["songs"][3:]]
    p = evaluate.Protocol(
        lengths=(1.0, 3.0), snrs=(10.0,), queries_per_cell=2, calibration_per_cell=2, noise_only_per_length=1, seed=5
    )
    res = evaluate.benchmark(systems, in_db, out_db, irs, noises, p, progress=False)
    assert res.calibration_songs == out_db[:1] and res.test_out_songs == out_db[1:]
    assert set(res.thresholds) == {"a", "b"} and systems["a"].threshold is res.thresholds["a"]
    assert res.thresholds["a"] != res.thresholds["b"]  # the margin is not the score
    assert {q.song for q in res.calibration_queries} == set(out_db[:1])
    assert res.queries == fpqueries.plan_queries(in_db, out_db[1:], len(irs), [1.0, 3.0], [10.0], 2, 5)
    assert len(res.rows) == 3 * len(res.queries)
    assert [r["system"] for r in res.rows[:3]] == ["a", "b", "audfprint"]
    assert {r["system"] for r in res.table} == {"a", "b", "audfprint"}
    ref = evaluate.calibration_scores(
        systems["a"], res.calibration_queries, irs, noises, [1.0, 3.0], 1, 7, progress=False
    )
    assert res.calibration_scores["a"] == ref
    head = res.headline(evaluate.db_bytes_per_second(systems, cat.songs()))
    assert [r["system"] for r in head] == ["a", "a", "b", "b", "audfprint", "audfprint"]
    assert all(r["db_bytes_per_s"] > 0 for r in head)
    with pytest.raises(TypeError, match="recogniser"):
        evaluate.benchmark({"x": object()}, in_db, out_db, irs, noises, p)


def test_models_that_did_not_learn_are_named_and_left_out(tmp_path):
    """A trained run whose best validation top-1 stays under 3x chance is named by untrained_models (and
    trained_systems skips it); one well above chance, or a checkpoint without a metrics log, is not."""
    from fplib import runs
    from fplib.train import learned

    run = runs.Run(tmp_path / "run")
    logs = {"online": [0.5, 0.9], "online_attn_small": [1 / 36, 2 / 36], "static": None}  # val top-1 per epoch
    for key, top1 in logs.items():
        folder = tmp_path / "run" / f"train_{key}"
        folder.mkdir(parents=True)
        (folder / runs.BEST).write_bytes(b"")
        for i, v in enumerate(top1 or []):
            storage.append_jsonl(folder / runs.METRICS_LOG, {"epoch": i, "val_top1": v, "val_pairs": 36, "best": True})
    left_out = evaluate.untrained_models(run)
    assert list(left_out) == ["online_attn_small"] and "2.0x chance" in left_out["online_attn_small"]
    assert learned({"val_top1": 3 / 36, "val_pairs": 36}) and not learned({"val_top1": 2 / 36, "val_pairs": 36})
