"""SAMAF (fplib.models.samaf): shapes, binary codes, parameter counts, each loss on a hand-computed case,
the straight-through sign, the unsupervised mode, a few training steps, the ONNX path, checkpoints."""

import math

import numpy as np
import pytest
import scipy.fft
import torch

from fplib import codes, engine
from fplib.features import logmel
from fplib.losses import nt_xent
from fplib.models.registry import build_model, frontend_for, kind_of, n_parameters, variant
from fplib.models.samaf import (
    SAMAF,
    SAMAFSettings,
    balance_loss,
    contrastive_code_loss,
    dct_matrix,
    decorrelation_loss,
    hash_loss,
    quantisation_loss,
    reconstruction_loss,
    samaf_objective,
    straight_through_sign,
)
from tests import learning

VARIANTS = ("samaf", "samaf_small", "samaf_mfcc")


def windows(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random log-mel windows in dB (in [-80, 0]) of the variant's front end."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *frontend_for(name).shape, generator=g) * -80


def lstm_params(n_in: int, hidden: int, layers: int) -> int:
    return sum(4 * hidden * (n + hidden) + 8 * hidden for n in [n_in] + [hidden] * (layers - 1))


# -- the network ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_gives_relaxed_codes(name, batch):
    model, settings = build_model(name, frontend_for(name))
    model.eval()
    with torch.no_grad():
        z = model(windows(name, batch))
    assert z.shape == (batch, settings["bits"]) == (batch, 128) and z.dtype == torch.float32
    assert z.abs().max() <= 1 and torch.isfinite(z).all()
    assert kind_of(name) == "binary" and variant(name).family == "samaf"
    assert variant(name).objective_fn() is samaf_objective and variant(name).loss.startswith("SAMAF")


def test_parameter_counts_are_pinned():
    counts = {name: n_parameters(build_model(name, frontend_for(name))[0]) for name in VARIANTS}
    assert counts == {"samaf": 2_072_960, "samaf_small": 157_056, "samaf_mfcc": 1_761_677}

    # the same numbers from the layer sizes: encoder, code layer, decoder (input: the code), frame layer
    def expected(n_feat, hidden, layers, bits=128):
        return (
            lstm_params(n_feat, hidden, layers)
            + hidden * bits
            + bits
            + lstm_params(bits, hidden, layers)
            + hidden * n_feat
            + n_feat
        )

    assert counts == {
        "samaf": expected(256, 256, 2),
        "samaf_small": expected(256, 64, 1),
        "samaf_mfcc": expected(13, 256, 2),
    }


def test_mfcc_variant_has_its_own_front_end_at_100_frames_per_second():
    fe = frontend_for("samaf_mfcc")
    assert (fe.sr, fe.n_fft, fe.stft_hop, fe.n_mels, fe.n_frames) == (8000, 256, 80, 40, 101)
    wav = torch.randn(12000, generator=torch.Generator().manual_seed(1))
    x = logmel(wav, fe)  # the front end accepts these settings
    assert x.shape == (2, 1, 40, 101) and torch.isfinite(x).all()
    model, settings = build_model("samaf_mfcc", fe)
    assert settings["features"] == "mfcc" and settings["n_mfcc"] == 13
    assert model.frames(x).shape == (2, 101, 13)
    with torch.no_grad():
        assert model(x).shape == (2, 128)


def test_frames_scale_the_log_mel_and_the_mfccs_are_its_orthonormal_dct():
    model, _ = build_model("samaf_small")
    x = torch.full((1, 1, 256, 32), -40.0)
    x[0, 0, 5, 7], x[0, 0, 6, 7] = 0.0, -80.0
    f = model.frames(x)
    assert f.shape == (1, 32, 256)  # [B, time, mel]
    assert f[0, 7, 5] == 1 and f[0, 7, 6] == -1 and f[0, 0, 0] == 0  # (dB + 40) / 40
    d = dct_matrix(40, 40)
    torch.testing.assert_close(d.T @ d, torch.eye(40), atol=1e-5, rtol=0)
    v = torch.randn(3, 40, dtype=torch.float64)
    ref = scipy.fft.dct(v.numpy(), type=2, norm="ortho", axis=1)[:, :13]
    torch.testing.assert_close((v.float() @ dct_matrix(40, 13)).double(), torch.from_numpy(ref), atol=1e-5, rtol=0)
    mfcc, _ = build_model("samaf_mfcc", frontend_for("samaf_mfcc"))
    x = windows("samaf_mfcc", 2)
    half = (x[:, 0].transpose(1, 2) + 40) / 40
    torch.testing.assert_close(mfcc.frames(x), half @ dct_matrix(40, 13))


def test_binary_encoding_of_the_codes():
    model, _ = build_model("samaf_small")
    model.eval()
    with torch.no_grad():
        z = model(windows("samaf_small", 5))
    stored = codes.encode(z, "binary")
    assert stored.dtype == np.uint8 and stored.shape == (5, 16)
    np.testing.assert_array_equal(np.unpackbits(stored, axis=1).astype(bool), z.numpy() > 0)
    assert codes.bytes_per_fingerprint(128, "binary") * 2 == 32  # bytes per second at 2 windows per second


def test_batch_independent_and_gradients_flow():
    model, _ = build_model("samaf_small")
    x = windows("samaf_small", 4)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:2], model(x[:2]), atol=1e-6, rtol=1e-5)
    model.train()
    loss, _, _ = samaf_objective(model, model, x[:2], x[2:], 0.05)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_decode_returns_the_training_code_and_the_reversed_frames():
    model, _ = build_model("samaf_small")
    x = windows("samaf_small", 2)
    h, b, recon, target = model(x, decode=True)
    torch.testing.assert_close(h, model(x))
    assert torch.equal(b, torch.where(h > 0, 1.0, -1.0))
    assert recon.shape == target.shape == (2, 32, 256)
    assert torch.equal(target, model.frames(x).flip(1))
    relaxed, _ = build_model("samaf_small", straight_through=False)
    h, b, _, _ = relaxed(x, decode=True)
    assert torch.equal(b, h)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="features"):
        SAMAFSettings(features="cqt")
    with pytest.raises(ValueError, match="multiple of 8"):
        SAMAFSettings(bits=12)
    with pytest.raises(ValueError, match="n_mfcc"):
        build_model("samaf_mfcc", frontend_for("samaf_mfcc"), n_mfcc=41)


