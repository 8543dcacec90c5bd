"""The degradations of real recordings beyond NAFP's: lossy codecs (fplib.audio), speed, equaliser, gain, clipping
and codecs in training (fplib.augment), codec and speed conditions in evaluation (fplib.evaluate), and the
drifting alignment of a long query played a little fast or slow (fplib.search)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.signal import butter, sosfiltfilt

from fplib import audio, codes, evaluate, search
from fplib import queries as fpqueries
from fplib.augment import (
    STEPS,
    AugmentConfig,
    Augmenter,
    Draws,
    apply_codecs,
    clip,
    equalise,
    resample_window,
)
from fplib.data import IRBank, NoiseBank
from fplib.features import FrontEnd
from fplib.synth.music import synth_song
from tests.helpers import music_like

SR = 8000
NEW_FIELDS = (
    "speed",
    "eq_on",
    "eq_gains_db",
    "gain_on",
    "gain_start_db",
    "clip_on",
    "clip_drive_db",
    "codec_on",
    "codec_id",
)
ALL_ON = dict(speed_p=0.7, eq_p=0.7, gain_p=0.7, clip_p=0.7, codec_p=0.7, codecs=(("gsm", 13.0), ("mp3", 16.0)))


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    return synth_song(7, 6.0, SR)[0]


def _highpassed(x: np.ndarray, hz: float = 200.0) -> np.ndarray:
    """Zero-phase high-pass (AMR-NB's input filter takes the bass out: compare what the codecs keep)."""
    return sosfiltfilt(butter(4, hz, "highpass", fs=SR, output="sos"), x.astype(np.float64))


def _corr(a: np.ndarray, b: np.ndarray, lag: int = 0) -> float:
    """Normalised correlation of ``a[n + lag]`` with ``b[n]``."""
    if lag > 0:
        a, b = a[lag:], b[:-lag]
    elif lag < 0:
        a, b = a[:lag], b[-lag:]
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _freq(x: np.ndarray, sr: int = SR) -> float:
    """The frequency of a sine from its zero crossings."""
    crossings = np.count_nonzero(np.signbit(x[1:]) != np.signbit(x[:-1]))
    return crossings / 2 / (len(x) / sr)


# -- codecs ------------------------------------------------------------------------------------------------


CASES = [
    ("mp3", 16.0, None),
    ("mp3", 64.0, 44100),
    ("aac", 20.0, None),
    ("aac", 64.0, 44100),
    ("opus", 12.0, None),
    ("amr_nb", 7.95, None),
    ("amr_nb", 12.2, None),
    ("gsm", 13.0, None),
]


@pytest.mark.parametrize("codec,kbps,codec_sr", CASES)
def test_codec_roundtrip_length_alignment_and_likeness(song, codec, kbps, codec_sr):
    y = audio.codec_roundtrip(song, SR, codec, kbps, codec_sr=codec_sr)
    assert y.dtype == np.float32 and y.shape == song.shape
    assert np.isfinite(y).all()
    assert y.std() > 0.2 * song.std()  # not silence
    a, b = _highpassed(y), _highpassed(song)
    corr = {lag: _corr(a, b, lag) for lag in range(-3, 4)}
    assert corr[0] > 0.5, corr
    assert max(corr, key=corr.get) == 0, corr  # the codec's delay is removed


@pytest.mark.parametrize("codec", ["gsm", "amr_nb", "opus"])
def test_codec_roundtrip_other_rates_and_short_inputs(codec):
    x = music_like(2.0, 16000, seed=3)
    y = audio.codec_roundtrip(x, 16000, codec, 12.2)  # GSM and AMR-NB always run at 8 kHz
    assert y.shape == x.shape and np.isfinite(y).all()
    assert _corr(_highpassed(y[::2]), _highpassed(x[::2])) > 0.5
    for n in (1, 100):
        assert audio.codec_roundtrip(x[:n], 16000, codec, 12.2).shape == (n,)


def test_codec_errors():
    x = np.zeros(800, np.float32)
    with pytest.raises(ValueError, match="unknown codec"):
        audio.codec_roundtrip(x, SR, "vorbis_9000", 64.0)
    with pytest.raises(ValueError, match="12345"):
        audio.codec_roundtrip(x, SR, "mp3", 64.0, codec_sr=12345)
    with pytest.raises(ValueError):
        audio.codec_roundtrip(x, SR, "gsm", 13.0, codec_sr=16000)  # the phone codec runs at 8 kHz only
    assert set(audio.CODECS) >= {"mp3", "aac", "opus", "amr_nb", "gsm"}


# -- augmentation ------------------------------------------------------------------------------------------


def _batch(aug: Augmenter, B: int = 8, seed: int = 0):
    M = aug.context
    seg = torch.stack([torch.from_numpy(music_like(1.0 + 2 * M / SR, seed=seed + i)) for i in range(B)])
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(B, SR, generator=g) * 0.1
    ir = torch.zeros(B, 3000)
    ir[:, 50] = 1.0
    ir[:, 51:] = 0.3 * torch.randn(B, 2949, generator=g) * torch.exp(-torch.arange(2949) / 300.0)
    return seg, noise, ir


def test_resample_window_at_speed_one_is_the_centre_slice():
    T, M = 8000, 1600
    x = torch.randn(3, T + 2 * M, generator=torch.Generator().manual_seed(0))
    y = resample_window(x, torch.zeros(3, dtype=torch.long), torch.ones(3), T)
    assert torch.equal(y, x[:, M : M + T])
    off = torch.tensor([-7, 0, 11])
    y = resample_window(x, off, torch.ones(3), T)
    for b in range(3):
        assert torch.equal(y[b], x[b, M + int(off[b]) : M + int(off[b]) + T])


def test_resample_window_changes_frequency_with_speed():
    T, M = 8000, 1600
    t = np.arange(T + 2 * M) / SR
    x = torch.from_numpy(np.sin(2 * np.pi * 500.0 * t + 0.3).astype(np.float32))[None].repeat(3, 1)
    speed = torch.tensor([1.0, 1.05, 0.95])
    y = resample_window(x, torch.zeros(3, dtype=torch.long), speed, T).numpy()
    f = [_freq(r) for r in y]
    assert f[0] == pytest.approx(500.0, rel=0.01)
    assert f[1] / f[0] == pytest.approx(1.05, abs=0.01)
    assert f[2] / f[0] == pytest.approx(0.95, abs=0.01)
    # the window stays centred: the middle sample is read where it was
    mid = (T - 1) // 2
    assert abs(y[1, mid] - float(x[0, M + mid])) < 0.01


def test_equalise_keeps_rms_and_zero_gains_are_identity():
    x = torch.from_numpy(np.stack([music_like(1.0, seed=i) for i in range(4)]))
    same = equalise(x, SR, torch.zeros(4, 8))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    gains = 8.0 * (2 * torch.rand(4, 8, generator=torch.Generator().manual_seed(1)) - 1)
    y = equalise(x, SR, gains)
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(y.square().mean(1).sqrt(), x.square().mean(1).sqrt(), rtol=1e-3, atol=0)
    assert (y - x).abs().max() > 0.01
    # a tilt up: the treble gains on the bass
    t = torch.arange(SR) / SR
    two = (torch.sin(2 * torch.pi * 200 * t) + torch.sin(2 * torch.pi * 3000 * t))[None]
    tilt = torch.linspace(-8.0, 8.0, 8)[None]
    z = equalise(two, SR, tilt)[0].numpy()
    spec = np.abs(np.fft.rfft(z))
    # the gains are interpolated in log-frequency between 8 log-spaced points from 100 Hz to 4 kHz
    pts = np.log(np.logspace(2, np.log10(SR / 2), 8))
    want = np.interp(np.log(3000.0), pts, tilt[0].numpy()) - np.interp(np.log(200.0), pts, tilt[0].numpy())
    assert want > 10.0  # equal before
    assert 20 * np.log10(spec[3000] / spec[200]) == pytest.approx(want, abs=1.0)
    assert equalise(torch.zeros(1, 100), SR, tilt).abs().max() == 0  # silence stays silent, no NaN


def test_clip_bounds_the_peak():
    x = torch.from_numpy(np.stack([music_like(1.0, seed=i) for i in range(3)])) * torch.tensor([[0.2], [0.9], [1.0]])
    drive = torch.tensor([6.0, 12.0, 0.0])
    y = clip(x, drive)
    peak = x.abs().amax(1)
    assert torch.all(y.abs().amax(1) <= peak * 10 ** (-drive / 20) + 1e-6)
    torch.testing.assert_close(y[2], x[2])  # 0 dB of drive: nothing reaches beyond full scale
    low = x[0].abs() < peak[0] * 10 ** (-6 / 20) * 0.99
    torch.testing.assert_close(y[0][low], x[0][low])  # below the clip level nothing changes
    assert (y[1] - x[1]).abs().max() > 0.1
    assert torch.isfinite(clip(torch.zeros(1, 10), torch.tensor([6.0]))).all()


def test_apply_codecs_changes_only_the_rows_switched_on():
    x = torch.from_numpy(np.stack([music_like(1.0, seed=i) for i in range(5)]))
    on = torch.tensor([True, False, True, True, False])
    codec_id = torch.tensor([0, 1, 1, 0, 0])
    y = apply_codecs(x, SR, on, codec_id, (("gsm", 13.0), ("mp3", 16.0)))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y[~on], x[~on])
    for r in on.nonzero()[:, 0].tolist():
        assert (y[r] - x[r]).abs().max() > 1e-3
        assert _corr(_highpassed(y[r].numpy()), _highpassed(x[r].numpy())) > 0.5
    none = apply_codecs(x, SR, torch.zeros(5, dtype=torch.bool), codec_id, (("gsm", 13.0),))
    assert torch.equal(none, x)


