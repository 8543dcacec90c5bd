from pathlib import Path

import pytest

from fplib import heldout, runs, search, storage


def test_a_run_names_every_file_under_its_root(tmp_path):
    run = runs.Run(tmp_path / "demo")
    assert run.root == tmp_path / "demo" and Path(run) == run.root and run.name == "demo"
    assert run.checkpoint() == run.root / "train_online" / "best.pt"
    assert run.checkpoint("static", "last") == run.root / "train_static" / "last.pt"
    assert runs.checkpoint(run.train_dir("online")) == run.checkpoint("online")
    assert run.catalogue == run.root / "catalogue" and run.index("demo") == run.root / "index" / "demo.index"
    assert search.threshold_path(run.index("demo")) == run.index_dir / "demo.threshold.json"
    assert (
        run.metrics("04")
        == run.metrics("04_extract_fingerprints")
        == run.root / "04_extract_fingerprints" / "metrics.json"
    )
    assert run.results == run.root / "05_build_index_and_evaluate" / "metrics.json"
    assert run.queries.parent == run.results.parent and run.online_split == run.online_data / "split.json"
    assert run.executed_notebook("01_generate_dataset.ipynb").parent == run.root / "notebooks"
    for bad in (
        lambda: run.train_dir("../x"),
        lambda: run.index("a/b"),
        lambda: run.metrics("06"),
        lambda: run.checkpoint("online", "worst"),
    ):
        with pytest.raises(ValueError):
            bad()
    assert not run.root.exists()  # naming a file creates nothing


def test_named_run_is_under_the_outputs_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(storage.OUTPUTS_ENV, str(tmp_path))
    run = runs.Run.named("r1")
    assert run.root == tmp_path / "r1" and run.root.is_dir()
    with pytest.raises(ValueError):
        runs.Run.named("../r1")


def test_training_songs_read_through_the_run(tmp_path):
    run = runs.Run(tmp_path / "r")
    storage.write_json(run.online_split, {"train/train_set": ["/m/a.wav"], "val/val_set": ["/m/b.wav"]})
    ds = run.dataset_dir / "Dataset_4"
    storage.write_json(ds / "generation.json", {"settings": {"input_folder": "/songs"}})
    storage.write_json(ds / "train_data.json", {"c.wav": ["c_0"]})
    assert sorted(heldout.training_songs(run)) == ["/m/a.wav", "/songs/c.wav"]
