import dataclasses

import numpy as np
import pytest
import torch

from fplib.augment import AugmentConfig, Augmenter, add_noise, bandlimit, convolve_ir
from fplib.features import FrontEnd
from tests.helpers import music_like

FE = FrontEnd()


def _batch(B=16, seed=0):
    aug = Augmenter()
    M = aug.context
    seg = torch.stack([torch.from_numpy(music_like(1.0 + 2 * M / 8000, seed=seed + i)) for i in range(B)])
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(B, 8000, generator=g) * 0.1
    ir = torch.zeros(B, 3000)
    ir[:, 50] = 1.0
    ir[:, 51:] = 0.3 * torch.randn(B, 2949, generator=g) * torch.exp(-torch.arange(2949) / 300.0)
    return aug, seg, noise, ir


def _snr(signal, mixed):
    noise = mixed - signal
    return 10 * torch.log10(signal.double().square().mean(1) / noise.double().square().mean(1))


@pytest.mark.parametrize("target", [-5.0, 0.0, 7.5, 20.0])
def test_achieved_snr_within_0_1_db(target):
    x = torch.from_numpy(np.stack([music_like(1.0, seed=i) for i in range(8)]))
    noise = torch.randn(8, 8000, generator=torch.Generator().manual_seed(1)) * 3.0
    y = add_noise(x, noise, torch.full((8,), target))
    assert torch.all((_snr(x, y) - target).abs() < 0.1)


def test_noise_skips_silent_signal_and_respects_switch():
    x = torch.zeros(2, 8000)
    x[1] = torch.from_numpy(music_like(1.0))
    noise = torch.randn(2, 8000)
    y = add_noise(x, noise, torch.tensor([5.0, 5.0]), on=torch.tensor([True, False]))
    assert torch.equal(y, x)


def test_ir_keeps_length_and_alignment():
    x = torch.from_numpy(music_like(1.0))[None]
    delta = torch.zeros(1, 500)
    delta[0, 123] = 1.0  # a pure delay: aligned on its peak, it must give the input back
    y = convolve_ir(x, delta)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    room = torch.zeros(1, 2000)
    room[0, 40] = 1.0
    room[0, 41:] = (
        0.2 * torch.randn(1959, generator=torch.Generator().manual_seed(0)) * torch.exp(-torch.arange(1959) / 200.0)
    )
    x = torch.randn(1, 8000, generator=torch.Generator().manual_seed(1))  # white: its autocorrelation is a spike
    y = convolve_ir(x, room)
    assert y.shape == x.shape
    # aligned: the cross-correlation between input and output peaks at lag 0 (the direct path)
    xc = torch.fft.irfft(torch.fft.rfft(y[0], 16000) * torch.fft.rfft(x[0], 16000).conj(), 16000)
    lag = int(xc.argmax())
    assert lag == 0
    torch.testing.assert_close(y.square().mean(), x.square().mean(), rtol=1e-4, atol=0)  # level kept


def test_ir_truncation():
    x = torch.from_numpy(music_like(1.0))[None]
    ir = torch.zeros(1, 3000)
    ir[0, 10] = 1.0
    ir[0, 2500] = 0.9  # a late echo beyond max_len is cut
    torch.testing.assert_close(convolve_ir(x, ir, max_len=1000), x, atol=1e-5, rtol=0)


def test_bandlimit_attenuates_out_of_band():
    sr = 8000
    t = torch.arange(8000) / sr
    tones = {f: torch.sin(2 * np.pi * f * t)[None] for f in (150.0, 1500.0, 3800.0)}
    args = (torch.tensor([2500.0]), torch.tensor([700.0]), torch.tensor([4]))
    gain = {f: float(bandlimit(x, sr, *args)[0, 2000:6000].std() / x[0, 2000:6000].std()) for f, x in tones.items()}
    for f, g in gain.items():  # Butterworth magnitudes, 24 dB/octave at order 4
        expected = 1 / np.sqrt(1 + (f / 2500) ** 8) / np.sqrt(1 + (700 / f) ** 8)
        assert abs(g - expected) < 0.01 * max(expected, 0.1), (f, g, expected)
    assert gain[1500.0] > 0.95 and gain[150.0] < 0.01 and gain[3800.0] < 0.2
    off = bandlimit(tones[150.0], sr, *args, on=torch.tensor([False]))
    torch.testing.assert_close(off, tones[150.0], atol=1e-5, rtol=0)


def test_same_seed_same_output_different_seed_different_output():
    aug, seg, noise, ir = _batch()
    a = aug.pairs(seg, noise, ir, torch.Generator().manual_seed(7))
    b = aug.pairs(seg, noise, ir, torch.Generator().manual_seed(7))
    c = aug.pairs(seg, noise, ir, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[0], c[0])  # the clean view is not random
    assert not torch.equal(a[1], c[1])


