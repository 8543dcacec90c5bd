import numpy as np
import pytest
import torch

from fplib import features
from fplib.features import FrontEnd, LogMel, logmel, n_windows
from tests.helpers import music_like, tone

FE = FrontEnd()


def test_frontend_defaults_match_the_reference():
    assert (FE.sr, FE.win_len, FE.hop_len, FE.n_fft, FE.stft_hop, FE.n_mels, FE.f_min) == (
        8000,
        8000,
        4000,
        1024,
        256,
        256,
        300.0,
    )
    assert FE.n_frames == 32


@pytest.mark.parametrize("n,expected", [(7999, 0), (8000, 1), (11999, 1), (12000, 2), (8000 + 4000 * 9, 10)])
def test_window_count_formula(n, expected):
    assert n_windows(n) == expected
    if expected:
        assert logmel(torch.zeros(n) + 0.1).shape[0] == expected


def test_shape_dtype_range_and_normalisation():
    x = torch.from_numpy(music_like(5.0)).float()
    f = logmel(x)
    assert f.shape == (9, 1, 256, 32) and f.dtype == torch.float32
    assert torch.isfinite(f).all()
    assert f.min() >= -80.0 and f.max() <= 0.0
    assert torch.allclose(f.amax(dim=(1, 2, 3)), torch.zeros(9))  # each window's own max is 0 dB


def test_digital_silence_maps_to_the_floor():
    x = torch.zeros(3, 8000)
    x[1] = torch.from_numpy(tone(1.0))
    f = LogMel()(x)
    assert (f[0] == -80.0).all() and (f[2] == -80.0).all()
    assert f[1].max() == 0.0


def test_scale_invariance():
    x = torch.from_numpy(music_like(1.0))[None]
    lm = LogMel()
    torch.testing.assert_close(lm(x), lm(0.01 * x), atol=1e-3, rtol=0)


@pytest.mark.slow
def test_matches_librosa_htk_mel():
    librosa = pytest.importorskip("librosa")
    x = music_like(1.0, seed=3)
    ref = librosa.feature.melspectrogram(
        y=x.astype(np.float64),
        sr=8000,
        n_fft=1024,
        hop_length=256,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=256,
        fmin=300.0,
        fmax=4000.0,
        htk=True,
        norm=None,
    )
    ref_db = librosa.power_to_db(ref, ref=np.max, amin=1e-10, top_db=None).clip(-80, 0)
    ours = LogMel()(torch.from_numpy(x)[None])[0, 0].numpy()
    assert ours.shape == ref_db.shape
    # compare where the signal is well above the floor (float32 vs float64 rounding elsewhere)
    assert np.abs(ours - ref_db).max() < 0.05


def test_matches_torchaudio_when_available():
    try:
        import torchaudio  # noqa: F401
        from torchaudio.transforms import AmplitudeToDB, MelSpectrogram
    except Exception as e:  # its only wheels for torch 2.13 are CUDA builds (they cannot import on a CPU-only torch)
        pytest.skip(
            f"torchaudio does not import here ({type(e).__name__}: {str(e)[:120]}); "
            "fplib's own log-mel is checked against librosa instead"
        )
    x = torch.from_numpy(music_like(1.0, seed=4))[None]
    mel = MelSpectrogram(
        8000,
        n_fft=1024,
        hop_length=256,
        f_min=300.0,
        f_max=4000.0,
        n_mels=256,
        power=2.0,
        center=True,
        pad_mode="constant",
        mel_scale="htk",
        norm=None,
    )(x)
    ref = AmplitudeToDB("power")(mel)
    ref = (ref - ref.amax()).clamp_min(-80.0)
    torch.testing.assert_close(LogMel()(x)[:, 0], ref, atol=0.05, rtol=0)


def test_filterbank_is_htk_triangles_between_fmin_and_fmax():
    fb = features.mel_filterbank(FE)
    assert fb.shape == (513, 256)
    freqs = np.linspace(0, 4000, 513)
    used = freqs[fb.any(axis=1)]
    assert used.min() >= 300.0 - 8 and used.max() <= 4000.0
    assert (fb.max(axis=0) > 0).all(), "every mel band has at least one FFT bin"
    assert fb.max() <= 1.0


def test_fmin_is_configurable():
    lm0, lm300 = LogMel(FrontEnd(f_min=0.0)), LogMel()
    assert lm0.bin_lo <= 1 and lm300.bin_lo > 30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_same_on_gpu():
    x = torch.from_numpy(music_like(3.0))
    torch.testing.assert_close(logmel(x), logmel(x, device="cuda").cpu(), atol=1e-3, rtol=0)
