"""The ATTN family (fplib/models/attn.py): shapes and parameter counts at fplib's 256 x 32 windows and
the original 64 x 96 ones, the attention mask against a loop, its gain, batch independence, gradients,
a training step, the registry round trip and the ONNX engine."""

import pytest
import torch

from fplib import engine
from fplib.features import FrontEnd
from fplib.losses import contrastive
from fplib.models.attn import ATTN, ATTNSettings, SpectroTemporalAttention
from fplib.models.registry import build_model, n_parameters, variant
from tests import learning

# the original front end: 16 kHz, 0.95-s windows, 64 mel bands, hop 160 -> 64 x 96
FE_ORIGINAL = FrontEnd(sr=16000, win_s=0.95, n_fft=512, stft_hop=160, n_mels=64, f_max=8000.0)


def _small(seed: int = 0, **settings) -> ATTN:
    torch.manual_seed(seed)
    return build_model("attn_small", **settings)[0]


def _attention_params(model: torch.nn.Module) -> int:
    return sum(m.u.numel() + m.v.numel() for m in model.modules() if isinstance(m, SpectroTemporalAttention))


def test_output_is_unit_float32_for_one_window_and_for_many():
    model = _small().eval()
    x = torch.randn(3, 1, 256, 32)
    with torch.no_grad():
        for batch in (x[:1], x):
            z = model(batch)
            assert z.shape == (len(batch), 128) and z.dtype == torch.float32
            torch.testing.assert_close(z.norm(dim=1), torch.ones(len(batch)))


def test_parameter_counts_and_shapes():
    full, settings = build_model("attn")
    assert settings["width"] == 1.0 and settings["mask_gain"] is None and settings["n_blocks"] == 6
    assert full.settings.channels() == (32, 32, 64, 128, 256, 512, 1024)
    assert full.out_shape == (1024, 8, 1)  # 8192 numbers, 128 groups of 64
    assert n_parameters(full) == 19_968_256
    assert n_parameters(full.head) == 270_464 and _attention_params(full) == 110_592

    small, settings = build_model("attn_small")
    assert settings["width"] == 0.25 and small.settings.channels() == (8, 8, 16, 32, 64, 128, 256)
    assert n_parameters(small) == 1_328_416

    # the original 64 x 96 windows: the released network's count exactly
    assert (FE_ORIGINAL.n_mels, FE_ORIGINAL.n_frames) == (64, 96)
    orig, _ = build_model("attn", fe=FE_ORIGINAL)
    assert orig.out_shape == (1024, 2, 3)
    assert n_parameters(orig.head) == 204_928
    assert n_parameters(orig) - n_parameters(orig.head) == 19_648_640
    assert _attention_params(orig) == 61_440
    assert n_parameters(orig) == 19_853_568
    # a BatchNorm on each of the five 1x1 shortcuts: 2 x (64 + 128 + 256 + 512 + 1024) more
    assert n_parameters(build_model("attn", fe=FE_ORIGINAL, shortcut_norm=True)[0]) == 19_853_568 + 3_968


def test_every_size_follows_the_input_shape_odd_sizes_included():
    for fe in (FE_ORIGINAL, FrontEnd(n_mels=37, stft_hop=200)):  # 37 x 41: odd sizes under stride 2
        f, t = fe.n_mels, fe.n_frames
        for _ in range(5):
            f, t = (f - 1) // 2 + 1, (t - 1) // 2 + 1
        torch.manual_seed(0)
        model = ATTN(ATTNSettings(width=0.25), fe).eval()
        assert model.out_shape == (256, f, t)
        with torch.no_grad():
            h = model.encoder(torch.randn(2, 1, fe.n_mels, fe.n_frames))
            z = model(torch.randn(1, 1, fe.n_mels, fe.n_frames))
        assert h.shape == (2, 256, f, t) and z.shape == (1, 128)


def test_attention_mask_equals_a_loop_over_examples_and_channels():
    torch.manual_seed(0)
    att = SpectroTemporalAttention(3, (5, 4), gain=7.0)
    x = torch.randn(2, 3, 5, 4)
    want = torch.empty(2, 3, 5, 4)
    for i in range(2):
        for c in range(3):
            m = x[i, c]  # F x T
            a = torch.softmax(torch.tanh(m @ att.u[c]), dim=0)  # over F
            b = torch.softmax(torch.tanh(m.T @ att.v[c]), dim=0)  # over T
            want[i, c] = 7.0 * torch.outer(a, b)
    with torch.no_grad():
        torch.testing.assert_close(att.mask(x), want)
        torch.testing.assert_close(att(x), x * want)