# -- losses on hand-computed cases ---------------------------------------------------------------------------


def test_reconstruction_loss():
    recon, target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert reconstruction_loss(recon, target).item() == pytest.approx((0 + 4 + 9 + 0) / 4)


def test_hash_loss_is_the_fraction_of_differing_bits():
    b_a = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1]])
    b_b = torch.tensor([[1.0, 1, -1, 1], [-1, 1, 1, -1]])
    assert hash_loss(b_a, b_b).item() == pytest.approx(3 / 8)  # 1 + 2 of 8 bits differ
    assert hash_loss(b_a, b_a).item() == 0
    assert hash_loss(torch.tensor([[0.5, 0.0]]), torch.tensor([[-0.5, 0.0]])).item() == pytest.approx(1 / 8)


def test_balance_loss():
    b = torch.tensor([[1.0, 1], [1, -1], [1, 1], [-1, -1]])  # bit means 0.5 and 0
    assert balance_loss(b).item() == pytest.approx((0.25 + 0) / 2)
    assert balance_loss(torch.tensor([[1.0, -1], [1, -1]])).item() == 1  # constant bits


def test_decorrelation_loss():
    assert decorrelation_loss(torch.tensor([[1.0, 1], [1, -1]])).item() == 0  # C = identity
    assert decorrelation_loss(torch.tensor([[1.0, 1], [1, 1]])).item() == 1  # identical bits
    # C = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]: off-diagonal squares 1 + 1 over 3 * 2 pairs
    assert decorrelation_loss(torch.tensor([[1.0, 1, -1], [1, 1, 1]])).item() == pytest.approx(1 / 3)


def test_quantisation_loss():
    h = torch.tensor([[0.5, -1.0, 0.0, 1.0]])
    assert quantisation_loss(h).item() == pytest.approx((0.25 + 0 + 1 + 0) / 4)


def test_contrastive_code_loss_uses_hamming_similarity():
    b_a = torch.tensor([[1.0, 1], [1, -1]])
    b_b = torch.tensor([[1.0, 1], [-1, 1]])  # pair 0 identical (similarity 1), pair 1 opposite (-1)
    # every other pair of codes differs in one of two bits: similarity 0. At temperature 1 each anchor's
    # loss is -log(e^s / (e^s + 2)) with s its partner's similarity
    expected = (math.log(1 + 2 / math.e) + math.log(1 + 2 * math.e)) / 2
    assert contrastive_code_loss(b_a, b_b, 1.0).item() == pytest.approx(expected, rel=1e-6)
    r_a, r_b = torch.randn(4, 8), torch.randn(4, 8)
    torch.testing.assert_close(
        contrastive_code_loss(r_a, r_b, 0.1),
        nt_xent(r_a / r_a.norm(dim=1, keepdim=True), r_b / r_b.norm(dim=1, keepdim=True), 0.1),
    )