def test_default_config_draws_as_before():
    """The new steps draw nothing when off, and switching them on leaves the older draws as they were."""
    old = Augmenter(AugmentConfig()).draw(32, torch.Generator().manual_seed(4))
    assert all(getattr(old, name) is None for name in NEW_FIELDS)
    new = Augmenter(AugmentConfig(**ALL_ON)).draw(32, torch.Generator().manual_seed(4))
    assert torch.equal(old.offset, new.offset) and torch.equal(old.snr_db, new.snr_db)
    assert new.speed.shape == (32,) and new.speed.dtype == torch.float32
    assert torch.all((new.speed >= 0.95 - 1e-6) & (new.speed <= 1.05 + 1e-6))
    assert (new.speed != 1.0).any() and (new.speed == 1.0).any()
    assert new.eq_gains_db.shape == (32, 8) and new.eq_gains_db.abs().max() <= 8.0
    assert new.gain_start_db.abs().max() <= 5.0
    assert torch.all((new.clip_drive_db >= 3.0) & (new.clip_drive_db <= 18.0))
    assert set(new.codec_id.tolist()) <= {0, 1}
    for name in ("eq_on", "gain_on", "clip_on", "codec_on"):
        v = getattr(new, name)
        assert v.dtype == torch.bool and v.any() and not v.all()
    # a config with only one new step draws only that one, the others stay None
    one = Augmenter(AugmentConfig(clip_p=1.0)).draw(4, torch.Generator().manual_seed(0))
    assert one.clip_on.all() and one.speed is None and one.codec_on is None
    # every older decision (rooms, noise, band-limits, masks) is drawn as without the new steps: the same
    # seed gives the same examples, with the new degradations on top
    changed = [
        f.name
        for f in dataclasses.fields(Draws)
        if f.name not in NEW_FIELDS and not torch.equal(getattr(old, f.name), getattr(new, f.name))
    ]
    assert changed == []


