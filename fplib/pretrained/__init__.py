"""The shipped pretrained models: ``NAME.pt`` and its card ``NAME.json`` for each of :data:`NAMES` (the
default first: ``fplib-small-v2``, trained on recorded music; ``fplib-small-v1``, trained on synthetic
music, stays loadable by name), in this folder (package data), or in ``$FPLIB_PRETRAINED_DIR`` when that
is set (every function also takes the folder as an argument). A model trained on the real corpus also
ships ``NAME.training.json``: the corpus's songs (package, file, licence, SHA-256 of the decoded audio, no
audio), which the evaluation refuses as test songs (``fplib.heldout.model_corpora``).

The card records the file name, its SHA-256, the architecture, settings and parameter count, the
front end, the default "not in the database" threshold (in the ``NAME.threshold.json`` format that
``recognize`` reads: ``threshold``, ``target_fpr``, ``phases``, ``decision``), the command that trained
it and the licence. :func:`default_model` checks the file against the card's checksum before anything
uses it. :func:`export` turns a training checkpoint into such a slim model file plus its card.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fplib import storage
from fplib.errors import BadFileError, json_type, read_json

# the shipped models, the default first; every one stays loadable by name (``--model fplib-small-v1``)
NAMES = ("fplib-small-v2", "fplib-small-v1")
NAME = NAMES[0]
DIR_ENV = "FPLIB_PRETRAINED_DIR"
# what a training checkpoint holds that inference does not need
_TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng_cpu", "stale_epochs", "epoch")
_FLOAT16_MAX = 65504.0
# what the card says beyond what export computes
CARD_FIELDS = ("threshold", "training_command", "licence")
_COMPUTED = ("file", "sha256", "bytes", "arch", "model_settings", "parameters", "frontend", "weights_dtype")


class PretrainedError(RuntimeError):
    """The shipped model or its card is missing or does not match."""


def directory(folder: str | os.PathLike | None = None) -> Path:
    """Where the shipped model lives: ``folder``, else ``$FPLIB_PRETRAINED_DIR``, else this package."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get(DIR_ENV)
    return Path(env).expanduser() if env else Path(__file__).resolve().parent


def _name(name: str | None) -> str:
    if name is None:
        return NAME
    if name not in NAMES:
        raise PretrainedError(f"{name!r} is not a shipped model; the shipped models are {', '.join(NAMES)}")
    return name


def card(folder: str | os.PathLike | None = None, name: str | None = None) -> dict:
    """A shipped model's card (``NAME.json``; default: the default model's)."""
    name = _name(name)
    path = directory(folder) / f"{name}.json"
    if not path.exists():
        raise PretrainedError(
            f"{path}: the shipped model's card is missing (the pretrained model is not installed "
            f"here); pass --model CHECKPOINT, or set {DIR_ENV} to a folder holding {name}.pt and "
            f"{name}.json"
        )
    c = read_json(path, "model card")
    if not isinstance(c, dict) or not isinstance(c.get("sha256"), str):
        what = json_type(c) if not isinstance(c, dict) else "no 'sha256'"
        raise BadFileError(path, f"not a model card ({what}); reinstall fplib or pass --model CHECKPOINT")
    return c


_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> checksum already verified


