"""Papermill runs with injected parameters (nbval runs every notebook on its defaults separately)."""

import hashlib
import io
import time

import nbformat
import papermill as pm
import pytest
from nbformat.sign import NotebookNotary

from fplib import notebooks, runs, storage
from fplib.config import ParameterError

NB01 = notebooks.notebooks_dir() / "01_generate_dataset.ipynb"
TINY = {
    "corpus_songs": 5,
    "corpus_song_seconds": 6.0,
    "corpus_noises": 3,
    "corpus_irs": 3,
    "number_segments": 2,
    "n_show": 1,
}


def test_papermill_run_with_injected_parameters():
    executed = notebooks.run("demo", only=["01"], run_name="pm-injected", extra=TINY, log_output=False)
    run = runs.Run.named("pm-injected")
    assert executed == [run.executed_notebook(NB01.name)] and executed[0].exists()
    # signed: JupyterLab opens it trusted, with its audio players and widgets working
    assert NotebookNotary().check_signature(nbformat.read(executed[0], as_version=4))
    assert not NotebookNotary().check_signature(nbformat.read(NB01, as_version=4))  # only what the run wrote
    metrics = storage.read_json(run.metrics("01"))
    assert metrics["songs"] == 5
    assert metrics["train_pairs"] == 2 * 4 and metrics["val_pairs"] == 2 * 1  # 0.8 of 5 songs train

    def dataset_files():  # every file's content; for the pairs and the audio samples, when it was written
        return {
            p: (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_mtime_ns if p.suffix in (".npy", ".wav") else None,
            )
            for p in run.dataset_dir.rglob("*")
            if p.is_file()
        }

    before = dataset_files()
    assert len(run.datasets()) == 1 and sum(p.suffix == ".npy" for p in before) == 8 + 2
    # a second run with the same parameters reuses the dataset instead of refusing or rewriting it: the
    # notebook succeeds, reports the same pairs, no pair or sample is written again, and the JSON maps
    # (written again at the end) say the same
    notebooks.run("demo", only=["01"], run_name="pm-injected", extra=TINY, log_output=False)
    assert dataset_files() == before, "the second run rewrote the dataset"
    again = storage.read_json(run.metrics("01"))
    assert {k: v for k, v in again.items() if k != "generation_seconds"} == {
        k: v for k, v in metrics.items() if k != "generation_seconds"
    }


def test_explorer_runs_headless_with_its_static_view_and_a_short_cell_timeout(monkeypatch):
    # the explorer cell used to leave a headless run waiting for the cell timeout: with a 120-s limit a
    # hang fails here within minutes instead of half an hour
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as in `make demo`
    progress = io.StringIO()
    t0 = time.time()
    executed = notebooks.run("demo", only=["01"], run_name="pm-explorer", extra=TINY, cell_timeout=120, out=progress)
    assert time.time() - t0 < 600
    nb = nbformat.read(executed[0], as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "viz.explorer(" in c.source)
    kinds = [k for o in cell.outputs for k in o.get("data", {})]
    assert "image/png" in kinds, "the static view's figure"
    assert sum("<audio" in o.get("data", {}).get("text/html", "") for o in cell.outputs) == 2, "clean and degraded"
    assert kinds.count("application/vnd.jupyter.widget-view+json") == 3, "title, controls and output area"
    # nothing was rendered into the output area while the cell ran (only a control change fills it)
    states = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    areas = [w["state"] for w in states.values() if w["model_name"] == "OutputModel"]
    assert len(areas) == 1 and not areas[0].get("outputs")
    text = progress.getvalue()
    assert "== 01_generate_dataset (profile demo)" in text and "Explorer" in text and "done in" in text


def test_explorer_rerenders_when_a_control_changes(tmp_path, monkeypatch):
    from fplib import audio, augment, data, viz
    from tests.helpers import make_folders

    d = make_folders(tmp_path, n_songs=2, seconds=4.0)
    aug = augment.Augmenter()
    irs = data.IRBank(audio.list_audio(d["rir"]), aug.fe.sr, aug.cfg.ir_max_s)
    noises = data.NoiseBank(audio.list_audio(d["noise"]), aug.fe.sr)
    titles = []
    monkeypatch.setattr(viz, "show", lambda fig: titles.append(fig._suptitle.get_text()))
    ex = viz.explorer(audio.list_audio(d["songs"]), irs, noises, aug)
    assert len(titles) == 1 and "SNR 5.0 dB" in titles[0]  # the static view, rendered once
    ex["controls"]["snr"].value = 12.5
    assert len(titles) == 2 and "SNR 12.5 dB" in titles[1]