@pytest.mark.slow
def test_all_new_steps_on_give_finite_features_and_disable_turns_them_off():
    fe = FrontEnd()
    on = Augmenter(
        AugmentConfig(**{**ALL_ON, "speed_p": 1.0, "eq_p": 1.0, "gain_p": 1.0, "clip_p": 1.0, "codec_p": 1.0}), fe
    )
    seg, noise, ir = _batch(on)
    # the original recipe with the same context (a speed change needs a little more on each side); the draws
    # below are given, so the wider offset range this config allows plays no part
    off = Augmenter(AugmentConfig(offset_max_s=on.context / fe.sr), fe)
    assert off.context == on.context > Augmenter(AugmentConfig(), fe).context
    clean_f, aug_f = on.pairs(seg, noise, ir, torch.Generator().manual_seed(2))
    shape = (seg.shape[0], 1, fe.n_mels, fe.n_frames)
    assert clean_f.shape == shape and aug_f.shape == shape
    assert torch.isfinite(clean_f).all() and torch.isfinite(aug_f).all()

    draws = on.draw(seg.shape[0], torch.Generator().manual_seed(9))
    _, x_on, steps = on.degrade(seg, noise, ir, draws, return_steps=True)
    assert {"offset", "eq", "gain", "clip", "codec"} <= set(steps) and torch.isfinite(x_on).all()
    quiet = draws.disable("speed", "eq", "gain", "clip", "codec")
    assert quiet.speed is None and not quiet.eq_on.any() and not quiet.gain_on.any()
    assert not quiet.clip_on.any() and not quiet.codec_on.any()
    assert draws.speed is not None and draws.codec_on.all()  # disable makes a copy
    clean, x_quiet = on.degrade(seg, noise, ir, quiet)
    # with the new steps off: the original recipe on the same older draws
    older = dataclasses.replace(draws, **{name: None for name in NEW_FIELDS})
    old_clean, x_old = off.degrade(seg, noise, ir, older)
    torch.testing.assert_close(x_quiet, x_old)
    torch.testing.assert_close(clean, old_clean)
    assert (x_on - x_quiet).abs().amax(1).min() > 1e-3  # every example was changed by the new steps
    # disabling steps that were never drawn is harmless
    plain = off.draw(2, torch.Generator().manual_seed(0)).disable("speed", "eq", "gain", "clip", "codec")
    assert all(getattr(plain, name) is None for name in NEW_FIELDS)
    with pytest.raises(ValueError):
        plain.disable("warp")