def test_mask_gain_default_is_mean_one_and_100_reproduces_the_original():
    x = torch.randn(2, 3, 6, 5)
    with torch.no_grad():
        mask = SpectroTemporalAttention(3, (6, 5)).mask(x)
        torch.testing.assert_close(mask.sum(dim=(2, 3)), torch.full((2, 3), 30.0))
        torch.testing.assert_close(mask.mean(dim=(2, 3)), torch.ones(2, 3))
        mask = SpectroTemporalAttention(3, (6, 5), gain=100.0).mask(x)
        torch.testing.assert_close(mask.sum(dim=(2, 3)), torch.full((2, 3), 100.0))
    # the setting reaches every attention module of the network, sized by its own map
    gains = [m.gain for m in _small().modules() if isinstance(m, SpectroTemporalAttention)]
    assert gains == [256 * 32.0] * 2 + [128 * 16.0] * 2 + [64 * 8.0] * 2 + [32 * 4.0] * 2 + [16 * 2.0] * 2 + [8.0] * 2
    gains = [m.gain for m in _small(mask_gain=100.0).modules() if isinstance(m, SpectroTemporalAttention)]
    assert gains == [100.0] * 12


def test_batch_independent_in_eval_mode():
    model = _small().eval()
    x = torch.randn(4, 1, 256, 32)
    with torch.no_grad():
        z = model(x)
        torch.testing.assert_close(z[:2], model(x[:2]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(z[3:], model(x[3:]), atol=1e-5, rtol=1e-4)


def test_gradients_are_finite_and_reach_every_parameter():
    model = _small(1).train()
    model(torch.randn(2, 1, 256, 32)).pow(3).sum().backward()
    dead = {"blocks.5.att1.v", "blocks.5.att2.v"}  # block 6's maps are 8 x 1: a softmax over one frame is 1
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad.abs().sum() > 0) == (name not in dead), name
    # with more than one frame at the end (the original 64 x 96 windows: 2 x 3) every parameter learns
    torch.manual_seed(1)
    model = ATTN(ATTNSettings(width=0.125), FE_ORIGINAL).train()
    model(torch.randn(2, 1, 64, 96)).pow(3).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.slow
def test_one_contrastive_training_step():
    model = _small(2).train()
    v = variant("attn_small")
    assert v.objective_fn() is contrastive and v.kind == "float" and v.family == "attn" and v.loss == "NT-Xent"
    assert v.training == variant("attn").training == {"temperature": 0.1} and variant("attn").family == "attn"
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    xa = torch.randn(4, 1, 256, 32)
    xb = xa + 0.1 * torch.randn_like(xa)
    before = [p.detach().clone() for p in model.parameters()]
    loss, za, zb = contrastive(model, model, xa, xb, v.training["temperature"])
    assert loss.ndim == 0 and torch.isfinite(loss) and za.shape == zb.shape == (4, 128)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_build_state_dict_build_again_load_strict():
    model, settings = build_model("attn_small", mask_gain=100.0)
    assert settings == {
        "width": 0.25,
        "emb_dim": 128,
        "head_hidden": 32,
        "mask_gain": 100.0,
        "n_blocks": 6,
        "shortcut_norm": False,
        "attention_init_std": None,
    }
    again, _ = build_model("attn_small", **settings)
    again.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 256, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x))


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_cpu_runtimes_give_torchs_fingerprints(monkeypatch, runtime):
    monkeypatch.setenv(engine.ENGINE_ENV, runtime)
    model = _small(3).eval()
    x = torch.randn(3, 1, 256, 32)
    run = engine.runner(model, x[:1])
    assert isinstance(run, engine._RUNNERS[runtime])  # exported, not the fallback
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(run(x), want, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(run(x[:1]), want[:1], atol=1e-4, rtol=1e-3)  # a batch of one too


@pytest.mark.slow
def test_attention_starts_near_identity_and_the_network_learns():
    """u and v start at fan-in scale (1 / sqrt(length)), so the masks start near 1; with the released code's
    N(0, 1) (attention_init_std=1.0) NT-Xent on a fixed batch barely moves, with fplib's it falls fast
    (tests/learning.py: the checks and their measured margins)."""
    att = _small().blocks[0].att1
    t, f = att.u.shape[1], att.v.shape[1]
    assert abs(float(att.u.detach().std()) * t**0.5 - 1) < 0.2 and abs(float(att.v.detach().std()) * f**0.5 - 1) < 0.2
    assert abs(float(_small(attention_init_std=1.0).blocks[0].att1.u.detach().std()) - 1) < 0.2
    learning.require(learning.attention_init())
