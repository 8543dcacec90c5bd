"""The user's commands end to end, in process through their main(argv) and in a few subprocesses:
real audio files (flac, wav, m4a), real checkpoints of a freshly initialised tiny model, real
catalogues and faiss indexes, the real shipped-model machinery on an exported checkpoint."""

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fplib import audio, calibrate, cli, evaluate, pretrained, search, storage
from fplib import queries as fpqueries
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_checkpoint, load_model, save_checkpoint
from fplib.features import FrontEnd, n_windows
from fplib.models.registry import build_model, model_names
from tests.helpers import make_folders, music_like, tone

FE = FrontEnd()
ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(path: Path, seed: int = 0) -> Path:
    """A real checkpoint of a freshly initialised tiny model, with training state like trainer writes."""
    torch.manual_seed(seed)
    model, settings = build_model("nafp_small", FE, width=0.125)
    opt = torch.optim.Adam(model.parameters())
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_name": "nafp_small",
            "model_settings": settings,
            "frontend": FE.to_dict(),
            "optimizer": opt.state_dict(),
            "epoch": 3,
            "rng_cpu": torch.get_rng_state(),
            "metrics": {"val_top1": 0.5},
        },
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    d = make_folders(root, n_songs=3, seconds=8.0)
    songs = d["songs"]
    audio.write(songs / "phone" / "voice memo.m4a", music_like(8.0, 16000, seed=7), 16000)  # a phone recording
    (songs / "broken.mp3").write_text("not audio")
    (songs / "cover.jpg").write_bytes(b"\xff\xd8 not a song")
    for i in range(3):
        audio.write(root / "neg" / f"neg_{i}.wav", music_like(8.0, 8000, seed=100 + i), 8000)
    ckpt = _checkpoint(root / "model.pt")
    cat, idx = root / "cat", root / "idx"
    assert (
        cli.main(["generate_fingerprints", "-i", str(songs), "-o", str(cat), "--model", str(ckpt), "--no_progress"])
        == 1
    )  # broken.mp3 was skipped
    assert cli.main(["create_faiss_indexes", "-i", str(cat), "-n", "mine", "-o", str(idx)]) == 0
    return dict(
        root=root,
        songs=songs,
        ckpt=ckpt,
        cat=cat,
        index=idx / "mine.index",
        rooms=d["rir"],
        noises=d["noise"],
        neg=root / "neg",
    )


def _copy_db(world, dest: Path) -> tuple[Path, Path]:
    """A private copy of the catalogue and its index (for tests that change them)."""
    shutil.copytree(world["cat"], dest / "cat")
    shutil.copytree(world["index"].parent, dest / "idx")
    return dest / "cat", dest / "idx" / "mine.index"


def _query(world, tmp_path, song: str, start: float, length: float, ext: str = "wav") -> Path:
    path = tmp_path / f"q_{Path(song).stem}_{start}.{ext}"
    wav = audio.load(world["songs"] / song, offset=start, duration=length)
    audio.write(path, wav, 8000, subtype="FLOAT" if ext == "wav" else None)
    return path


# -- the dispatcher, --help, exit codes -------------------------------------------------------------


def _run(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "fplib.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, **kw
    )


@pytest.mark.slow
def test_fplib_lists_the_commands_and_help_exits_0():
    r = _run("--help")
    assert r.returncode == 0
    for name in cli.COMMANDS:
        line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 10, f"{name} has no one-line description"
    r = _run("recognize", "--help")
    assert r.returncode == 0 and "--no-threshold" in r.stdout and "--json" in r.stdout
    r = _run()
    assert r.returncode == 2 and "commands:" in r.stderr
    r = _run("nonsense")
    assert r.returncode == 2 and "unknown command 'nonsense'" in r.stderr
    r = _run("recognize", "q.wav", "--catalogue", "nowhere", "--index", "x.index", "--model", "none.pt")
    assert r.returncode == 2 and "none.pt" in r.stderr  # the missing file is named
    r = _run("recognize")
    assert r.returncode == 2 and "required" in r.stderr