def test_return_steps_names_every_step_for_display():
    """degrade(return_steps=True) gives a signal for every name of STEPS: what viz.plot_steps (notebook 01's
    show_steps and explorer) draws, one row per step."""
    from fplib import viz

    aug = Augmenter(AugmentConfig(**ALL_ON))
    seg, noise, ir = _batch(aug, B=2)
    _, _, steps = aug.degrade(seg, noise, ir, aug.draw(2, torch.Generator().manual_seed(0)), return_steps=True)
    assert set(STEPS) <= set(steps)
    for name in ("clean", *STEPS):
        assert steps[name].shape == (2, aug.fe.win_len), name
    fig = viz.plot_steps(steps, aug.fe)
    assert fig.axes[0].get_gridspec().nrows == 1 + len(STEPS)  # one row per step (colorbars add axes)
    viz.plt.close(fig)


def test_each_new_step_alone_changes_the_degraded_view():
    for step, kw in (
        ("speed", {"speed_p": 1.0, "speed_max": 0.05}),
        ("eq", {"eq_p": 1.0}),
        ("gain", {"gain_p": 1.0}),
        ("clip", {"clip_p": 1.0}),
        ("codec", {"codec_p": 1.0, "codecs": (("gsm", 13.0),)}),
    ):
        aug = Augmenter(AugmentConfig(**kw))
        seg, noise, ir = _batch(aug, B=4, seed=5)
        d = aug.draw(4, torch.Generator().manual_seed(3))
        _, x = aug.degrade(seg, noise, ir, d)
        _, y = aug.degrade(seg, noise, ir, d.disable(step))
        assert (x - y).abs().max() > 1e-3, step
        assert torch.isfinite(x).all()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="codecs"):
        AugmentConfig(codecs=(("vorbis", 64.0),))
    with pytest.raises(ValueError, match="codecs"):
        AugmentConfig(codec_p=0.5, codecs=())
    for bad in (0.5, 0.7, -0.01):
        with pytest.raises(ValueError, match="speed_max"):
            AugmentConfig(speed_max=bad)
    with pytest.raises(ValueError):
        AugmentConfig(eq_db=-1.0)
    with pytest.raises(ValueError):
        AugmentConfig(gain_db=-1.0)
    with pytest.raises(ValueError, match="clip_drive_db"):
        AugmentConfig(clip_drive_db=(10.0, 3.0))
    for name in ("speed_p", "eq_p", "gain_p", "clip_p", "codec_p"):
        with pytest.raises(ValueError, match=name):
            AugmentConfig(**{name: 1.5})
    cfg = AugmentConfig(speed_max=0.49, codecs=[["mp3", 16]])
    assert cfg.codecs == (("mp3", 16.0),)  # lists (from JSON) become tuples: the config stays hashable
    hash(cfg)


