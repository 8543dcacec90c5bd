"""Whole trainings from settings and folders, over :func:`fplib.train.train`'s loop: what the ``trainer``
command runs (:func:`run_trainer`: the mode's data source, torchrun's process group, the best checkpoint
copied to ``OUT/NAME.pt``) and the registered families notebook 03 trains beside a run's main model
(:func:`train_variant`, each with its own family's settings from the registry).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch.distributed as dist

from fplib import runs, storage
from fplib.augment import AugmentConfig
from fplib.config import from_dict
from fplib.data import Skipped
from fplib.features import FrontEnd
from fplib.models.registry import build_model, frontend_for, n_parameters, variant
from fplib.sources import (
    OnlineFolders,
    OnlineSource,
    PairFolders,
    UnsplitFolders,
    online_source,
    shared_files,
    split_online_data,
    static_source,
)
from fplib.train import best_epoch, dist_info, learned, setup_distributed, times_chance, train
from fplib.train_config import TrainConfig, for_variant


@dataclass(frozen=True)
class VariantRun:
    """A registered family trained beside a run's main model (:func:`train_variant`)."""

    name: str
    kind: str
    parameters: int
    recipe: dict  # the settings given for it (epochs, lr, ...)
    history: list[dict]

    @property
    def best(self) -> tuple[int, dict]:
        return best_epoch(self.history)

    def summary(self) -> dict:
        """What notebook 03 records of it (``metrics.json``'s ``compared``), read by notebook 05."""
        n_best, b = self.best
        return {
            "parameters": self.parameters,
            "kind": self.kind,
            "recipe": self.recipe,
            "epochs": len(self.history),
            "best_epoch": n_best,
            "best_val_top1": b["val_top1"],
            "times_chance": times_chance(b),
            "learned": learned(b),
            "pairs_per_s": self.history[-1]["pairs_per_s"],
        }


def train_variant(
    cfg: TrainConfig,
    name: str,
    recipe: dict,
    folders: OnlineFolders,
    aug: AugmentConfig,
    out_dir: str | os.PathLike,
    f_min: float = 300.0,
    source: OnlineSource | None = None,
    resume: bool = False,
    device: str = "auto",
    run_params: dict | None = None,
    progress: bool = False,
) -> VariantRun:
    """Train registered model ``name`` the way the run of ``cfg`` was trained (same data, seed, schedule;
    its own family settings from the registry, :func:`fplib.train_config.for_variant`), with ``recipe``'s
    settings on top, in ``out_dir``. ``source`` (the main run's) is reused when ``name`` takes the same front
    end; otherwise the data is read again from ``folders`` with ``name``'s front end."""
    cfg_m = for_variant(cfg, name, **recipe)
    fe = frontend_for(name, f_min=f_min)
    if source is None or source.augmenter.fe != fe:
        source = online_source(folders, cfg_m, aug, fe, Skipped())
    history = train(
        cfg_m,
        source,
        out_dir,
        fe,
        resume=resume,
        device=device,
        progress=progress,
        run_params={**(run_params or {}), "model": name},
    )
    return VariantRun(name, variant(name).kind, n_parameters(build_model(name, fe)[0]), dict(recipe), history)


@dataclass(frozen=True)
class TrainerResult:
    """What :func:`run_trainer` did: ``checkpoint`` is ``OUT/NAME.pt`` (None on other ranks than 0, or when no
    epoch has finished yet), ``run_dir`` the run folder ``OUT/NAME/``, ``failed`` the songs that failed to
    decode during training (their segments were left out), ``rank`` this process's rank under torchrun."""

    checkpoint: Path | None
    run_dir: Path
    history: list[dict]
    failed: list[tuple[str, str]]
    rank: int = 0


