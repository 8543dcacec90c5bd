"""Where a run's files live: one name for every file and folder under ``outputs/<run_name>/``.

Notebooks 01-05, the command line and the evaluation read and write a run's files through
:class:`Run`, so the layout is written down once::

    outputs/<run_name>/
        corpus/                     01: the demo corpus (music/, noise/, rir/); 03 and 04 read it
        dataset/Dataset_<N>/        01: the static (clean, degraded) pairs; 02 trains on them
        train_static/               02: best.pt, last.pt, metrics.jsonl, config.json
        online_data/                03: the online split (links) and split.json
        train_online/               03: as train_static/
        train_online_<model>/       03: other models trained the same way (compare_models), as train_static/
        test_corpus/                04: held-out test songs, rooms and noises; 05 queries with them
        test_split.json             04: which test songs are in the catalogue and which stay out
        catalogue/                  04: the fingerprints and the model that made them
        index/                      05: <name>.index, .json, .meta.json, .threshold.json
        compare/<system>/           05: catalogue/ and index/ of every other trained model, compared side by side
        notebooks/                  executed copies of the notebooks (python -m fplib.notebooks)
        <NN_notebook>/metrics.json  each notebook's checks and metrics; 05 also writes queries.json

Pure :mod:`pathlib`: nothing is created or read here (except by :meth:`Run.named`, which creates
the run folder as :func:`fplib.storage.run_dir` does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# A training folder (fplib.train): the best and the last checkpoint, the per-epoch log, the settings.
BEST = "best.pt"
LAST = "last.pt"
METRICS_LOG = "metrics.jsonl"
TRAIN_CONFIG = "config.json"

# The numbered notebooks, each with a folder of its own in the run (metrics.json, ...).
STEPS = (
    "01_generate_dataset",
    "02_train_static",
    "03_train_online",
    "04_extract_fingerprints",
    "05_build_index_and_evaluate",
)


def checkpoint(train_dir: str | os.PathLike, which: str = "best") -> Path:
    """``best.pt`` or ``last.pt`` of a training folder (any folder :func:`fplib.train.train` wrote)."""
    names = {"best": BEST, "last": LAST}
    if which not in names:
        raise ValueError(f"which checkpoint: one of {sorted(names)}, got {which!r}")
    return Path(train_dir) / names[which]


def _plain(name: str, what: str) -> str:
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"{what} must be a plain name, not a path, got {name!r}")
    return name


@dataclass(frozen=True)
class Run:
    """The files of one run, under ``root`` (``outputs/<run_name>/``). A path-like object: ``Path(run)``
    and ``open``-style functions take it as its root folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def named(cls, run_name: str) -> Run:
        """``outputs/<run_name>/`` (``$FPLIB_OUTPUTS`` if set), created if missing."""
        from fplib import storage

        return cls(storage.run_dir(run_name))

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    # -- notebook 01: the corpus and the static pairs
    @property
    def corpus(self) -> Path:
        """The built-in demo corpus (``music/``, ``noise/``, ``rir/``; :func:`fplib.synth.demo.demo_corpus`)."""
        return self.root / "corpus"

    @property
    def dataset_dir(self) -> Path:
        """Where the static datasets go: ``Dataset_<N>/`` (:func:`fplib.generate.find_dataset`)."""
        return self.root / "dataset"

    def datasets(self) -> list[Path]:
        """The static datasets written so far (``dataset/Dataset_*``), in name order."""
        return sorted(p for p in self.dataset_dir.glob("Dataset_*") if p.is_dir())

    # -- notebooks 02 and 03: training
    def train_dir(self, kind: str, model: str | None = None) -> Path:
        """The training folder of ``kind``: ``train_static/`` (notebook 02) or ``train_online/`` (03); with
        ``model``, the folder of a model trained the same way for the comparison (``train_online_attn_small/``)."""
        name = f"train_{_plain(kind, 'a training kind')}"
        return self.root / (name if model is None else f"{name}_{_plain(model, 'a model name')}")

    def checkpoint(self, kind: str = "online", which: str = "best", model: str | None = None) -> Path:
        """``train_<kind>/best.pt`` (or ``last.pt``); notebook 04 fingerprints with ``train_online/best.pt``
        unless told otherwise."""
        return checkpoint(self.train_dir(kind, model), which)

    def trained(self) -> dict[str, Path]:
        """Every best checkpoint notebooks 02 and 03 wrote in this run: ``{folder name without "train_":
        best.pt}`` (``static``, ``online``, ``online_attn_small``, ...), in name order."""
        return {p.parent.name[len("train_") :]: p for p in sorted(self.root.glob(f"train_*/{BEST}"))}

    def compare_dir(self, label: str) -> Path:
        """Notebook 05's catalogue and index of another trained model, for the side-by-side comparison."""
        return self.root / "compare" / _plain(label, "a system name")

    @property
    def online_data(self) -> Path:
        """The online split (:func:`fplib.sources.split_online_data`): ``train/``, ``val/``, ``split.json``."""
        return self.root / "online_data"

    @property
    def online_split(self) -> Path:
        """Which file went where in the online split."""
        return self.online_data / "split.json"

    # -- notebook 04: the test corpus and the catalogue
    @property
    def test_corpus(self) -> Path:
        """Held-out test songs, rooms and noises (a seed no training used)."""
        return self.root / "test_corpus"

    @property
    def test_split(self) -> Path:
        """``{"in_database": [...], "out_of_database": [...]}``: the test songs in and out of the catalogue."""
        return self.root / "test_split.json"

    @property
    def catalogue(self) -> Path:
        """The catalogue folder: fingerprints, songs, and the model that made them (its checkpoint's path
        and SHA-256, which notebook 05 loads)."""
        return self.root / "catalogue"

    # -- notebook 05: the index and the evaluation
    @property
    def index_dir(self) -> Path:
        """``<name>.index`` with its ``.json``, ``.meta.json`` and ``.threshold.json``."""
        return self.root / "index"

    def index(self, name: str) -> Path:
        """The index file ``index/<name>.index`` (:func:`fplib.index.build` writes it)."""
        return self.index_dir / f"{_plain(name, 'an index name')}.index"

    @property
    def queries(self) -> Path:
        """The evaluation's query list (:func:`fplib.queries.save_queries`)."""
        return self.step_dir("05") / "queries.json"

    @property
    def results(self) -> Path:
        """The evaluation's metrics (headline table, per-SNR table, threshold)."""
        return self.metrics("05")

    # -- every notebook
    def step_dir(self, step: str) -> Path:
        """A notebook's own folder, by its number (``"05"``) or full name (``"05_build_index_and_evaluate"``)."""
        found = [s for s in STEPS if s == step or s.split("_", 1)[0] == step]
        if not found:
            raise ValueError(f"unknown step {step!r}; steps: {list(STEPS)}")
        return self.root / found[0]

    def metrics(self, step: str) -> Path:
        """A notebook's ``metrics.json``."""
        return self.step_dir(step) / "metrics.json"

    @property
    def notebooks_dir(self) -> Path:
        """Executed copies of the notebooks (:func:`fplib.notebooks.run`)."""
        return self.root / "notebooks"

    def executed_notebook(self, notebook: str) -> Path:
        """The executed copy of ``notebook`` (a file name such as ``01_generate_dataset.ipynb``)."""
        return self.notebooks_dir / _plain(notebook, "a notebook file name")