def test_straight_through_sign():
    h = torch.tensor([[0.3, -0.2, 0.0, 0.9], [-1.0, 0.01, -0.5, 0.5]], requires_grad=True)
    b = straight_through_sign(h)
    assert torch.equal(b.detach(), torch.tensor([[1.0, -1, -1, 1], [-1, 1, -1, 1]]))  # 0 -> -1, as bit = h > 0
    w = torch.randn(2, 4)
    (b * w).sum().backward()
    grad_st = h.grad.clone()
    h.grad = None
    (h * w).sum().backward()
    assert torch.equal(grad_st, h.grad) and torch.equal(grad_st, w)


def test_objective_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    weights = dict(
        recon_weight=0.5, hash_weight=2.0, balance_weight=0.3, decorrelation_weight=0.7, contrastive_weight=1.5
    )
    model, _ = build_model("samaf_small", **weights)
    x_a, x_b = windows("samaf_small", 3, seed=1), windows("samaf_small", 3, seed=2)
    loss, z_a, z_b = samaf_objective(model, model, x_a, x_b, 0.1)
    h, b, recon, target = model(torch.cat([x_a, x_b]), decode=True)
    expected = (
        0.5 * reconstruction_loss(recon, target)
        + 2.0 * hash_loss(b[:3], b[3:])
        + 0.3 * balance_loss(b)
        + 0.7 * decorrelation_loss(b)
        + 1.5 * contrastive_code_loss(b[:3], b[3:], 0.1)
    )
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(z_a, model(x_a), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(z_b, model(x_b), atol=1e-6, rtol=1e-5)
    assert z_a.shape == z_b.shape == (3, 128)

    relaxed, _ = build_model("samaf_small", straight_through=False, quant_weight=0.25, contrastive_weight=0.0)
    loss, _, _ = samaf_objective(relaxed, relaxed, x_a, x_b, 0.1)
    h, _, recon, target = relaxed(torch.cat([x_a, x_b]), decode=True)
    expected = (
        reconstruction_loss(recon, target) + hash_loss(h[:3], h[3:]) + balance_loss(h) + 0.25 * quantisation_loss(h)
    )
    torch.testing.assert_close(loss, expected)


def test_objective_with_a_batch_of_one():
    model, _ = build_model("samaf_small")
    loss, z_a, z_b = samaf_objective(model, model, windows("samaf_small", 1), windows("samaf_small", 1, 3), 0.05)
    assert torch.isfinite(loss) and z_a.shape == z_b.shape == (1, 128)


def test_without_pairs_the_degraded_view_is_ignored():
    torch.manual_seed(0)
    model, _ = build_model("samaf_small", pairs=False)
    x_a, x_b = windows("samaf_small", 4, seed=1), windows("samaf_small", 4, seed=2)
    other = torch.randn_like(x_b) * 30 - 40
    loss, _, z_b = samaf_objective(model, model, x_a, x_b, 0.05)
    loss_other, _, z_other = samaf_objective(model, model, x_a, other, 0.05)
    torch.testing.assert_close(loss, loss_other, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(z_b, z_other)  # the degraded view is still encoded (for validation)
    h, b, recon, target = model(x_a, decode=True)
    torch.testing.assert_close(loss, reconstruction_loss(recon, target) + balance_loss(b))
    paired, _ = build_model("samaf_small")
    paired.load_state_dict(model.state_dict())
    assert not torch.allclose(
        samaf_objective(paired, paired, x_a, x_b, 0.05)[0], samaf_objective(paired, paired, x_a, other, 0.05)[0]
    )


@pytest.mark.slow
def test_a_few_adam_steps_reduce_the_reconstruction_loss():
    learning.require(learning.samaf_reconstruction())  # 22-37-fold fall (tests/learning.py)


# -- inference and checkpoints -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_cpu_runtimes_give_the_torch_codes(tmp_path, monkeypatch, runtime):
    monkeypatch.setenv(engine.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(engine.ENGINE_ENV, runtime)
    model, _ = build_model("samaf_small")
    x = windows("samaf_small", 5)
    run = engine.runner(model.eval(), x[:1])
    assert isinstance(run, engine._RUNNERS[runtime]), "the LSTM should export to ONNX, not fall back"
    with torch.no_grad():
        torch.testing.assert_close(run(x), model(x), atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(run(x[:1]), model(x[:1]), atol=1e-4, rtol=1e-3)


def test_state_round_trip():
    fe = frontend_for("samaf_mfcc")
    model, settings = build_model("samaf_mfcc", fe, bits=256, hidden=32, layers=1)
    assert isinstance(model, SAMAF) and settings["bits"] == 256 and settings["features"] == "mfcc"
    rebuilt, again = build_model("samaf_mfcc", fe, **settings)
    assert again == settings
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = windows("samaf_mfcc", 2)
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert model(x).shape == (2, 256)
