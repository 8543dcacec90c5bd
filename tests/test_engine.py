"""The inference engine (fplib/engine.py): OpenVINO (default) and ONNX Runtime on CPU give torch's
fingerprints from a graph exported once (cached on disk by its weights), FPLIB_ENGINE chooses, a
failing runtime falls back to the next one, and training models are left alone."""

import os

import numpy as np
import pytest
import torch

from fplib import engine
from fplib.models.registry import build_model


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(engine.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(engine.ENGINE_ENV, raising=False)
    monkeypatch.setattr(engine, "_warned", set())  # each test sees its own warnings
    return tmp_path / "cache" / "onnx"


# OpenVINO's CPU plugin needs SSE4.2: with oneDNN capped at SSE4.1 (the portability matrix) it is not tried
needs_openvino = pytest.mark.skipif(
    os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "SSE41",
    reason="ONEDNN_MAX_CPU_ISA=SSE41: OpenVINO is not used below SSE4.2",
)


def _model(seed: int):
    torch.manual_seed(seed)
    model, _ = build_model("nafp_small", width=0.125)
    return model.eval()


@pytest.mark.slow
@needs_openvino
def test_openvino_gives_torchs_fingerprints_and_is_cached_by_weights(cache, monkeypatch):
    model = _model(0)
    x = torch.randn(5, 1, 256, 32)
    run = engine.runner(model, x)
    assert isinstance(run, engine.OpenVinoRunner)
    with torch.inference_mode():
        want = model(x)
    got = run(x)
    assert got.shape == (5, 128) and got.dtype == torch.float32
    assert float((got - want).abs().max()) < 1e-5
    assert float((run(x[:1]) - want[:1]).abs().max()) < 1e-5  # any batch size
    assert engine.runner(model, x) is run  # one session per model and thread count
    files = list(cache.glob("*.onnx"))
    assert [f.stem for f in files] == [engine.model_key(model)]
    inode = files[0].stat().st_ino

    same = _model(0)  # another object, the same weights: the cached graph is used, not re-exported
    with monkeypatch.context() as m:
        m.setattr(engine, "_export", lambda *a: pytest.fail("exported again"))
        assert float((engine.runner(same, x)(x) - want).abs().max()) < 1e-5
    assert files[0].stat().st_ino == inode and len(list(cache.glob("*.onnx"))) == 1

    with torch.no_grad():  # new weights (an optimiser step): a new session with the new weights
        model.head.b2.add_(1.0)
    run2 = engine.runner(model, x)
    assert run2 is not run
    with torch.inference_mode():
        assert float((run2(x) - model(x)).abs().max()) < 1e-5
    assert len(list(cache.glob("*.onnx"))) == 2
    model.head.b2 = torch.nn.Parameter(model.head.b2.detach() - 1.0)  # a parameter replaced: rebuilt too
    assert engine.runner(model, x) is not run2
    engine._prune(cache, keep=1)  # the least recently used graph goes first
    assert [f.stem for f in cache.glob("*.onnx")] == [engine.model_key(model)]


@pytest.mark.slow
@needs_openvino
def test_onnxruntime_when_asked_and_as_the_fallback_of_openvino(cache, monkeypatch):
    model = _model(3)
    x = torch.randn(3, 1, 256, 32)
    with torch.inference_mode():
        want = model(x)
    monkeypatch.setenv(engine.ENGINE_ENV, "onnxruntime")
    run = engine.runner(model, x)
    assert isinstance(run, engine.OnnxRunner)
    assert float((run(x) - want).abs().max()) < 1e-5

    def broken(*args):
        raise RuntimeError("no CPU plugin")

    monkeypatch.delenv(engine.ENGINE_ENV)
    family = _model(3)
    family.cpu_runtime = "onnxruntime"  # a family's own choice, without FPLIB_ENGINE
    assert isinstance(engine.runner(family, x), engine.OnnxRunner)

    monkeypatch.setattr(engine, "_RUNNERS", {**engine._RUNNERS, "openvino": broken})
    with pytest.warns(RuntimeWarning, match=r"openvino unavailable .*no CPU plugin.*; running onnxruntime"):
        run = engine.runner(_model(3), x)
    assert isinstance(run, engine.OnnxRunner)
    assert float((run(x) - want).abs().max()) < 1e-5
    monkeypatch.setattr(engine, "_RUNNERS", {"openvino": broken, "onnxruntime": broken})
    with pytest.warns(RuntimeWarning, match="onnxruntime unavailable .*; running torch"):
        fallback = _model(3)
        assert engine.runner(fallback, x) is fallback


@pytest.mark.slow
@needs_openvino
def test_a_runtime_that_answers_wrongly_without_raising_is_not_used(cache, monkeypatch):
    # seen for real: OpenVINO with ONEDNN_MAX_CPU_ISA=SSE41 returned zero rows for every batch
    model = _model(4)
    x = torch.randn(3, 1, 256, 32)
    with torch.inference_mode():
        want = model(x)

    class NoRows:
        def __init__(self, model, example, threads):
            pass

        def __call__(self, batch):
            return torch.zeros(0, 128)

    class Off(NoRows):
        def __call__(self, batch):
            with torch.inference_mode():
                return model(batch) + 0.01

    monkeypatch.setattr(engine, "_RUNNERS", {**engine._RUNNERS, "openvino": NoRows})
    with pytest.warns(RuntimeWarning, match=r"openvino unavailable .*shape \(0, 128\).*; running onnxruntime"):
        run = engine.runner(model, x)
    assert isinstance(run, engine.OnnxRunner) and float((run(x) - want).abs().max()) < 1e-5
    monkeypatch.setattr(engine, "_RUNNERS", {"openvino": Off, "onnxruntime": NoRows})
    with pytest.warns(RuntimeWarning, match=r"openvino unavailable .*differs from torch's by 0.01"):
        other = _model(4)
        assert engine.runner(other, x) is other  # then ONNX Runtime fails too: torch itself


@pytest.mark.slow
def test_openvino_is_not_tried_below_the_sse42_it_needs(cache, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    monkeypatch.setattr(engine, "_RUNNERS", {**engine._RUNNERS, "openvino": lambda *a: pytest.fail("tried")})
    with pytest.warns(RuntimeWarning, match=r"openvino unavailable .*SSE4.2.*; running onnxruntime"):
        assert isinstance(engine.runner(_model(5), torch.randn(2, 1, 256, 32)), engine.OnnxRunner)


def test_torch_is_used_when_asked_in_training_and_never_for_a_bad_name(cache, monkeypatch):
    model = _model(1)
    x = torch.randn(2, 1, 256, 32)
    assert engine.runner(model.train(), x) is model  # a model being trained runs as it is
    monkeypatch.setenv(engine.ENGINE_ENV, "torch")
    assert engine.runner(model.eval(), x) is model
    monkeypatch.setenv(engine.ENGINE_ENV, "tensorrt")
    with pytest.raises(ValueError, match="FPLIB_ENGINE='tensorrt': use one of 'openvino'"):
        engine.runner(model, x)
    assert not cache.exists()


@pytest.mark.slow
def test_extraction_with_a_decoding_worker_gives_the_same_catalogue(tmp_path, cache):
    from fplib.catalogue import Catalogue
    from fplib.extraction import extract
    from tests.helpers import make_folders

    songs = sorted(make_folders(tmp_path / "c", n_songs=4, seconds=6.0)["songs"].glob("*.flac"))
    model = _model(2)
    cats = []
    for workers in (0, 1):
        cat = Catalogue(tmp_path / f"cat{workers}", model.fe, {"sha256": "test"})
        r = extract([*songs, tmp_path / "missing.wav"], cat, model, progress=False, workers=workers)
        assert len(r.added) == 4 and [p for p, _ in r.skipped] == [str(tmp_path / "missing.wav")]
        cats.append(cat)
    a, b = (c.all_vectors() for c in cats)
    assert [s.name for s in cats[0].songs()] == [s.name for s in cats[1].songs()]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    again = extract(songs, cats[1], model, progress=False, workers=1)  # resumes: nothing decoded again
    assert not again.added and len(again.already) == 4


@pytest.mark.slow
def test_a_short_signals_front_end_runs_on_one_thread_and_threads_are_restored(cache, monkeypatch):
    from fplib import extraction

    model = _model(4)
    seen = []
    real = extraction.logmel

    def spy(wav, fe, **kw):
        seen.append(torch.get_num_threads())
        return real(wav, fe, **kw)

    monkeypatch.setattr(extraction, "logmel", spy)
    with engine.torch_threads(2):
        short = torch.randn(int(3 * model.fe.sr))
        long = torch.randn(int((extraction.SHORT_SIGNAL_S + 1) * model.fe.sr))
        a = extraction.fingerprint(short, model, model.fe)
        b = extraction.fingerprint(long, model, model.fe)
        assert torch.get_num_threads() == 2
        want = extraction.embed(real(short, model.fe), model)  # the front end on two threads
    assert seen == [1, 2]  # a query's front end on one thread, a song's on all of them
    np.testing.assert_allclose(a, want, atol=1e-5)
    assert b.shape[0] > a.shape[0]


def test_torch_threads_blocks_overlapping_in_two_threads_restore_the_count():
    import threading

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with engine.torch_threads(1):
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with engine.torch_threads(1):
            b_in.set()
            a_out.wait(5)  # A leaves first, while B is still inside
            assert torch.get_num_threads() == 1

    with engine.torch_threads(2):  # the count before: 2, whatever the machine has
        threads = [threading.Thread(target=f) for f in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert a_out.is_set() and torch.get_num_threads() == 2  # back to 2, not stuck at 1
