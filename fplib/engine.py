"""Inference engine: runs a fingerprinting network on log-mel batches as fast as this machine allows.

On CPU the network runs in ONNX Runtime: the model is exported once with ``torch.onnx.export`` and
the session uses as many threads as torch does, without busy-waiting between runs (spinning threads
would hold the cores torch's front end needs: a 1-s query then took 41 ms instead of 5 ms). Measured
on a 2-core CPU at 256 windows per batch (``benchmarks/bench_train.py`` prints the figures beside
torch's own in one run): 1.1-2x torch's eager speed for ``nafp_small`` and 1.5-1.8x for the full
NAFP (the machine is noisy); ``torch.compile`` (default and max-autotune), channels-last and
TorchScript freezing were each within 10 % of eager there. The outputs agree with torch's to about
1e-6.

The export costs a few seconds, so the exported graph is cached on disk under
``$FPLIB_CACHE`` (default ``~/.cache/fplib``) in ``onnx/<key>.onnx``, where the key hashes the model's
class, settings, weights and the torch and onnx versions: a model is exported once per machine, a
retrained model (other weights) gets a new key, and the 16 most recently used graphs are kept. On
GPU, in training mode, with ``FPLIB_ENGINE=torch`` in the environment, or where the export or ONNX
Runtime fails (the reason is warned once), the torch module itself runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sys
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fplib.storage import atomic_path

ENGINE_ENV = "FPLIB_ENGINE"  # "onnxruntime" (default on CPU) or "torch"
CACHE_ENV = "FPLIB_CACHE"
CACHE_KEEP = 16  # exported graphs kept on disk (least recently used removed first)

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {threads: (version, runner)}
_warned: set[str] = set()


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fplib")
    return Path(root)


def _version(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or updated in place (an optimiser step)."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


def model_key(model: torch.nn.Module, window_shape: tuple[int, ...] = (1, 256, 32)) -> str:
    """SHA-256 of what determines the exported graph: class, settings, weights, the shape of one input
    window, tool versions."""
    import onnx

    h = hashlib.sha256()
    h.update(repr(tuple(window_shape)).encode())
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    h.update(repr(getattr(model, "settings", None)).encode() + repr(getattr(model, "fe", None)).encode())
    h.update(f"torch {torch.__version__} onnx {onnx.__version__}".encode())
    for name, t in model.state_dict().items():
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _export(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """The model's graph as ONNX bytes, the batch dimension dynamic (torch's exporter, quietly)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(model, (example,), input_names=["x"], output_names=["y"],
                                     dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                                     verbose=False, optimize=True)
        return prog.model_proto.SerializeToString()
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _prune(folder: Path, keep: int = CACHE_KEEP) -> None:
    """Remove all but the ``keep`` most recently used exported graphs."""
    graphs = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in graphs[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()


class OnnxRunner:
    """``float32 [B, 1, n_mels, n_frames]`` -> ``float32 [B, D]`` through an ONNX Runtime session."""

    def __init__(self, model: torch.nn.Module, example: torch.Tensor, threads: int):
        import onnxruntime as ort

        path = cache_dir() / "onnx" / f"{model_key(model, tuple(example.shape[1:]))}.onnx"
        try:
            data = path.read_bytes()
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: kept by _prune
        except OSError:
            # the only pause of a first use (seconds to tens of seconds): say what it is, once per model
            print(f"preparing {getattr(model, 'variant_name', type(model).__name__)} for ONNX Runtime (once per "
                  f"model; cached in {path.parent})", file=sys.stderr, flush=True)
            data = _export(model, example[:1].expand(2, *example.shape[1:]).detach().cpu().float().contiguous())
            with contextlib.suppress(OSError):  # a read-only home only costs the next export
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    tmp.write_bytes(data)
                _prune(path.parent)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # no busy-waiting between runs: spinning threads would hold the cores that torch's own threads
        # (the front end, between two runs) need
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": x})[0])


def runner(model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """What to call for ``model``'s inference on batches like ``example`` (see the module docstring).
    Sessions use ``torch.get_num_threads()`` threads; they are kept per model object and thread count,
    and rebuilt when the model's weights change."""
    choice = os.environ.get(ENGINE_ENV, "onnxruntime")
    if example.device.type != "cpu" or choice == "torch" or model.training:
        return model
    if choice != "onnxruntime":
        raise ValueError(f"{ENGINE_ENV}={choice!r}: use 'onnxruntime' or 'torch'")
    version, threads = _version(model), torch.get_num_threads()
    cached = _SESSIONS.setdefault(model, {})
    if cached.get(threads, (None,))[0] == version:
        return cached[threads][1]
    try:
        run: Callable = OnnxRunner(model, example, threads)
    except Exception as e:  # noqa: BLE001 - any failure of the optional engine falls back to torch
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if reason not in _warned:
            _warned.add(reason)
            warnings.warn(f"ONNX Runtime unavailable for {type(model).__name__} ({reason}); running torch",
                          RuntimeWarning, stacklevel=2)
        run = model
    cached[threads] = (version, run)
    return run