def test_unknown_or_ill_typed_parameters_are_refused_before_running():
    with pytest.raises(ParameterError, match="unknown parameter"):
        notebooks.check_params(NB01, {"number_segment": 3})
    with pytest.raises(ParameterError, match="'number_segments': expected int"):
        notebooks.check_params(NB01, {"number_segments": "3"})
    with pytest.raises(FileNotFoundError, match="no parameter profile"):
        notebooks.run("nope", only=["01"])


def test_unknown_parameter_injected_by_plain_papermill_fails_in_the_notebook(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter"):
        pm.execute_notebook(
            str(NB01),
            str(tmp_path / "out.ipynb"),
            parameters={"run_name": "pm-bad", "seeed": 1},
            kernel_name="python3",
            progress_bar=False,
        )


def test_notebooks_04_and_05_on_your_own_folder(tmp_path):
    """04 fingerprints a folder outside outputs/ (names relative to it); 05 queries the catalogue's own
    songs and measures false positives on synthetic songs no training used, with the model 04 used
    (recorded in the catalogue), not the run's train_online/best.pt."""
    import torch

    from fplib.checkpoints import model_description, save_checkpoint
    from fplib.features import FrontEnd
    from fplib.models.registry import build_model
    from tests.helpers import music_like, write

    folder = tmp_path / "my music"
    for i, name in enumerate(("album/one.flac", "album/two.flac", "three.wav")):
        write(folder / name, music_like(8.0, 16000, seed=10 + i), 16000)
    fe = FrontEnd()
    run = runs.Run.named("pm-own")

    def tiny_model(path, seed):
        torch.manual_seed(seed)
        model, settings = build_model("nafp_small", fe, width=0.125)
        save_checkpoint(
            path,
            {
                "model": model.state_dict(),
                "model_name": "nafp_small",
                "model_settings": settings,
                "frontend": fe.to_dict(),
            },
        )
        return path

    ckpt = tiny_model(tmp_path / "model.pt", 0)
    run.train_dir("online").mkdir(parents=True, exist_ok=True)
    decoy = tiny_model(run.checkpoint("online"), 1)  # what 05 used to load whatever 04 used
    assert model_description(decoy)["sha256"] != model_description(ckpt)["sha256"]
    tiny = {
        "input_folder": str(folder),
        "test_songs": 1,
        "out_of_db_songs": 2,
        "test_song_seconds": 6.0,
        "test_noises": 2,
        "test_irs": 2,
        "example_length": 2.0,
        "landmark": False,
        "protocol": {"lengths": [1.0, 2.0], "snrs": [5.0], "queries_per_cell": 2, "calibration_per_cell": 2},
    }
    notebooks.run("demo", only=["04"], run_name="pm-own", extra={**tiny, "checkpoint": str(ckpt)}, log_output=False)
    notebooks.run("demo", only=["05"], run_name="pm-own", extra=tiny, log_output=False)  # no checkpoint given
    made = storage.read_json(run.metrics("04"))
    assert made["songs"] == 3
    from fplib.catalogue import Catalogue

    with Catalogue(run.catalogue) as cat:
        assert sorted(s.name for s in cat.songs()) == ["album/one", "album/two", "three"]
    metrics = storage.read_json(run.results)
    assert made["model"] == metrics["model"] == model_description(ckpt)  # 05 loaded what 04 fingerprinted with
    assert metrics["queries_from"] == "catalogue"
    assert metrics["protocol"]["lengths"] == [1.0, 2.0] and metrics["protocol"]["queries_per_cell"] == 2
    # the run's other trained model (the decoy at train_online/best.pt) is evaluated beside it, on its own
    # catalogue of the same songs
    assert [(r["system"], r["length_s"], r["n"], r["n_out"]) for r in metrics["headline"]] == [
        ("neural", 1.0, 2, 2),
        ("neural", 2.0, 2, 2),
        ("nafp_small online", 1.0, 2, 2),
        ("nafp_small online", 2.0, 2, 2),
    ]
    with Catalogue(run.compare_dir("nafp_small_online") / "catalogue") as other:
        assert other.model["sha256"] == model_description(decoy)["sha256"]
        assert sorted(s.name for s in other.songs()) == ["album/one", "album/two", "three"]
    queries = storage.read_json(run.queries)
    assert {q["name"] for q in queries if q["in_database"]} <= {"album/one", "album/two", "three"}
    # the one-time notice of the CPU runtime's preparation is ordinary output in a notebook, not red standard error
    streams = [
        o
        for name in ("04_extract_fingerprints.ipynb", "05_build_index_and_evaluate.ipynb")
        for c in nbformat.read(run.executed_notebook(name), as_version=4).cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    ]
    notices = [o.name for o in streams if "for fast CPU inference" in o.text]
    assert notices and set(notices) == {"stdout"}, notices
    assert all("test_corpus" in q["song"] for q in queries if not q["in_database"])