# -- evaluation conditions ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A 10-s song, a 400-Hz tone, a delta impulse response and a noise (added at 200 dB SNR: inaudible)."""
    root = tmp_path_factory.mktemp("conditions")
    audio.write(root / "song.flac", music_like(10.0, SR, seed=1), SR)
    t = np.arange(10 * SR) / SR
    audio.write(root / "tone.wav", (0.5 * np.sin(2 * np.pi * 400.0 * t)).astype(np.float32), SR, subtype="FLOAT")
    ir = np.zeros(400, np.float32)
    ir[0] = 1.0
    audio.write(root / "delta.wav", ir, SR, subtype="FLOAT")
    audio.write(root / "noise.wav", (0.1 * np.random.default_rng(0).standard_normal(4 * SR)).astype(np.float32), SR)
    irs, noises = IRBank([root / "delta.wav"]), NoiseBank([root / "noise.wav"])
    return {"root": root, "song": str(root / "song.flac"), "tone": str(root / "tone.wav"), "irs": irs, "noises": noises}


def _query(song: str, id: int, start: float = 1.0, length: float = 3.0, **kw) -> fpqueries.Query:
    return fpqueries.Query(
        id=id, in_database=True, song=song, name="s", start_s=start, length_s=length, snr_db=200.0, ir=0, seed=id, **kw
    )


def test_with_conditions_appends_copies_with_new_ids(bench):
    qs = [_query(bench["song"], 3), _query(bench["song"], 7, start=6.9), _query(bench["tone"], 5, start=0.0)]
    out = fpqueries.with_conditions(qs, ("mp3_64", "speed+5", "speed-5"))
    assert out[:3] == qs
    extra = out[3:]
    ids = [q.id for q in out]
    assert len(set(ids)) == len(ids) and min(q.id for q in extra) > max(q.id for q in qs)
    assert [q.condition for q in extra if q.condition == "mp3_64"] == ["mp3_64"] * 3
    # 6.9 + 3 x 1.05 s reaches past the 10-s song: that speed copy is left out; at 0.95 it fits
    assert sorted((q.song, q.start_s) for q in extra if q.condition == "speed+5") == sorted(
        [(bench["song"], 1.0), (bench["tone"], 0.0)]
    )
    assert len([q for q in extra if q.condition == "speed-5"]) == 3
    for q in extra:
        orig = next(o for o in qs if (o.song, o.start_s) == (q.song, q.start_s))
        assert dataclasses.replace(q, id=orig.id, condition="") == orig
    assert fpqueries.with_conditions(qs, ()) == qs
    assert fpqueries.with_conditions([], ("gsm",)) == []
    with pytest.raises(ValueError, match="speed\\+50"):
        fpqueries.with_conditions(qs, ("gsm", "speed+50"))
    with pytest.raises(ValueError):
        evaluate.Protocol(conditions=("bogus",))
    assert evaluate.Protocol(conditions=["gsm"]).conditions == ("gsm",)


