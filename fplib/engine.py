"""Inference engine: runs a fingerprinting network on log-mel batches as fast as this machine allows.

On CPU the network runs in OpenVINO or ONNX Runtime (whichever its family runs fastest in, below):
the model is exported once with ``torch.onnx.export`` and both runtimes read that graph. Sessions use
as many threads as torch does, in float32 (OpenVINO is told so: on CPUs with bfloat16 units it would
otherwise compute in bfloat16), with latency-first settings (one stream, no busy-waiting between
runs: spinning threads held the cores that torch's front end needs between two runs, and a 1-s query
took 41 ms instead of 5 ms). The same holds the other way round: torch's idle threads spin for a few
milliseconds after an operation, so :func:`fplib.extraction.fingerprint` runs a query's front end on one
thread (``torch_threads``), and the full NAFP's network for a 1-s query takes 7-8 ms instead of 11-13.
Measured on a 2-core AVX2 CPU at 256 windows per batch
(``benchmarks/bench_train.py`` prints the figures side by side in one run):

============  ===========================  ==============================
model         OpenVINO / ONNX Runtime      OpenVINO / torch eager
============  ===========================  ==============================
nafp          1.17-1.46x                   1.8-3.3x (61-83 % of the
                                           machine's float32 matmul rate)
nafp_small    1.4-1.7x                     2.1x
============  ===========================  ==============================

OpenVINO fuses each convolution with its bias and ELU and keeps one channels-last layout through the
LayerNorms (16 convolutions, 16 normalisations and 5 reorders for the whole network), where ONNX
Runtime spent a third of its time on separate ELU passes and layout reorders; it is also ahead at
every batch size from 1 window (1.2-1.6x ONNX Runtime). ``torch.compile`` (default
and max-autotune), channels-last and TorchScript freezing were each within 10 % of eager. The
outputs agree with torch's to about 1e-6.

The export costs a few seconds, so the exported graph is cached on disk under
``$FPLIB_CACHE`` (default ``~/.cache/fplib``) in ``onnx/<key>.onnx``, where the key hashes the model's
class, settings, weights and the torch and onnx versions: a model is exported once per machine, a
retrained model (other weights) gets a new key, and the 16 most recently used graphs are kept.
Each model family names the runtime measured fastest for it (``cpu_runtime``): OpenVINO for NAFP;
ONNX Runtime for ATTN, whose attention OpenVINO ran at 0.6-0.8x ONNX Runtime's speed; torch itself for
SAMAF, whose LSTMs neither runtime ran faster end to end. ``FPLIB_ENGINE`` overrides it:
``openvino``, ``onnxruntime`` or ``torch``. A runtime that fails, or whose output for the first batch
does not match torch's, is warned about once and the next one runs (OpenVINO, then ONNX Runtime, then
torch); on GPU and in training mode the torch module itself runs. OpenVINO is not tried at all with
``ONEDNN_MAX_CPU_ISA=SSE41``: its CPU plugin needs SSE4.2, and capped below it, it returned no rows for
some models and crashed the process for others.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fplib.storage import atomic_path

ENGINE_ENV = "FPLIB_ENGINE"  # "openvino", "onnxruntime" or "torch": overrides the model's cpu_runtime
ENGINES = ("openvino", "onnxruntime", "torch")
CACHE_ENV = "FPLIB_CACHE"
CACHE_KEEP = 16  # exported graphs kept on disk (least recently used removed first)

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {threads: (version, runner)}
_warned: set[str] = set()


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fplib"
    )
    return Path(root)


def _version(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or updated in place (an optimiser step). Read
    from each module's own tables: half the time of ``parameters()`` and ``buffers()``, and it runs once
    per query."""
    return tuple(
        (t.data_ptr(), t._version)
        for m in model.modules()
        for table in (m._parameters, m._buffers)
        for t in table.values()
        if t is not None
    )


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
            prog = torch.onnx.export(
                model,
                (example,),
                input_names=["x"],
                output_names=["y"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                verbose=False,
                optimize=True,
            )
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


def exported_graph(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """``model``'s ONNX graph (batch dimension dynamic), from the disk cache or exported now."""
    path = cache_dir() / "onnx" / f"{model_key(model, tuple(example.shape[1:]))}.onnx"
    try:
        data = path.read_bytes()
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: kept by _prune
        return data
    except OSError:
        pass
    # the only pause of a first use (seconds to tens of seconds): say what it is, once per model
    # a notice, not an error: in a notebook it goes to the cell's standard output (a kernel shows standard
    # error in red); on the command line to standard error, away from results on standard output (--json)
    in_kernel = type(sys.stderr).__module__.startswith("ipykernel")
    print(
        f"preparing {getattr(model, 'variant_name', type(model).__name__)} for fast CPU inference (once per "
        f"model; cached in {path.parent})",
        file=sys.stdout if in_kernel else sys.stderr,
        flush=True,
    )
    data = _export(model, example[:1].expand(2, *example.shape[1:]).detach().cpu().float().contiguous())
    with contextlib.suppress(OSError):  # a read-only home only costs the next export
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        _prune(path.parent)
    return data


class OnnxRunner:
    """``float32 [B, 1, n_mels, n_frames]`` -> ``float32 [B, D]`` through an ONNX Runtime session."""

    def __init__(self, model: torch.nn.Module, example: torch.Tensor, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # no busy-waiting between runs (see the module docstring)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(exported_graph(model, example), so, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": x})[0])


@functools.cache
def _openvino_core():
    """One OpenVINO core for the process, kept to its end: a compiled model destroyed after the core
    that made it crashed the process (seen in the test suite)."""
    import openvino as ov

    return ov.Core()


class OpenVinoRunner:
    """``float32 [B, 1, n_mels, n_frames]`` -> ``float32 [B, D]`` through an OpenVINO compiled model (CPU,
    float32, latency hint: one stream using ``threads`` threads)."""

    def __init__(self, model: torch.nn.Module, example: torch.Tensor, threads: int):
        core = _openvino_core()
        graph = core.read_model(exported_graph(model, example))
        self.compiled = core.compile_model(
            graph,
            "CPU",
            {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"},
        )
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.request.infer({0: x})[0])  # inputs and outputs copied


_RUNNERS = {"openvino": OpenVinoRunner, "onnxruntime": OnnxRunner}
AGREE_ATOL = 1e-3  # a runtime's fingerprints (unit vectors) must match torch's to this on the first batch


def _agreeing(run, model: torch.nn.Module, example: torch.Tensor):
    """``run``, once its output for ``example`` has matched torch's (shape, finite values, within
    :data:`AGREE_ATOL`), or ValueError: a runtime can also fail without raising (with oneDNN limited to
    SSE4.1 by ``ONEDNN_MAX_CPU_ISA``, OpenVINO 2025 returned no rows at all)."""
    x = example[:2].detach().cpu().float().contiguous()
    with torch.inference_mode():
        want = model(x).float()
    got = run(x).float()
    if got.shape != want.shape or not torch.isfinite(got).all():
        raise ValueError(
            f"returned an output of shape {tuple(got.shape)} for {tuple(want.shape)} "
            f"({'finite' if torch.isfinite(got).all() else 'not finite'})"
        )
    err = float((got - want).abs().max())
    if err > AGREE_ATOL:
        raise ValueError(f"its output differs from torch's by {err:.2g} (more than {AGREE_ATOL:g})")
    return run


_THREADS_LOCK = threading.Lock()
_threads_open: dict[object, int] = {}  # torch_threads blocks open now, in any thread, oldest first: token -> n
_threads_before = [0]  # torch's count before the first of them


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block. The count is one setting for the
    whole process, so blocks that are open at the same time (nested, or in several threads: a server
    answering queries in threads) share it: the most recently opened block's ``n`` holds, and when
    the last one ends the count from before the first is restored (restoring per block could leave
    the count stuck at another block's ``n``)."""
    mine = object()
    with _THREADS_LOCK:
        if not _threads_open:
            _threads_before[0] = torch.get_num_threads()
        _threads_open[mine] = n
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            del _threads_open[mine]
            torch.set_num_threads(next(reversed(_threads_open.values())) if _threads_open else _threads_before[0])


def runner(model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """What to call for ``model``'s inference on batches like ``example`` (see the module docstring).
    Sessions use ``torch.get_num_threads()`` threads; they are kept per model object and thread count,
    and rebuilt when the model's weights change."""
    choice = os.environ.get(ENGINE_ENV) or getattr(model, "cpu_runtime", ENGINES[0])
    if choice not in ENGINES:
        raise ValueError(f"{ENGINE_ENV}={choice!r}: use one of {', '.join(map(repr, ENGINES))}")
    if example.device.type != "cpu" or choice == "torch" or model.training:
        return model
    version, threads = _version(model), torch.get_num_threads()
    cached = _SESSIONS.setdefault(model, {})
    if cached.get((choice, threads), (None,))[0] == version:
        return cached[choice, threads][1]
    run: Callable = model
    for name in ENGINES[ENGINES.index(choice) : -1]:  # the chosen runtime, then the next ones, then torch
        try:
            if name == "openvino" and os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "SSE41":
                # OpenVINO's CPU plugin needs SSE4.2; capped below it, it returned no rows or crashed the process
                raise RuntimeError("ONEDNN_MAX_CPU_ISA=SSE41 is below the SSE4.2 its CPU plugin needs")
            run = _agreeing(_RUNNERS[name](model, example, threads), model, example)
            break
        except Exception as e:  # noqa: BLE001 - any failure of an optional runtime falls back to the next
            reason = (
                f"{name} unavailable for {type(model).__name__} ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''})"
            )
            if reason not in _warned:
                _warned.add(reason)
                warnings.warn(f"{reason}; running {ENGINES[ENGINES.index(name) + 1]}", RuntimeWarning, stacklevel=2)
    cached[choice, threads] = (version, run)
    return run