def run_trainer(
    settings: dict,
    data: PairFolders | OnlineFolders | UnsplitFolders,
    out: str | os.PathLike,
    name: str = "fingerprinter",
    *,
    augment: dict | None = None,
    f_min: float = 300.0,
    device: str = "auto",
    resume: bool = False,
    init: str | os.PathLike | None = None,
    run_params: dict | None = None,
    progress: bool = True,
) -> TrainerResult:
    """The ``trainer`` command: train in ``out/name/`` and copy the best checkpoint to ``out/name.pt``.

    ``settings``: :class:`TrainConfig`'s (unknown keys are errors; the model's family fills in what is not
    given). ``data`` chooses the mode: :class:`~fplib.sources.PairFolders` (static; pairs load in the main
    process, ``num_workers`` 0), :class:`~fplib.sources.OnlineFolders` (dynamic), or
    :class:`~fplib.sources.UnsplitFolders` (dynamic_online: split into ``out/online_data/`` first, by rank 0
    under torchrun). ``augment``: :class:`~fplib.augment.AugmentConfig`'s settings (online modes). Files
    unusable from the start are reported on standard error before training. Under torchrun the process
    group is set up here and torn down at the end.
    """
    cfg = from_dict(TrainConfig, settings)
    if isinstance(data, PairFolders):
        cfg = replace(cfg, num_workers=0)
    fe = frontend_for(cfg.model, f_min=f_min)
    aug = from_dict(AugmentConfig, augment or {})
    out = Path(out)
    run_dir = out / name
    storage.check_writable(out, folder=True)  # before the work, not at the first checkpoint
    storage.check_writable(run_dir, folder=True)
    if (run_dir / "metrics.jsonl").exists():  # appended to
        storage.check_writable(run_dir / "metrics.jsonl")
    try:
        setup_distributed(device)
        rank, _, _ = dist_info()
        source = _trainer_source(data, cfg, aug, fe, out, rank)
        history = train(
            cfg, source, run_dir, fe, resume=resume, device=device, init=init, run_params=run_params, progress=progress
        )
        best = out / f"{name}.pt"
        if rank != 0 or not runs.checkpoint(run_dir).exists():
            return TrainerResult(None, run_dir, history, [], rank)
        storage.clean_stale_temps(out)
        with storage.atomic_path(best) as tmp:
            shutil.copyfile(runs.checkpoint(run_dir), tmp)
        return TrainerResult(best, run_dir, history, sorted(getattr(source, "failed", {}).items()), rank)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _trainer_source(data, cfg: TrainConfig, aug: AugmentConfig, fe: FrontEnd, out: Path, rank: int):
    """The mode's source (the dynamic_online split made first, by rank 0); unusable files, and files both
    trained and validated on, reported by rank 0."""
    if isinstance(data, PairFolders):
        return _say_shared(static_source(data.train, data.val, fe), rank)
    if isinstance(data, UnsplitFolders):
        if rank == 0:
            split_online_data(data.songs, data.irs, data.noises, out, data.train_ratio, cfg.seed)
        if dist.is_initialized():
            dist.barrier()
        d = runs.Run(out).online_data
        data = OnlineFolders(
            d / "train" / "train_set",
            d / "val" / "val_set",
            d / "train" / "train_impulse_responses",
            d / "train" / "train_background_noises",
            d / "val" / "val_impulse_responses",
            d / "val" / "val_background_noises",
        )
    skipped = Skipped()
    source = online_source(data, cfg, aug, fe, skipped)
    if rank == 0 and skipped.items:
        print(skipped.report(), file=sys.stderr)
    return _say_shared(source, rank)


def _say_shared(source, rank: int):
    """``source``, after a warning (rank 0) naming the files it validates on that it also trains on."""
    shared = shared_files(source)
    if rank == 0 and shared:
        shown = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        print(
            f"warning: {len(shared)} validation file(s) are also training files ({shown}): validation then "
            f"measures recognising what was trained on, not new songs; give validation songs of its own "
            f"(dynamic_online splits them off when it has 2 songs or more)",
            file=sys.stderr,
        )
    return source