def test_conditions_table_is_consistent():
    for name, cond in fpqueries.CONDITIONS.items():
        assert cond[0] in ("codec", "speed")
        if cond[0] == "codec":
            assert cond[1] in audio.CODECS and cond[3] in audio.CODECS[cond[1]][2], name
        else:
            assert 0.9 <= cond[1] <= 1.1


def test_render_speed_query_length_and_pitch(bench):
    plain = _query(bench["tone"], 0, start=0.5, length=3.0)
    fast = dataclasses.replace(plain, id=1, condition="speed+5")
    slow = dataclasses.replace(plain, id=2, condition="speed-2")
    n = 3 * SR
    wavs = [fpqueries.render(q, bench["irs"], bench["noises"]) for q in (plain, fast, slow)]
    for w in wavs:
        assert w.shape == (n,) and w.dtype == np.float32 and np.isfinite(w).all()
    f = [_freq(w[200:-200]) for w in wavs]
    assert f[0] == pytest.approx(400.0, rel=0.01)
    assert f[1] / f[0] == pytest.approx(1.05, abs=0.01)
    assert f[2] / f[0] == pytest.approx(0.98, abs=0.01)
    # an odd length: still exactly length x sr samples
    odd = dataclasses.replace(fast, length_s=1.2345)
    assert fpqueries.render(odd, bench["irs"], bench["noises"]).shape == (int(round(1.2345 * SR)),)


@pytest.mark.parametrize("condition", ["mp3_64", "aac_64", "gsm", "amr_12.2"])
def test_render_codec_query(bench, condition):
    q = _query(bench["song"], 0, start=2.0, length=2.0)
    clean = fpqueries.render(q, bench["irs"], bench["noises"])
    coded = fpqueries.render(dataclasses.replace(q, condition=condition), bench["irs"], bench["noises"])
    assert coded.shape == clean.shape == (2 * SR,) and np.isfinite(coded).all()
    assert not np.array_equal(coded, clean)
    assert _corr(_highpassed(coded), _highpassed(clean)) > 0.5


def test_resample_to():
    x = music_like(1.0, SR)
    for n in (SR, 7600, 8400, 8001, 1):
        y = fpqueries.resample_to(x, n)
        assert y.shape == (n,) and np.isfinite(y).all()
    assert fpqueries.resample_to(x, SR) is x
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 300.0 * t).astype(np.float32)
    assert _freq(fpqueries.resample_to(tone, 7500)[100:-100], SR) == pytest.approx(320.0, rel=0.01)


def test_score_labels_condition_rows(bench):
    qs = fpqueries.with_conditions([_query(bench["song"], 0), _query(bench["song"], 1, start=4.0)], ("gsm",))
    qs.append(fpqueries.Query(9, False, bench["song"], "", 0.0, 3.0, 200.0, 0, 9, condition="gsm"))
    rows = []
    for q in qs:
        hit = q.in_database and not (q.condition == "gsm" and q.start_s == 4.0)  # one miss under GSM
        rows.append(
            {
                "query": q.id,
                "system": "neural",
                "predicted": ["s" if hit else "x"],
                "offsets": [q.start_s],
                "accepted": q.in_database,
                "total_ms": 1.0,
            }
        )
    table = evaluate.score(qs, rows, per_snr=False)
    by = {r["system"]: r for r in table}
    assert set(by) == {"neural", "neural @gsm"}
    assert by["neural"]["n"] == 2 and by["neural"]["top1"] == 1.0 and by["neural"]["n_out"] == 0
    assert by["neural @gsm"]["n"] == 2 and by["neural @gsm"]["top1"] == 0.5 and by["neural @gsm"]["n_out"] == 1
    assert by["neural @gsm"]["fp_rate"] == 0.0


