"""The registry of fingerprinting networks: a family registers its variants here by name.

A registered variant carries everything the rest of fplib needs to know about it, so no other module
asks which family a model is:

* ``factory(fe=FrontEnd, **settings) -> nn.Module``: the network. Its ``forward`` maps log-mel windows
  ``float32 [B, 1, n_mels, n_frames]`` to ``float32 [B, D]``: unit vectors for a ``float`` kind, relaxed
  codes in [-1, 1] (binarised by their sign) for a ``binary`` kind.
* ``kind``: ``"float"`` (unit vectors, compared by inner product) or ``"binary"`` (D-bit codes, stored
  packed in D / 8 bytes and compared by Hamming distance); see :mod:`fplib.codes`.
* ``objective(net, model, x_a, x_b, temperature, gather=True) -> (loss, z_a, z_b)``: the training objective
  on a batch of (clean, degraded) pairs; ``net`` is the module to call (the model itself or its
  DistributedDataParallel wrapper), ``model`` the bare module (its settings); ``gather``: whether terms over
  the batch may gather the other ranks' outputs under torch.distributed (validation runs on one rank and
  passes False); ``z_a, z_b`` are the two views' outputs, which validation scores with the same retrieval
  metric for every family. None means :func:`fplib.losses.contrastive` (NT-Xent).
* ``frontend``: front-end settings the variant needs that differ from :class:`~fplib.features.FrontEnd`'s
  defaults (e.g. 100 frames per second instead of 32); :func:`frontend_for` applies them, and training
  data made with another front end is refused.
* ``train_defaults``: training settings of the family's paper where they differ from fplib's defaults
  (temperature, learning rate, ...); the trainer uses them unless told otherwise and records them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from torch import nn

from fplib.codes import KINDS
from fplib.features import FrontEnd


@dataclass(frozen=True)
class Variant:
    name: str
    factory: Callable[..., nn.Module]
    defaults: dict
    kind: str = "float"
    objective: Callable | None = None  # None: contrastive (NT-Xent), fplib.losses.contrastive
    train_defaults: dict = field(default_factory=dict)
    family: str = ""  # the paper's family (nafp, attn, samaf), for tables
    frontend: dict = field(default_factory=dict)  # front-end settings other than FrontEnd's defaults


_REGISTRY: dict[str, Variant] = {}


def register(name: str, factory: Callable[..., nn.Module], *, kind: str = "float", objective: Callable | None = None,
             train_defaults: dict | None = None, family: str | None = None, frontend: dict | None = None,
             **defaults) -> Variant:
    """Add a model: ``factory(fe=FrontEnd, **settings) -> nn.Module``; ``defaults`` are its settings.
    Registering a name again replaces it (and returns the variant, so a test can restore the old one)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    v = Variant(name, factory, dict(defaults), kind, objective, dict(train_defaults or {}),
                family or name.split("_")[0], dict(frontend or {}))
    _REGISTRY[name] = v
    return v


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def variant(name: str) -> Variant:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {model_names()}")
    return _REGISTRY[name]


def build_model(name: str, fe: FrontEnd = FrontEnd(), **settings) -> tuple[nn.Module, dict]:
    """Build a registered model; returns it and the full settings (defaults + ``settings``), which a
    checkpoint stores so that :func:`build_model` can rebuild the same network."""
    v = variant(name)
    full = {**v.defaults, **settings}
    model = v.factory(fe=fe, **full)
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
    return FrontEnd(**{**variant(name).frontend, **overrides})


def kind_of(name: str) -> str:
    """``"float"`` or ``"binary"``: how a registered model's fingerprints are stored, indexed and compared."""
    return variant(name).kind


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