def test_help_and_usage_errors_import_no_heavy_module():
    code = (
        "import sys\nfrom fplib import cli\n"
        "codes = [cli.main([c, '--help']) for c in cli.COMMANDS] + [cli.main(['db', 'add', '--help']),"
        " cli.main(['trainer', '-ep', 'x'])]\n"
        "print(codes, sorted(m for m in ('torch', 'faiss', 'numpy', 'soundfile') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    codes, heavy = r.stdout.strip().splitlines()[-1].split("] ")
    assert codes == "[" + ", ".join(["0"] * (len(cli.COMMANDS) + 1) + ["2"]) and heavy == "[]", r.stdout + r.stderr


def _parsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, as its main builds it (recorded when it parses --help)."""
    seen = {}
    real = argparse.ArgumentParser.parse_args

    def record(self, *a, **kw):
        seen.setdefault(self.prog, self)
        return real(self, *a, **kw)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", record)
    for name in cli.COMMANDS:
        assert cli.main([name, "--help"]) == 0
    return seen


def _actions(parser: argparse.ArgumentParser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                yield from _actions(sub)
        elif not isinstance(a, argparse._HelpAction):
            yield parser.prog, a


def test_every_option_has_help_text(monkeypatch, capsys):
    parsers = _parsers(monkeypatch)
    assert len(parsers) == len(cli.COMMANDS)
    missing = [
        (prog, a.option_strings or a.dest)
        for p in parsers.values()
        for prog, a in _actions(p)
        if not (a.help or "").strip()
    ]
    assert not missing


def test_trainer_options_may_follow_the_mode():
    ap = cli._trainer_parser()
    ns = ap.parse_args(["static", "-tp", "A", "-vp", "B", "-ep", "3", "--arch", "nafp_small", "--preload"])
    assert (ns.epochs, ns.arch, ns.preload, ns.batch_size, ns.train_path) == (3, "nafp_small", True, None, "A")
    ns = ap.parse_args(["-ep", "5", "-bs", "16", "dynamic_online", "-p", "s", "-ir", "i", "-bn", "n", "-m", "x"])
    assert (ns.epochs, ns.batch_size, ns.model_name, ns.train_ratio) == (5, 16, "x", 0.8)  # not reset by the mode
    ns = ap.parse_args(["dynamic", "-tp", "a", "-vp", "b"])
    # TrainConfig's defaults; a family setting (batch, optimiser, lr...) left None is the architecture's
    assert (ns.epochs, ns.batch_size, ns.optim, ns.output_path, ns.lr, ns.no_amp) == (200, None, None, ".", None, False)
    arch = next(a for a in ap._actions if "--arch" in a.option_strings)
    assert arch.choices == model_names() and all(name in arch.help for name in model_names())  # from the registry


# -- generate_fingerprints ------------------------------------------------------------------------


@pytest.mark.slow
def test_generate_fingerprints_reports_skips_and_resumes(world, tmp_path, capsys):
    with Catalogue(world["cat"]) as cat:
        names = sorted(s.name for s in cat.songs())
        assert names == ["phone/voice memo", "song_0", "song_1", "song_2"]  # the m4a is in, named by its path
        assert cat.model["sha256"] == storage.file_checksum(world["ckpt"])
    more = tmp_path / "more"
    shutil.copytree(world["songs"], more)
    audio.write(more / "new.flac", music_like(6.0, 16000, seed=42), 16000)
    cat = tmp_path / "cat"
    shutil.copytree(world["cat"], cat)
    capsys.readouterr()
    rc = cli.generate_fingerprints_main(
        ["-i", str(more), "-o", str(cat), "--model", str(world["ckpt"]), "--no_progress"]
    )
    out, err = capsys.readouterr()
    assert rc == 1  # broken.mp3 again
    assert "1 song(s) added" in out and "4 already there" in out and "1 skipped" in out
    assert f"{more / 'broken.mp3'}: not a decodable audio file" in err and "cover.jpg" in err
    rc = cli.generate_fingerprints_main(
        [
            "-i",
            str(more / "new.flac"),
            str(more / "song_0.flac"),
            "-o",
            str(cat),
            "--model",
            str(world["ckpt"]),
            "--no_progress",
        ]
    )
    assert rc == 0 and "0 song(s) added" in capsys.readouterr().out  # nothing new, nothing failed
    assert (
        cli.generate_fingerprints_main(["-i", str(tmp_path / "nowhere"), "-o", str(cat), "--model", str(world["ckpt"])])
        == 2
    )
    assert f"{tmp_path / 'nowhere'}: no such file or folder" in capsys.readouterr().err


def test_a_copy_of_the_checkpoint_is_the_same_model(world, tmp_path, capsys):
    """The catalogue names its model by checksum: a copy at another path is accepted, other weights are not."""
    copy = tmp_path / "elsewhere" / "renamed.pt"
    copy.parent.mkdir()
    shutil.copyfile(world["ckpt"], copy)
    cat, idx = _copy_db(world, tmp_path)
    audio.write(tmp_path / "new" / "extra.wav", music_like(6.0, 8000, seed=43), 8000)
    assert (
        cli.generate_fingerprints_main(
            ["-i", str(tmp_path / "new"), "-o", str(cat), "--model", str(copy), "--no_progress"]
        )
        == 0
    )
    other = _checkpoint(tmp_path / "other.pt", seed=1)
    assert (
        cli.generate_fingerprints_main(
            ["-i", str(tmp_path / "new"), "-o", str(cat), "--model", str(other), "--no_progress"]
        )
        == 2
    )
    assert "cannot be mixed" in capsys.readouterr().err
    q = _query(world, tmp_path, "song_1.flac", 2.0, 3.0)
    assert (
        cli.recognize_main(
            [
                str(q),
                "--model",
                str(copy),
                "--catalogue",
                str(world["cat"]),
                "--index",
                str(world["index"]),
                "--no-threshold",
            ]
        )
        == 0
    )
    assert (
        cli.recognize_main(
            [
                str(q),
                "--model",
                str(other),
                "--catalogue",
                str(world["cat"]),
                "--index",
                str(world["index"]),
                "--no-threshold",
            ]
        )
        == 2
    )
    assert "made by another model" in capsys.readouterr().err


# -- recognize ------------------------------------------------------------------------------------


def test_recognize_without_a_threshold_refuses_unless_told(world, tmp_path, capsys):
    q = _query(world, tmp_path, "song_2.flac", 2.5, 3.0)
    common = ["--model", str(world["ckpt"]), "--catalogue", str(world["cat"]), "--index", str(world["index"])]
    assert not search.threshold_path(world["index"]).exists()
    assert cli.recognize_main([str(q), *common]) == 2
    err = capsys.readouterr().err
    assert "calibrate_threshold --catalogue" in err and "--no-threshold" in err
    assert cli.recognize_main([str(q), *common, "--no-threshold", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "every query is accepted" in out
    assert f"{q} [0.0-3.0 s]: song_2 at 2.5 s (score 1.000, confidence" in out and "no threshold" in out
    assert "1 queries: 1 identified, 0 not in the database, 0 failed" in out


def test_recognize_json_lines(world, tmp_path, capsys):
    q = _query(world, tmp_path, "phone/voice memo.m4a", 1.5, 4.0, ext="m4a")  # an m4a query of an m4a song
    bad = tmp_path / "bad.m4a"
    bad.write_text("nope")
    rc = cli.recognize_main(
        [
            str(q),
            str(bad),
            "--model",
            str(world["ckpt"]),
            "--catalogue",
            str(world["cat"]),
            "--index",
            str(world["index"]),
            "--no-threshold",
            "--json",
            "--phases",
            "4",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 1 and "1 failed" in err
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert len(lines) == 2
    r, e = lines
    assert r["file"] == str(q) and r["in_database"] and r["song"] == "phone/voice memo"
    assert abs(r["offset_s"] - 1.5) <= 0.125 and r["score"] > 0.9 and r["threshold"] is None
    assert r["query_start_s"] == 0.0 and abs(r["query_end_s"] - 4.0) < 0.1
    assert r["confidence"] == pytest.approx(r["matches"][0]["score"])  # decision "score" without a threshold file
    assert set(r["timings_ms"]) == {"frontend_model_ms", "search_ms"} and 1 <= len(r["matches"]) <= 3
    assert e["file"] == str(bad) and "not a decodable audio file" in e["error"]


# -- calibrate_threshold --------------------------------------------------------------------------

CHEAP = ["--lengths", "1", "2", "--snrs", "10", "--queries", "2", "--noise_only", "1", "--phases", "1", "--no_progress"]


def test_calibrate_threshold_on_own_negatives_then_recognize_uses_it(world, tmp_path, capsys):
    cat, idx = _copy_db(world, tmp_path)
    negatives = [str(world["neg"]), str(world["songs"] / "song_0.flac")]  # a song of the catalogue is left out
    rc = cli.calibrate_threshold_main(
        [
            "--catalogue",
            str(cat),
            "--index",
            str(idx),
            "--negatives",
            *negatives,
            "--model",
            str(world["ckpt"]),
            "--rooms",
            str(world["rooms"]),
            "--noises",
            str(world["noises"]),
            "--decision",
            "score",
            "--fpr",
            "0.1",
            *CHEAP,
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    saved = storage.read_json(search.threshold_path(idx))
    assert (saved["phases"], saved["decision"], saved["target_fpr"]) == (1, "score", 0.1)
    assert saved["threshold"]["windows"] == [1, 3] and len(saved["threshold"]["values"]) == 2
    assert [r["length_s"] for r in saved["per_length"]] == [1.0, 2.0]
    assert all(r["n_test"] == 3 and r["n_calibration"] == 3 for r in saved["per_length"])  # 2 queries + 1 noise
    assert 0 <= saved["measured_fpr"] <= 1
    assert len(saved["negatives"]["calibration"]) == 2 and len(saved["negatives"]["test"]) == 1  # halves
    assert "song_0.flac" in saved["negatives"]["skipped"][0][0] and "song_0.flac" in err
    assert "measured" in out and "held-back" in out
    for r in saved["per_length"]:
        assert f"{r['length_s']:g}s" in out and f"{r['threshold']:.3f}" in out
    # recognize reads it: its phases and decision, its threshold for the query's length
    q = _query(world, tmp_path, "song_1.flac", 1.0, 2.0)
    assert (
        cli.recognize_main(
            [str(q), "--model", str(world["ckpt"]), "--catalogue", str(cat), "--index", str(idx), "--json"]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    t = search.Threshold(tuple(saved["threshold"]["windows"]), tuple(saved["threshold"]["values"]))
    assert r["threshold"] == pytest.approx(t(n_windows(2 * FE.sr, FE))) and r["decision"] == "score"
    assert r["in_database"] == (r["confidence"] >= r["threshold"])
    assert (
        cli.calibrate_threshold_main(
            [
                "--catalogue",
                str(cat),
                "--index",
                str(idx),
                "--negatives",
                str(world["songs"] / "song_0.flac"),
                "--model",
                str(world["ckpt"]),
                "--rooms",
                str(world["rooms"]),
                "--noises",
                str(world["noises"]),
                *CHEAP,
            ]
        )
        == 2
    )
    assert "at least 2 usable" in capsys.readouterr().err
    assert cli.calibrate_threshold_main(["--catalogue", str(cat), "--index", str(idx), "--fpr", "1.5"]) == 2


def test_calibration_measures_the_false_positive_rate_on_the_held_back_half(world, tmp_path):
    rec = search.recognizer_from_files(world["ckpt"], world["cat"], world["index"], no_threshold=True)
    from fplib.data import IRBank, NoiseBank

    irs, noises = IRBank(audio.list_audio(world["rooms"])), NoiseBank(audio.list_audio(world["noises"]))
    negs = audio.list_audio(world["neg"])
    cal = calibrate.calibrate_recognizer(rec, negs, irs, noises, 0.0, (1.0,), (10.0,), 2, 1, progress=False)
    assert rec.threshold is cal.threshold
    # fpr 0: the threshold lies above every calibration score; the held-back half is measured against it
    again = evaluate.calibration_scores(
        rec,
        fpqueries.plan_queries({}, [str(negs[1])], len(irs), [1.0], [10.0], 2, 11),
        irs,
        noises,
        [1.0],
        1,
        12,
        progress=False,
    )
    fp = int(np.sum(np.asarray(again[1]) >= cal.threshold(1)))
    assert cal.per_length[0].false_positives == fp and cal.per_length[0].n_test == len(again[1]) == 3
    assert cal.measured_fpr == fp / 3


def test_cross_fitted_calibration_measures_both_halves_and_fits_on_both(world):
    rec = search.recognizer_from_files(world["ckpt"], world["cat"], world["index"], no_threshold=True)
    from fplib.data import IRBank, NoiseBank

    irs, noises = IRBank(audio.list_audio(world["rooms"])), NoiseBank(audio.list_audio(world["noises"]))
    negs = audio.list_audio(world["neg"])
    cal = calibrate.calibrate_recognizer(
        rec, negs, irs, noises, 0.0, (1.0,), (10.0,), 2, 1, progress=False, cross_fit=True
    )
    halves = [
        evaluate.calibration_scores(
            rec,
            fpqueries.plan_queries({}, [str(f) for f in files], len(irs), [1.0], [10.0], 2, 10 * h + 1),
            irs,
            noises,
            [1.0],
            1,
            10 * h + 2,
            progress=False,
        )[1]
        for h, files in enumerate((negs[0::2], negs[1::2]))
    ]  # the halves alternate in sorted order
    # fpr 0: each half's threshold lies just above its own top score, so the other half's scores above it are
    # its false positives; the threshold kept lies above both halves' scores
    fp = sum(int(np.sum(np.asarray(halves[1 - h]) > max(halves[h]))) for h in (0, 1))
    n = len(halves[0]) + len(halves[1])
    assert cal.per_length[0].n_test == cal.per_length[0].n_calibration == n == 2 * 2 + 2 * 1  # + noise-only
    assert cal.per_length[0].false_positives == fp and cal.measured_fpr == fp / n
    assert max(halves[0] + halves[1]) < cal.threshold(1) == pytest.approx(max(halves[0] + halves[1]), abs=1e-9)
    assert fp >= 1  # two songs' top scores differ: one of the two folds measures a false positive
    assert cal.negatives.cross_fit is True and rec.threshold is cal.threshold


def test_calibrate_threshold_default_negatives_are_built_in_and_cached(world, tmp_path, capsys):
    cat, idx = _copy_db(world, tmp_path)
    rc = cli.calibrate_threshold_main(
        [
            "--catalogue",
            str(cat),
            "--index",
            str(idx),
            "--model",
            str(world["ckpt"]),
            "--builtin_songs",
            "2",
            "--lengths",
            "1",
            "--snrs",
            "5",
            "--queries",
            "1",
            "--noise_only",
            "0",
            "--phases",
            "1",
            "--no_progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "built-in synthetic songs" in out
    corpus = storage.outputs_root() / "calibration_corpus" / "songs2"
    manifest = storage.read_json(corpus / "corpus.json")
    assert manifest["spec"]["seed"] == calibrate.CALIBRATION_SEED != 0 and manifest["spec"]["n_songs"] == 2
    saved = storage.read_json(search.threshold_path(idx))
    used = saved["negatives"]["calibration"] + saved["negatives"]["test"]
    assert len(used) == 2 and all(Path(f).parent == corpus / "music" for f in used)
    assert all(Path(f).parent == corpus / "rir" for f in saved["negatives"]["rooms"])
    before = (corpus / "corpus.json").stat().st_mtime_ns
    calibrate.calibration_corpus(2, progress=False)
    assert (corpus / "corpus.json").stat().st_mtime_ns == before  # cached, not generated again


# -- fplib db -------------------------------------------------------------------------------------


def test_db_add_remove_list_all_or_nothing(world, tmp_path, capsys):
    cat, idx = _copy_db(world, tmp_path)
    new = tmp_path / "new"
    audio.write(new / "album" / "a.flac", music_like(6.0, 16000, seed=50), 16000)
    audio.write(new / "album" / "b.m4a", music_like(6.0, 16000, seed=51), 16000)
    db = ["--catalogue", str(cat), "--index", str(idx)]
    model = ["--model", str(world["ckpt"])]

    def state():
        with Catalogue(cat) as c:
            return len(c), c.state(), storage.read_json(idx.with_suffix(".meta.json"))["ntotal"]

    before = state()
    (tmp_path / "bad.wav").write_text("nope")
    for problem, args in (
        ("not a decodable", [str(new), str(tmp_path / "bad.wav")]),
        ("already in the catalogue", [str(new), str(world["songs"] / "song_1.flac")]),
        ("given twice", [str(new), str(new / "album" / "a.flac")]),
        ("no such file", [str(new), str(tmp_path / "none.wav")]),
    ):
        assert cli.main(["db", "add", *db, *model, *args, "--no_progress"]) == 2, problem
        err = capsys.readouterr().err
        assert problem in err and "nothing was added" in err
        assert state() == before  # all or nothing
    assert cli.main(["db", "add", *db, *model, str(new), "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert "album/a" in out and "album/b" in out and "2 song(s) added" in out
    q = tmp_path / "q.wav"
    audio.write(q, audio.load(new / "album" / "b.m4a", offset=1.0, duration=3.0), subtype="FLOAT")
    assert cli.recognize_main([str(q), *db, *model, "--no-threshold", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["song"] == "album/b"  # found through the updated index
    assert cli.main(["db", "list", *db, "--json"]) == 0
    listed = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [s["name"] for s in listed][-2:] == ["album/a", "album/b"] and len(listed) == before[0] + 2
    ids = {s["name"]: s["id"] for s in listed}
    assert cli.main(["db", "remove", *db, "album/a", "nope"]) == 2
    assert "'nope': no song" in capsys.readouterr().err and state()[0] == before[0] + 2
    assert cli.main(["db", "remove", *db, "album/a", str(ids["song_0"])]) == 0
    assert "2 song(s) removed" in capsys.readouterr().out
    assert cli.main(["db", "list", *db]) == 0
    out = capsys.readouterr().out
    assert "album/a" not in out and "song_0" not in out and "album/b" in out
    with Catalogue(cat) as c:
        assert len(c) == before[0] and storage.read_json(idx.with_suffix(".meta.json"))["ntotal"] == sum(
            s.n_vectors for s in c.songs()
        )
    assert cli.main(["db", "list", "--catalogue", str(tmp_path / "none")]) == 2
    assert cli.main(["db"]) == 2


# -- the shipped model ----------------------------------------------------------------------------


def test_export_writes_a_slim_half_precision_model_and_its_card(world, tmp_path):
    threshold = {
        "threshold": {"windows": [1, 9], "values": [0.5, 0.3]},
        "target_fpr": 0.05,
        "phases": 1,
        "decision": "score",
    }
    card = pretrained.export(
        world["ckpt"],
        tmp_path / f"{pretrained.NAME}.pt",
        {"threshold": threshold, "training_command": "trainer ...", "licence": "MIT", "sha256": "cannot be overridden"},
    )
    path = tmp_path / f"{pretrained.NAME}.pt"
    assert card == storage.read_json(tmp_path / f"{pretrained.NAME}.json")
    assert card["sha256"] == storage.file_checksum(path) and card["file"] == path.name and card["arch"] == "nafp_small"
    assert card["licence"] == "MIT" and card["threshold"] == threshold and card["training_command"]
    ck = load_checkpoint(path)
    assert not {"optimizer", "rng_cpu", "epoch"} & set(ck) and ck["metrics"] == {"val_top1": 0.5}
    assert all(v.dtype == torch.float16 for v in ck["model"].values() if v.is_floating_point())
    assert path.stat().st_size < 0.6 * world["ckpt"].stat().st_size
    full, _ = load_model(world["ckpt"])
    slim, fe = load_model(path)
    assert fe == FE and card["parameters"] == sum(p.numel() for p in full.parameters())
    assert all(p.dtype == torch.float32 for p in slim.parameters())  # cast back on load
    x = torch.from_numpy(np.stack([tone(1.0, seed=s) for s in range(4)]))
    from fplib.features import logmel

    feats = logmel(x.reshape(-1), FE)
    a, b = full(feats), slim(feats)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999
    # the module finds it through the argument or FPLIB_PRETRAINED_DIR, and checks the checksum
    assert pretrained.default_model(tmp_path) == path and pretrained.default_threshold(tmp_path) == threshold
    assert pretrained.is_shipped(card["sha256"], tmp_path) and not pretrained.is_shipped("x", tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path, broken, ignore=shutil.ignore_patterns("broken"))
    with open(broken / path.name, "ab") as f:
        f.write(b"\0")
    with pytest.raises(pretrained.PretrainedError, match="differs from the card"):
        pretrained.default_model(broken)
    (broken / path.name).unlink()
    with pytest.raises(pretrained.PretrainedError, match="file is missing"):
        pretrained.default_model(broken)
    with pytest.raises(pretrained.PretrainedError, match="card is missing"):
        pretrained.default_model(tmp_path / "empty")
    assert pretrained.default_threshold(tmp_path / "empty") is None
    bare = pretrained.export(world["ckpt"], tmp_path / "bare" / f"{pretrained.NAME}.pt")
    assert {k: bare[k] for k in pretrained.CARD_FIELDS} == dict.fromkeys(pretrained.CARD_FIELDS)
    assert pretrained.default_threshold(tmp_path / "bare") is None
    pretrained.update_card({"threshold": threshold}, tmp_path / "bare")  # calibrated later, model untouched
    assert pretrained.default_threshold(tmp_path / "bare") == threshold
    assert pretrained.default_model(tmp_path / "bare").exists()
    with pytest.raises(ValueError, match="sha256"):
        pretrained.update_card({"sha256": "x"}, tmp_path / "bare")


@pytest.mark.slow
def test_commands_default_to_the_shipped_model(world, tmp_path, monkeypatch, capsys):
    shipped = tmp_path / "shipped"
    threshold = {
        "threshold": {"windows": [1, 9], "values": [0.99, 0.99]},
        "target_fpr": 0.05,
        "phases": 1,
        "decision": "score",
    }
    card = pretrained.export(world["ckpt"], shipped / f"{pretrained.NAME}.pt", {"threshold": threshold})
    monkeypatch.setenv(pretrained.DIR_ENV, str(shipped))
    cat, idx = tmp_path / "cat", tmp_path / "idx"
    assert (
        cli.main(
            [
                "generate_fingerprints",
                "-i",
                str(world["songs"] / "song_0.flac"),
                str(world["songs"] / "song_1.flac"),
                "-o",
                str(cat),
                "--no_progress",
            ]
        )
        == 0
    )
    with Catalogue(cat) as c:
        assert c.model["sha256"] == card["sha256"]
    assert cli.main(["create_faiss_indexes", "-i", str(cat), "-n", "s", "-o", str(idx)]) == 0
    capsys.readouterr()
    q = _query(world, tmp_path, "song_1.flac", 3.0, 3.0)
    noise = tmp_path / "noise.wav"
    audio.write(noise, (0.1 * np.random.default_rng(0).standard_normal(3 * 8000)).astype(np.float32))
    # no threshold file: the shipped model's default applies to a catalogue it made
    assert (
        cli.recognize_main([str(q), str(noise), "--catalogue", str(cat), "--index", str(idx / "s.index"), "--json"])
        == 0
    )
    out, err = capsys.readouterr()
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert "shipped model's default" in err and all(r["threshold"] == pytest.approx(0.99) for r in rows)
    assert rows[0]["in_database"] and rows[0]["song"] == "song_1"  # an exact excerpt scores 1
    assert not rows[1]["in_database"] and rows[1]["reason"] == "score below the threshold"
    audio.write(tmp_path / "more" / "x.wav", music_like(5.0, 8000, seed=60), 8000)
    assert (
        cli.main(
            [
                "db",
                "add",
                "--catalogue",
                str(cat),
                "--index",
                str(idx / "s.index"),
                str(tmp_path / "more"),
                "--no_progress",
            ]
        )
        == 0
    )
    # a catalogue made by another model gets no default threshold
    assert (
        cli.recognize_main(
            [str(q), "--model", str(world["ckpt"]), "--catalogue", str(world["cat"]), "--index", str(world["index"])]
        )
        == 2
    )
    assert "calibrate_threshold" in capsys.readouterr().err
    monkeypatch.setenv(pretrained.DIR_ENV, str(tmp_path / "not_installed"))
    assert cli.main(["generate_fingerprints", "-i", str(world["songs"]), "-o", str(tmp_path / "c2")]) == 2
    assert "--model" in capsys.readouterr().err and not (tmp_path / "c2").exists()


@pytest.mark.slow
def test_generate_fingerprints_killed_then_run_again_gives_the_uninterrupted_catalogue(world, tmp_path):
    import signal
    import sqlite3
    import time

    songs = tmp_path / "songs"
    for i in range(40):
        audio.write(songs / f"s{i:02d}.wav", music_like(10.0, 8000, seed=500 + i), 8000)
    cmd = [
        sys.executable,
        "-m",
        "fplib.cli",
        "generate_fingerprints",
        "-i",
        str(songs),
        "--model",
        str(world["ckpt"]),
        "--no_progress",
        "--batch",
        "1",
        "-o",
    ]
    killed = tmp_path / "killed"
    p = subprocess.Popen([*cmd, str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n, deadline = 0, time.time() + 120
    while n < 3 and time.time() < deadline and p.poll() is None:
        time.sleep(0.01)
        if (killed / "catalogue.sqlite").exists():
            with contextlib.closing(sqlite3.connect(f"file:{killed / 'catalogue.sqlite'}?mode=ro", uri=True)) as db:
                try:
                    n = db.execute("SELECT COUNT(*) FROM songs").fetchone()[0]
                except sqlite3.OperationalError:  # the schema is being created
                    n = 0
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the extraction finished before it could be killed"
    with Catalogue(killed) as cat:
        assert 3 <= len(cat) < 40
    again = subprocess.run([*cmd, str(killed)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already there" in again.stdout, again.stdout + again.stderr
    whole = tmp_path / "whole"
    assert subprocess.run([*cmd, str(whole)], cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    with Catalogue(killed) as a, Catalogue(whole) as b:
        va = {s.name: a.vectors(s) for s in a.songs()}
        vb = {s.name: b.vectors(s) for s in b.songs()}
    assert sorted(va) == sorted(vb) == [f"s{i:02d}" for i in range(40)]
    for name in va:
        np.testing.assert_array_equal(va[name], vb[name])
