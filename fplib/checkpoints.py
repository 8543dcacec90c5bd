"""Checkpoints: writing and reading them, the models they hold, and the device to run on.

fplib checkpoints are ``torch.save`` archives of tensors and plain values only (weights, ``model_name``,
``model_settings``, ``frontend``, and for training checkpoints the optimiser, scheduler and RNG states),
read with ``torch.load(weights_only=True)``: no arbitrary pickle. Recognition, extraction and the
notebooks load models from here, without importing the training code.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from fplib import storage
from fplib.errors import BadFileError, check_file
from fplib.features import FrontEnd
from fplib.models.registry import build_model, kind_of, kind_of_model, model_names
from fplib.storage import file_checksum


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomic ``torch.save`` of a dict of tensors and plain Python values. The same state gives the same
    bytes (saved through a file object, the archive is not named after the temporary file); a full disk
    raises :class:`fplib.storage.DiskFullError`."""
    with storage.atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only``: tensors and plain values only, no code). A file torch
    cannot load so is a :class:`BadFileError` saying what the file is (:func:`_unloadable`); torch's own
    message, which advises loading it unsafely or filing an issue with torch, is never passed on."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise BadFileError(path, f"not a loadable fplib checkpoint: {_unloadable(path, e)}") from None


def read_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, FrontEnd]:
    """A trained fingerprinter and its front end, from a checkpoint, in eval mode (weights stored in
    half precision, as in a slim exported checkpoint, are cast back to float32)."""
    ck = load_checkpoint(path, device)
    for key in ("frontend", "model_name", "model_settings", "model"):
        if key not in ck:
            raise ValueError(f"{path}: not an fplib model checkpoint (no {key!r})")
    fe = FrontEnd(**ck["frontend"])
    model, _ = build_model(ck["model_name"], fe, **ck["model_settings"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()})
    return model.to(device).eval(), fe


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, FrontEnd]:
    """A user-supplied checkpoint's model (eval mode) and front end (:func:`read_model`), or
    :class:`BadFileError` naming the file and what is wrong with it (missing, a folder, empty, truncated,
    not a torch file, a pickle of other objects, a bare state dict, weights of another architecture)."""
    path = check_file(checkpoint)
    device = resolve_device(device)  # a bad device is named as such, not as a problem of the file
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return read_model(path, device)
    except Exception as e:  # every failure is reported as what is wrong with the file
        raise BadFileError(path, _checkpoint_problem(path, e)) from None


_FPLIB_KEYS = ("model", "model_name", "model_settings", "frontend")


def _checkpoint_problem(path: Path, err: Exception) -> str:
    """What is wrong with a checkpoint that :func:`read_model` could not load (``err``)."""
    first = " ".join(str(err).split("\n")[0].split())[:200]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        return _unloadable(path, e)
    if not isinstance(ck, dict):
        return f"not an fplib model checkpoint: it holds a {type(ck).__name__}, not a dict of weights and settings"
    if ck and all(isinstance(v, torch.Tensor) for v in ck.values()):
        return (
            f"a bare state dict ({len(ck)} tensors, no settings): an fplib checkpoint also holds "
            f"{', '.join(repr(k) for k in _FPLIB_KEYS[1:])}, as trainer and fplib.pretrained.export write it"
        )
    missing = [k for k in _FPLIB_KEYS if k not in ck]
    if missing:
        return f"not an fplib model checkpoint (no {', '.join(repr(k) for k in missing)})"
    if ck["model_name"] not in model_names():
        return f"unknown architecture {ck['model_name']!r} (fplib has {', '.join(model_names())})"
    if not isinstance(ck["frontend"], dict) or not isinstance(ck["model_settings"], dict):
        return "its 'frontend' and 'model_settings' are not dicts of settings"
    try:
        FrontEnd(**ck["frontend"])
    except (TypeError, ValueError) as e:
        return f"invalid front-end settings ({e})"
    if isinstance(err, TypeError) and "argument" in str(err):
        return (
            f"its model settings {ck['model_settings']} are not those of the {ck['model_name']!r} architecture "
            f"({first})"
        )
    if isinstance(err, RuntimeError) and "state_dict" in str(err):
        return (
            f"its weights do not fit the {ck['model_name']!r} architecture with settings {ck['model_settings']} "
            f"({_first_mismatch(str(err))})"
        )
    return f"not a usable fplib model checkpoint ({type(err).__name__}: {first})"


def _unloadable(path: Path, err: Exception) -> str:
    """What a file is that ``torch.load(weights_only=True)`` could not load (``err``), in fplib's words: torch's
    message advises loading it with ``weights_only=False`` (running whatever code it holds) or filing an
    issue with torch, neither of which is right for a file that is not an fplib checkpoint."""
    msg = " ".join(str(err).split())
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        if head[:1] == b"\x80":
            return (
                "a plain Python pickle, not a torch checkpoint (fplib checkpoints are torch.save archives "
                "written by trainer or fplib.pretrained.export)"
            )
        return "not a torch checkpoint (not a torch.save archive)"
    if "Weights only load failed" in msg or isinstance(err, pickle.UnpicklingError):
        found = re.search(r"Unsupported global: GLOBAL (\S+)", msg)
        what = f" (such as {found.group(1)})" if found else ""
        return (
            f"holds pickled Python objects{what}, not only tensors and settings, e.g. a whole saved model: "
            f"not an fplib checkpoint (fplib never unpickles code)"
        )
    return "truncated or corrupt torch file (incomplete archive); copy or train it again"


def _first_mismatch(msg: str) -> str:
    """The first problem torch's ``load_state_dict`` lists (its message's second line)."""
    lines = [" ".join(ln.split()).rstrip(".") for ln in msg.splitlines()[1:] if ln.strip()]
    more = f"; {len(lines) - 1} more" if len(lines) > 1 else ""
    return (lines[0][:200] if lines else " ".join(msg.split())[:200]) + more


def same_model(a: dict, b: dict) -> bool:
    """Whether two model descriptions name the same model: by the checkpoint's SHA-256 when both have
    one (a copy of the checkpoint at another path is the same model), else by the whole description."""
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]
    return a == b


def model_description(checkpoint: str | os.PathLike, model: torch.nn.Module | None = None) -> dict:
    """How a catalogue records the model that made its fingerprints: the checkpoint's path and SHA-256,
    and with the loaded ``model`` its registered name and fingerprint kind (``float`` or ``binary``)."""
    out = {"checkpoint": str(Path(checkpoint).resolve()), "sha256": file_checksum(checkpoint)}
    if model is not None:
        name = getattr(model, "variant_name", None)
    else:  # read from the checkpoint (tensors and plain values only)
        name = load_checkpoint(checkpoint).get("model_name")
    kind = kind_of_model(model) if model is not None else (kind_of(name) if name in model_names() else "float")
    return out | {"name": name, "kind": kind}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the GPU if there is one, else the CPU; anything else as given, checked: a ``ValueError``
    naming the device when torch does not know the name or this machine has no such GPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device {device!r}: not a torch device ({str(e).splitlines()[0][:120]}); cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {device!r}: this machine has no usable CUDA GPU; use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {device!r}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}")
    return dev