def test_output_shapes_range_and_offset():
    aug, seg, noise, ir = _batch()
    clean, deg = aug.pairs(seg, noise, ir, torch.Generator().manual_seed(0))
    assert clean.shape == deg.shape == (16, 1, 256, 32)
    assert deg.min() >= -80 and deg.max() <= 0
    # offsets really shift the degraded view and stay within the configured range
    only_offset = Augmenter(
        AugmentConfig(noise_p=0, ir_p=0, offset_p=1.0, time_mask_p=0, bandlimit_p=0, freq_mask_p=0, spec_time_mask_p=0)
    )
    d = only_offset.draw(16, torch.Generator().manual_seed(0))
    assert d.offset.abs().max() <= only_offset.context and (d.offset != 0).any()
    c, x = only_offset.degrade(seg, None, None, d)
    i = int(d.offset.abs().argmax())
    M, s = only_offset.context, int(d.offset[i])
    torch.testing.assert_close(x[i], seg[i, M + s : M + s + 8000])


def test_spec_masks_are_silence_and_independent_per_example():
    aug = Augmenter(AugmentConfig(freq_mask_p=1.0, spec_time_mask_p=1.0))
    d = aug.draw(32, torch.Generator().manual_seed(0))
    feats = torch.zeros(32, 1, 256, 32)  # all 0 dB: masked cells become the -80 dB floor
    out = aug.spec_mask(feats, d)
    masked = out == -80.0
    assert masked.any()
    assert (out[~masked] == 0.0).all()
    fcounts = masked[:, 0].all(dim=2).sum(dim=1)  # fully masked mel rows per example
    assert torch.equal(fcounts, d.fmask_width)
    patterns = {tuple(m.flatten().nonzero().flatten()[:5].tolist()) for m in masked}
    assert len(patterns) > 16, "masks must differ between examples"


def test_time_mask_zeroes_a_span():
    aug = Augmenter(AugmentConfig(noise_p=0, ir_p=0, offset_p=0, time_mask_p=1.0, bandlimit_p=0))
    _, seg, _, _ = _batch(4)
    d = aug.draw(4, torch.Generator().manual_seed(0))
    _, x = aug.degrade(seg, None, None, d)
    for i in range(4):
        s, n = int(d.tmask_start[i]), int(d.tmask_len[i])
        assert 480 <= n <= 640  # 60-80 ms at 8 kHz
        assert (x[i, s : s + n] == 0).all() and x[i, s + n :].abs().sum() > 0


def test_bucketed_snr_draws():
    aug = Augmenter(AugmentConfig(snr_mode="buckets"))
    snr = aug.draw(20000, torch.Generator().manual_seed(0)).snr_db
    assert snr.min() >= 0 and snr.max() <= 15
    share = [float(((snr >= lo) & (snr < hi)).float().mean()) for lo, hi in ((0, 5), (5, 10), (10, 15.01))]
    np.testing.assert_allclose(share, [0.5, 0.3, 0.2], atol=0.02)


def test_probabilities_are_respected():
    cfg = AugmentConfig(bandlimit_p=0.4, time_mask_p=0.1, offset_p=0.25)
    d = Augmenter(cfg).draw(20000, torch.Generator().manual_seed(1))
    assert abs(float(d.band_on.float().mean()) - 0.4) < 0.02
    assert abs(float(d.tmask_on.float().mean()) - 0.1) < 0.02
    assert abs(float((d.offset != 0).float().mean()) - 0.25) < 0.02
    assert set(d.band_order.unique().tolist()) <= {2, 3, 4, 5, 6}


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(noise_p=1.5)
    with pytest.raises(ValueError, match="reversed"):
        AugmentConfig(snr_db=(10.0, 0.0))
    with pytest.raises(ValueError, match="snr_mode"):
        AugmentConfig(snr_mode="gauss")


def test_disable_steps():
    aug, seg, noise, ir = _batch(4)
    d = aug.draw(4, torch.Generator().manual_seed(0)).disable("offset", "ir", "noise", "bandlimit", "time_mask")
    clean, x = aug.degrade(seg, noise, ir, d)
    torch.testing.assert_close(x, clean)
    with pytest.raises(ValueError, match="unknown augmentation step"):
        d.disable("reverb")


def test_draws_do_not_depend_on_device_or_config_object():
    cfg = AugmentConfig()
    a = Augmenter(cfg).draw(8, torch.Generator().manual_seed(3))
    b = Augmenter(dataclasses.replace(cfg)).draw(8, torch.Generator().manual_seed(3))
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None and y is None) if x is None else torch.equal(x, y), f.name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_gpu_matches_cpu():
    aug, seg, noise, ir = _batch()
    a = aug.pairs(seg, noise, ir, torch.Generator().manual_seed(7))
    b = aug.pairs(seg.cuda(), noise.cuda(), ir.cuda(), torch.Generator().manual_seed(7))
    torch.testing.assert_close(a[1], b[1].cpu(), atol=0.05, rtol=0)