def default_model(folder: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """The path of the shipped model file (default: the default model, :data:`NAME`; ``name``: any of
    :data:`NAMES`), after checking its SHA-256 against the card."""
    name = _name(name)
    c = card(folder, name)
    path = directory(folder) / c.get("file", f"{name}.pt")
    if not path.exists():
        raise PretrainedError(f"{path}: the shipped model file is missing; pass --model CHECKPOINT, or set {DIR_ENV}")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if _verified.get(key) != c["sha256"]:
        got = storage.file_checksum(path)
        if got != c["sha256"]:
            raise PretrainedError(
                f"{path}: SHA-256 {got} differs from the card's {c['sha256']}: the file is "
                f"damaged or was replaced; reinstall fplib or pass --model CHECKPOINT"
            )
        _verified[key] = got
    return path


def default_threshold(folder: str | os.PathLike | None = None, name: str | None = None) -> dict | None:
    """The card's default threshold (``NAME.threshold.json`` format), or None if it has none or there is
    no card."""
    try:
        return card(folder, name).get("threshold")
    except (PretrainedError, BadFileError):
        return None


def shipped_name(checksum: str | None, folder: str | os.PathLike | None = None) -> str | None:
    """The name of the shipped model whose SHA-256 is ``checksum`` (as a catalogue records its model), or None."""
    for name in NAMES:
        try:
            if checksum and card(folder, name).get("sha256") == checksum:
                return name
        except (PretrainedError, BadFileError):
            continue
    return None


def is_shipped(checksum: str | None, folder: str | os.PathLike | None = None) -> bool:
    """Whether ``checksum`` (a SHA-256, as a catalogue records its model) is a shipped model's."""
    return shipped_name(checksum, folder) is not None


def export(checkpoint: str | os.PathLike, out_path: str | os.PathLike, card_fields: dict | None = None) -> dict:
    """Write a slim model file ``out_path`` from a training checkpoint and its card next to it
    (``out_path`` with ``.json``); returns the card.

    The slim file keeps what :func:`fplib.checkpoints.load_model` needs (weights, architecture, settings,
    front end) plus the training configuration and last metrics; floating-point weights are stored as
    float16 (half the size; load_model casts them back), the optimiser, scheduler, scaler and RNG state
    are dropped. Both files are written atomically, the model first. ``card_fields`` (e.g. ``threshold``,
    ``training_command``, ``licence``; :data:`CARD_FIELDS` are always present, None when not given) are
    added to the computed fields (file, sha256, bytes, arch, model_settings, parameters, frontend,
    exported), which they cannot override. The default threshold is best calibrated with the exported
    file itself (``calibrate_threshold --model OUT.pt``) and then added with :func:`update_card`."""
    import torch

    from fplib.checkpoints import load_checkpoint, load_model, save_checkpoint

    out_path = Path(out_path)
    ck = load_checkpoint(checkpoint)
    for key in ("model", "model_name", "model_settings", "frontend"):
        if key not in ck:
            raise ValueError(f"{checkpoint}: not an fplib model checkpoint (no {key!r})")
    weights = {}
    for k, v in ck["model"].items():
        if v.is_floating_point():
            if v.numel() and v.abs().max().item() > _FLOAT16_MAX:
                raise ValueError(f"{checkpoint}: weight {k} exceeds the float16 range; cannot export in half precision")
            v = v.to(torch.float16)
        weights[k] = v.contiguous()
    slim = {k: v for k, v in ck.items() if k not in _TRAINING_STATE and k != "model"}
    slim["model"] = weights
    save_checkpoint(out_path, slim)
    model, fe = load_model(out_path)  # it loads, and it is the model it claims to be
    computed = {
        "file": out_path.name,
        "sha256": storage.file_checksum(out_path),
        "bytes": out_path.stat().st_size,
        "arch": ck["model_name"],
        "model_settings": ck["model_settings"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "frontend": fe.to_dict(),
        "weights_dtype": "float16",
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "source_checkpoint_sha256": storage.file_checksum(checkpoint),
    }
    card_ = {"name": out_path.stem, **dict.fromkeys(CARD_FIELDS), **(card_fields or {}), **computed}
    storage.write_json(out_path.with_suffix(".json"), card_)
    return card_


def update_card(fields: dict, folder: str | os.PathLike | None = None, name: str | None = None) -> dict:
    """Merge ``fields`` (e.g. ``{"threshold": <NAME.threshold.json content>}``) into the shipped model's
    card, atomically, without touching the model file; the computed fields cannot be changed."""
    clash = sorted(set(fields) & set(_COMPUTED))
    if clash:
        raise ValueError(f"{clash}: computed by export from the model file; export again to change them")
    name = _name(name)
    c = {**card(folder, name), **fields}
    storage.write_json(directory(folder) / f"{name}.json", c)
    return c
