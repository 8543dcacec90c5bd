"""The registry of fingerprinting networks: one declarative entry per variant, read by everything in fplib
that depends on the family (the trainer's choices and settings, the vector kind of extraction, indexing and
search, the notebooks' plots), so no other module asks which family a model is.

This module imports neither torch nor the networks: an entry names its factory by import path
(``"fplib.models.nafp:build"``), imported the first time the variant is built, so the command line can list
the variants and their training settings without loading torch. A :class:`Variant` says:

* ``factory(fe=FrontEnd, **settings) -> nn.Module``: the network (a callable, or ``"module:name"``). Its
  ``forward`` maps log-mel windows ``float32 [B, 1, n_mels, n_frames]`` to ``float32 [B, D]``: unit vectors
  for a ``float`` kind, relaxed codes in [-1, 1] (binarised by their sign) for a ``binary`` kind.
* ``defaults``: the network's settings (``factory``'s keyword arguments).
* ``kind``: ``"float"`` (unit vectors, compared by inner product) or ``"binary"`` (D-bit codes, stored
  packed in D / 8 bytes and compared by Hamming distance); see :mod:`fplib.codes`.
* ``description``: one line for the command line's ``--help``.
* ``frontend``: front-end settings the variant needs that differ from :class:`~fplib.features.FrontEnd`'s
  defaults (e.g. 100 frames per second instead of 32); :func:`frontend_for` applies them, and training
  data made with another front end is refused.
* ``loss``: the training loss's name, for plots and tables (``"NT-Xent"``).
* ``objective(net, model, x_a, x_b, temperature, gather=True) -> (loss, z_a, z_b)``: the training objective
  on a batch of (clean, degraded) pairs (a callable, or ``"module:name"``); ``net`` is the module to call
  (the model itself or its DistributedDataParallel wrapper), ``model`` the bare module (its settings);
  ``gather``: whether terms over the batch may gather the other ranks' outputs under torch.distributed
  (validation runs on one rank and passes False); ``z_a, z_b`` are the two views' outputs, which
  validation scores with the same retrieval metric for every family. The default is
  :func:`fplib.losses.contrastive` (NT-Xent).
* ``training``: the family's training settings where they differ from fplib's (keys are fields of
  :class:`fplib.train_config.TrainConfig`: temperature, learning rate, optimiser, batch size, segments per
  song, ...); a TrainConfig takes them for every setting it is not given, and records them.

The built-in families are the entries of :data:`BUILTIN` below; a new family is one module with its
network and factory plus one entry there. :func:`register` adds or replaces a variant at run time (tests,
plugins) and :func:`unregister` removes it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from fplib.features import FrontEnd

# fplib.codes.KINDS (that module imports torch, which this one must not)
_KINDS = ("float", "binary")
CONTRASTIVE = "fplib.losses:contrastive"


@dataclass(frozen=True)
class Variant:
    name: str
    factory: Callable[..., Any] | str  # a callable, or "module:name" imported when first built
    defaults: dict = field(default_factory=dict)  # the network's settings
    kind: str = "float"
    description: str = ""  # one line, for --help
    frontend: dict = field(default_factory=dict)  # front-end settings other than FrontEnd's defaults
    loss: str = "NT-Xent"  # the training loss's name, for plots and tables
    objective: Callable[..., Any] | str = CONTRASTIVE  # a callable, or "module:name"
    training: dict = field(default_factory=dict)  # TrainConfig settings of this variant (see the module docstring)
    family: str = ""  # the paper's family (nafp, attn, samaf), for tables

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if not self.family:
            object.__setattr__(self, "family", self.name.split("_")[0])

    def make(self) -> Callable[..., nn.Module]:
        """The factory, imported if given by path."""
        return _resolve(self.factory)

    def objective_fn(self) -> Callable[..., Any]:
        """The training objective, imported if given by path."""
        return _resolve(self.objective)


def _resolve(ref: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


_SAMAF = dict(
    kind="binary",
    loss="SAMAF",  # reconstruction, bit terms, hash and NT-Xent on the codes
    objective="fplib.models.samaf:samaf_objective",
    family="samaf",
)
_ATTN_TRAINING = {"temperature": 0.1}  # the released code's NT-Xent temperature (fplib.models.attn)
# 100 frames per second at 8 kHz: 32-ms frames every 10 ms, 40 mel bands for 13 MFCCs (fplib.models.samaf)
_MFCC_FRONTEND = {"n_fft": 256, "stft_hop": 80, "n_mels": 40}

BUILTIN: tuple[Variant, ...] = (
    Variant("nafp", "fplib.models.nafp:build", description="NAFP as published (Chang 2021)"),
    Variant(
        "nafp_small",
        "fplib.models.nafp:build",
        {"width": 0.25},
        description="NAFP at a quarter of the width, for CPU training and the demo",
    ),
    Variant(
        "attn",
        "fplib.models.attn:build",
        training=_ATTN_TRAINING,
        description="attention-based embeddings (Singh 2022)",
    ),
    Variant(
        "attn_small",
        "fplib.models.attn:build",
        {"width": 0.25},
        training=_ATTN_TRAINING,
        description="ATTN at a quarter of the width, for CPU training and the demo",
    ),
    Variant(
        "samaf",
        "fplib.models.samaf:build",
        **_SAMAF,
        description="codes from a sequence-to-sequence LSTM autoencoder (Baez-Suarez 2020)",
    ),
    Variant(
        "samaf_small",
        "fplib.models.samaf:build",
        {"hidden": 64, "layers": 1},
        **_SAMAF,
        description="SAMAF with one layer of 64 units, for CPU training and the demo",
    ),
    Variant(
        "samaf_mfcc",
        "fplib.models.samaf:build",
        {"features": "mfcc"},
        frontend=_MFCC_FRONTEND,
        **_SAMAF,
        description="SAMAF on 13 MFCCs at 100 frames/s, its paper's input",
    ),
)

_REGISTRY: dict[str, Variant] = {v.name: v for v in BUILTIN}


def register(
    name: str,
    factory: Callable[..., Any] | str,
    *,
    kind: str = "float",
    description: str = "",
    frontend: dict | None = None,
    loss: str = "NT-Xent",
    objective: Callable[..., Any] | str | None = None,
    training: dict | None = None,
    family: str | None = None,
    **defaults,
) -> Variant:
    """Add a variant at run time (tests, plugins): ``factory(fe=FrontEnd, **settings) -> nn.Module``;
    ``defaults`` are its settings; the other arguments are :class:`Variant`'s. Registering a name again
    replaces it (and returns the variant, so a test can restore the old one with :func:`add`)."""
    v = Variant(
        name,
        factory,
        dict(defaults),
        kind,
        description,
        dict(frontend or {}),
        loss,
        objective or CONTRASTIVE,
        dict(training or {}),
        family or "",
    )
    return add(v)


def add(v: Variant) -> Variant:
    """Add (or replace) a variant given as a :class:`Variant`."""
    _REGISTRY[v.name] = v
    return v


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def variant(name: str) -> Variant:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {model_names()}")
    return _REGISTRY[name]


def describe() -> str:
    """One line per variant (name, kind, description), for ``--help``."""
    return "; ".join(
        f"{v.name} ({v.kind}{': ' + v.description if v.description else ''})"
        for v in (_REGISTRY[n] for n in model_names())
    )


def build_model(name: str, fe: FrontEnd | None = None, **settings) -> tuple[nn.Module, dict]:
    """Build a registered model; returns it and the full settings (defaults + ``settings``), which a
    checkpoint stores so that :func:`build_model` can rebuild the same network. ``fe``: FrontEnd() if None."""
    if fe is None:
        from fplib.features import FrontEnd

        fe = FrontEnd()
    v = variant(name)
    full = {**v.defaults, **settings}
    model = v.make()(fe=fe, **full)
    if hasattr(model, "settings"):
        full = asdict(model.settings)
    model.variant_name, model.kind = name, v.kind  # what the rest of fplib asks of a model (see kind_of_model)
    return model, full


def kind_of_model(model: nn.Module) -> str:
    """How a built model's fingerprints are stored and compared (``"float"`` for a module not built by
    :func:`build_model`)."""
    return getattr(model, "kind", "float")


def frontend_for(name: str, **overrides) -> FrontEnd:
    """The front end to train ``name`` with: FrontEnd's defaults, the variant's own settings, then ``overrides``
    (e.g. ``f_min``)."""
    from fplib.features import FrontEnd

    return FrontEnd(**{**variant(name).frontend, **overrides})


def kind_of(name: str) -> str:
    """``"float"`` or ``"binary"``: how a registered model's fingerprints are stored, indexed and compared."""
    return variant(name).kind


def loss_name(name: str | None) -> str:
    """The training loss of a registered model, for plots and tables (``"loss"`` for an unknown one)."""
    return _REGISTRY[name].loss if name in _REGISTRY else "loss"


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