def test_queries_with_conditions_save_and_load(bench, tmp_path):
    qs = fpqueries.with_conditions([_query(bench["song"], 0)], ("speed-2", "amr_12.2"))
    fpqueries.save_queries(tmp_path / "q.json", qs)
    assert fpqueries.load_queries(tmp_path / "q.json") == qs


# -- drifting alignment ------------------------------------------------------------------------------------


def _fake_recognizer(songs: list[np.ndarray]) -> search.Recognizer:
    """A Recognizer with only what sequence scoring reads: the songs' windows in one matrix."""
    r = search.Recognizer.__new__(search.Recognizer)
    r.kind = "float"
    r.dtype = codes.stored_dtype("float")
    r.matrix = np.concatenate(songs).astype(np.float32)
    r.lengths = np.array([len(s) for s in songs], dtype=np.int64)
    r.rows = np.concatenate([[0], np.cumsum(r.lengths)[:-1]]).astype(np.int64)
    return r


def _unit(rng: np.random.Generator, n: int, d: int = 64) -> np.ndarray:
    v = rng.standard_normal((n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _plain_scores(r: search.Recognizer, q: np.ndarray, si: np.ndarray, start: np.ndarray) -> np.ndarray:
    m = len(q)
    vectors, inside = r.aligned_windows(si, start[:, None] + np.arange(m)[None, :])
    return np.where(inside, codes.similarity(vectors, q[None], r.kind), 0.0).sum(axis=1) / m


@pytest.mark.parametrize("drift", [0.04, -0.04, 0.06])
def test_drifted_alignment_recovers_a_song_played_fast_or_slow(drift):
    rng = np.random.default_rng(0)
    songs = [_unit(rng, 60), _unit(rng, 50)]
    r = _fake_recognizer(songs)
    m, start = 20, 7
    q = songs[0][start + np.round(np.arange(m) * (1 + drift)).astype(np.int64)]
    si, st = np.array([0, 1, 0]), np.array([start, start, start + 3])
    plain = _plain_scores(r, q, si, st)
    out = r._drifted(q, si, st, plain)
    assert out.shape == plain.shape
    assert np.all(out >= plain)  # the best alignment counts, never worse than the unshifted one
    assert out[0] > 0.99 and plain[0] < 0.8
    assert out[0] > plain[0] + 0.2
    assert abs(out[1]) < 0.3  # another song stays unrelated
    assert out.argmax() == 0
    np.testing.assert_array_equal(plain, _plain_scores(r, q, si, st))  # the input is not changed in place


def test_drift_leaves_exact_and_short_queries_alone():
    rng = np.random.default_rng(1)
    songs = [_unit(rng, 40)]
    r = _fake_recognizer(songs)
    q = songs[0][5:25]  # played at the right speed: the unshifted alignment is the best
    si, st = np.array([0]), np.array([5])
    plain = _plain_scores(r, q, si, st)
    assert plain[0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(r._drifted(q, si, st, plain), plain)
    short = songs[0][[5, 6, 7]]  # 3 windows: no drift moves the last one by a hop
    si3, st3 = np.array([0, 0]), np.array([5, 9])
    s3 = _plain_scores(r, short, si3, st3)
    np.testing.assert_array_equal(r._drifted(short, si3, st3, s3), s3)
    assert all(round(2 * abs(d)) == 0 for d in search.DRIFTS)


def test_only_the_best_candidates_are_rescored():
    rng = np.random.default_rng(2)
    song = _unit(rng, 80)
    r = _fake_recognizer([song])
    m = 20
    q = song[10 + np.round(np.arange(m) * 1.04).astype(np.int64)]
    n = search.DRIFT_CANDIDATES + 5
    si, st = np.zeros(n, np.int64), np.full(n, 10)
    plain = np.linspace(1.0, 0.0, n)  # made-up scores: the last candidates rank below the cut
    out = r._drifted(q, si, st, plain)
    assert np.all(out[: search.DRIFT_CANDIDATES] > 0.99)
    np.testing.assert_array_equal(out[search.DRIFT_CANDIDATES :], plain[search.DRIFT_CANDIDATES :])
