"""Papermill runs with injected parameters (nbval runs every notebook on its defaults separately)."""

import papermill as pm
import pytest

from fplib import notebooks, storage
from fplib.config import ParameterError

NB01 = notebooks.notebooks_dir() / "01_generate_dataset.ipynb"
TINY = {"corpus_songs": 5, "corpus_song_seconds": 6.0, "corpus_noises": 3, "corpus_irs": 3, "number_segments": 2,
        "n_show": 1}


def test_papermill_run_with_injected_parameters():
    executed = notebooks.run("demo", only=["01"], run_name="pm-injected", extra=TINY, log_output=False)
    assert executed[0].exists()
    metrics = storage.read_json(storage.run_dir("pm-injected") / "01_generate_dataset" / "metrics.json")
    assert metrics["songs"] == 5
    assert metrics["train_pairs"] == 2 * 4 and metrics["val_pairs"] == 2 * 1  # 0.8 of 5 songs train
    # a second run with the same parameters reuses the dataset instead of refusing or rewriting it
    notebooks.run("demo", only=["01"], run_name="pm-injected", extra=TINY, log_output=False)


def test_unknown_or_ill_typed_parameters_are_refused_before_running():
    with pytest.raises(ParameterError, match="unknown parameter"):
        notebooks.check_params(NB01, {"number_segment": 3})
    with pytest.raises(ParameterError, match="'number_segments': expected int"):
        notebooks.check_params(NB01, {"number_segments": "3"})
    with pytest.raises(FileNotFoundError, match="no parameter profile"):
        notebooks.run("nope", only=["01"])


def test_unknown_parameter_injected_by_plain_papermill_fails_in_the_notebook(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter"):
        pm.execute_notebook(str(NB01), str(tmp_path / "out.ipynb"), parameters={"run_name": "pm-bad", "seeed": 1},
                            kernel_name="python3", progress_bar=False)
