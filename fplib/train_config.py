"""The training settings: one frozen dataclass, the one set of defaults.

The trainer command line (``fplib.cli``), the notebooks (02, 03) and the library (:func:`fplib.train.train`)
all build a :class:`TrainConfig`; the command line shows its defaults in ``--help``. Settings marked
:func:`family_setting` (temperature, learning rate, optimiser, batch size, ...) default to ``None``: the
model's family then decides (the ``training`` of its entry in :mod:`fplib.models.registry`), else fplib's
value given in the field. The resolved values are what a run records (``config.json``, checkpoints).

This module imports neither torch nor the networks, so the command line's ``--help`` stays fast.
Build one from plain data with :func:`fplib.config.from_dict` (unknown keys and wrong types are errors).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fplib.models import registry

OPTIMISERS = ("Adam", "Lamb")


def family_setting(fplib_default: Any) -> Any:
    """A field whose ``None`` means: the family's value (its registry entry's ``training``), else ``fplib_default``."""
    return field(default=None, metadata={"fplib_default": fplib_default})


@dataclass(frozen=True)
class TrainConfig:
    model: str = "nafp"  # registered architecture (fplib.models.registry.model_names())
    model_settings: dict = field(default_factory=dict)  # overrides of the architecture's settings
    epochs: int = 200  # maximum epochs (early stopping may end sooner)
    batch_size: int | None = family_setting(32)  # global batch of pairs (split across ranks under torchrun)
    optim: str | None = family_setting("Adam")  # Adam or Lamb
    lr: float | None = family_setting(1e-4)  # learning rate at lr_ref_batch pairs per batch
    lr_ref_batch: int | None = family_setting(120)  # lr scales by batch_size / lr_ref_batch (NAFP: 1e-4 at 120)
    weight_decay: float | None = family_setting(0.0)  # on weights only (not biases or norms)
    warmup_frac: float | None = family_setting(0.05)  # share of all steps spent warming the lr up
    temperature: float | None = family_setting(0.05)  # the contrastive temperature (NAFP 0.05, ATTN 0.1)
    patience: int = 20  # epochs without a better validation hit rate before stopping
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes (dynamic modes)
    items_per_song: int | None = family_setting(8)  # dynamic modes: segments drawn per training song per epoch
    val_items_per_song: int = 4  # dynamic modes: fixed segments per validation song
    preload: bool = False  # dynamic modes: decode every song once and hold it in memory
    amp: bool = True  # mixed precision on GPU (ignored on CPU)
    grad_clip: float | None = family_setting(0.0)  # max gradient norm (0 = off)

    def __post_init__(self) -> None:
        own = registry.variant(self.model).training
        unknown = sorted(set(own) - set(family_settings()))
        if unknown:
            raise ValueError(
                f"the registry entry of {self.model!r} sets {unknown}, which are not family settings "
                f"of TrainConfig ({sorted(family_settings())})"
            )
        for name, fplib_default in family_settings().items():
            if getattr(self, name) is None:  # the family's, else fplib's; recorded with the run
                value = own.get(name, fplib_default)
                object.__setattr__(self, name, float(value) if isinstance(fplib_default, float) else value)
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}")
        if self.optim.lower() not in ("adam", "lamb"):
            raise ValueError(f"optim must be Adam or Lamb, got {self.optim!r}")

    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / self.lr_ref_batch


def family_settings() -> dict[str, Any]:
    """The settings a family may set in its registry entry, with fplib's value of each."""
    return {
        f.name: f.metadata["fplib_default"] for f in dataclasses.fields(TrainConfig) if "fplib_default" in f.metadata
    }


def default(name: str) -> Any:
    """TrainConfig's default of setting ``name`` (fplib's value for a family setting), e.g. for ``--help``."""
    f = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    if "fplib_default" in f.metadata:
        return f.metadata["fplib_default"]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def for_variant(cfg: TrainConfig, name: str, **settings) -> TrainConfig:
    """``cfg`` for another registered model ``name`` (its own default settings and front end): the family
    settings that ``cfg``'s family or ``name``'s set in the registry go back to ``name``'s (else fplib's), then
    ``settings`` apply. How the compared families of a run are trained beside its main model."""
    reset = set(registry.variant(cfg.model).training) | set(registry.variant(name).training)
    return dataclasses.replace(cfg, **{"model": name, "model_settings": {}, **{k: None for k in reset}, **settings})
