"""Synthetic background noises: white, pink and brown noise, babble (many talkers), traffic, rain, mains hum
and a cafe, each drawn from a seed."""

from __future__ import annotations

import math

import numpy as np

from fplib.data import item_rng
from fplib.synth import dsp

NOISE_SR = 8000  # Hz, background noises (and their WAV files)
NOISE_RMS_DBFS = -20.0  # noises are RMS-normalised to this level (then limited to a 0.98 peak)
NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown", "babble", "traffic", "rain", "hum", "cafe")
# Vowel formants (F1, F2, F3) in Hz, for the babble voices.
_VOWELS: tuple[tuple[float, float, float], ...] = (
    (730, 1090, 2440),
    (270, 2290, 3010),
    (300, 870, 2240),
    (530, 1840, 2480),
    (570, 840, 2410),
    (660, 1720, 2410),
    (440, 1020, 2240),
)


def _babble(rng: np.random.Generator, n: int, sr: int, n_voices: int) -> np.ndarray:
    """Many talkers: glottal pulse trains with intonation, syllabic envelopes and vowel formants."""
    n_v = len(_VOWELS)
    src = np.zeros((n_v, n), dtype=np.float32)  # voiced source, split by the vowel being spoken
    fric = np.zeros(n, dtype=np.float32)
    ar = np.arange(n)
    for _ in range(n_voices):
        f0 = rng.uniform(85, 155) if rng.random() < 0.5 else rng.uniform(165, 255)
        contour = 2.0 ** ((3 * dsp.smooth(rng, n, sr, 3.0) + 1.5 * dsp.smooth(rng, n, sr, 0.5)) / 12)
        f = f0 * contour.astype(np.float64)
        n_harm = max(1, int(0.45 * sr / f.max()))
        h = np.arange(1, n_harm + 1)
        phase = np.cumsum(f / sr) + rng.random()
        (voiced,) = dsp.lookup([dsp.table(h**-1.4)], phase)
        # syllables (~4-7 per second) grouped into phrases separated by pauses
        bounds, vowels, talking, t = [0], [], [], 0
        speaking = rng.random() < 0.7
        while t < n:
            phrase_end = t + int(sr * rng.uniform(0.8, 4.0)) if speaking else t + 1
            while t < min(phrase_end, n):
                t += int(sr * (rng.uniform(0.12, 0.3) if speaking else rng.uniform(0.2, 1.2)))
                bounds.append(min(t, n))
                vowels.append(int(rng.integers(n_v)))
                talking.append(speaking)
            speaking = not speaking
        bounds_a = np.asarray(bounds)
        marker = np.zeros(n, dtype=np.int32)
        marker[bounds_a[1:-1]] = 1
        syl = np.cumsum(marker)
        start, length = bounds_a[:-1][syl], np.maximum(np.diff(bounds_a)[syl], 1)
        env = np.sin(np.pi * (ar - start) / length).astype(np.float32) ** 0.6
        env *= np.asarray(talking, dtype=np.float32)[syl] * rng.uniform(0.3, 1.0)
        src[np.asarray(vowels)[syl], ar] += voiced * env
        cons = ((ar - start) < 0.04 * sr) & (np.asarray(talking)[syl]) & (rng.random(len(vowels)) < 0.5)[syl]
        fric += rng.standard_normal(n).astype(np.float32) * cons * 0.06 * rng.uniform(0.3, 1.0)
    out = dsp.filt(dsp.sos("highpass", 2000.0, sr, 2), fric)
    for v, formants in enumerate(_VOWELS):
        sos = []
        for fc, bw in zip(formants, (80.0, 110.0, 160.0)):
            r = math.exp(-math.pi * bw / sr)
            a = [1.0, -2 * r * math.cos(2 * math.pi * min(fc, 0.45 * sr) / sr), r * r]
            sos.append([sum(a), 0, 0, *a])  # unit gain at 0 Hz
        out += dsp.filt(np.asarray(sos), src[v]) * 0.05
    return out


def _events(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """Sample positions of a Poisson process with ``rate_hz`` events per second."""
    k = rng.poisson(rate_hz * n / sr)
    return np.sort(rng.integers(0, n, k))


def synth_noise(kind: str, seed: int, seconds: float, sr: int = NOISE_SR) -> np.ndarray:
    """A background noise of ``kind`` (one of :data:`NOISE_KINDS`): ``float32 [round(seconds * sr)]``.

    ``seconds`` is the duration in seconds and ``sr`` the sample rate in Hz (at least 8000). The
    result is RMS-normalised to -20 dBFS (then scaled down, if needed, to a 0.98 peak).
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if sr < 8000:
        raise ValueError(f"sr must be at least 8000 Hz, got {sr}")
    rng = item_rng(seed, "noise", kind)
    n = int(round(seconds * sr))
    t = np.arange(n, dtype=np.float64) / sr
    if kind == "white":
        x = rng.standard_normal(n).astype(np.float32)
    elif kind == "pink":
        x = dsp.colored(rng, n, rng.uniform(0.9, 1.1), sr, 10.0)
    elif kind == "brown":
        x = dsp.colored(rng, n, rng.uniform(1.8, 2.2), sr, rng.uniform(15.0, 30.0))
    elif kind == "babble":
        x = _babble(rng, n, sr, int(rng.integers(5, 10)))
    elif kind == "traffic":
        bed = dsp.filt(dsp.sos("lowpass", rng.uniform(150, 400), sr, 2), dsp.colored(rng, n, 1.5, sr, 20.0))
        x = bed * 10 ** (4 * dsp.smooth(rng, n, sr, 0.1) / 20)
        for tc in _events(rng, n, sr, rng.uniform(0.15, 0.5)) / sr:  # passing vehicles
            v, d = rng.uniform(8, 25), rng.uniform(3, 20)  # m/s, closest distance m
            lo, hi = max(0, int((tc - 6) * sr)), min(n, int((tc + 6) * sr))
            tt = t[lo:hi] - tc
            r = np.sqrt(d**2 + (v * tt) ** 2)
            doppler = dsp.SPEED_OF_SOUND / (dsp.SPEED_OF_SOUND + v * (v * tt) / r)
            f_eng = rng.uniform(25, 60) * doppler
            ph = np.cumsum(f_eng / sr)
            eng = sum(dsp.sin_cycles(ph * k) / k for k in range(1, 7))
            tyre = dsp.filt(dsp.sos("bandpass", (300, 1500), sr, 2), rng.standard_normal(hi - lo))
            car = (eng + rng.uniform(0.5, 2.0) * tyre) * (rng.uniform(1.0, 4.0) / r).astype(np.float32)
            x[lo:hi] += car
    elif kind == "rain":
        x = dsp.filt(dsp.sos("highpass", rng.uniform(1000, 2500), sr, 2), rng.standard_normal(n)) * 0.3
        drops = np.zeros(n, dtype=np.float32)
        pos = _events(rng, n, sr, rng.uniform(300, 3000))
        amp = np.minimum(rng.pareto(2.5, len(pos)), 3.0) * rng.choice([-1, 1], len(pos))
        np.add.at(drops, pos, amp.astype(np.float32))
        x += dsp.filt(dsp.sos("bandpass", (rng.uniform(1500, 2200), 0.49 * sr), sr, 2), drops)
        for p in _events(rng, n, sr, rng.uniform(2, 10)):  # bigger drops: short chirped "plinks"
            tt = t[: int(0.04 * sr)]
            f = rng.uniform(1000, min(3500, 0.45 * sr))
            plink = np.sin(2 * np.pi * f * tt * (1 + 2 * tt)) * np.exp(-tt / rng.uniform(0.005, 0.015))
            dsp.place(x, int(p), (rng.uniform(0.2, 0.6) * plink).astype(np.float32))
        x *= 10 ** (3 * dsp.smooth(rng, n, sr, 0.2) / 20)
    elif kind == "hum":
        mains = 50.0 if rng.random() < 0.5 else 60.0
        f = mains * (1 + 0.002 * dsp.smooth(rng, n, sr, 0.3).astype(np.float64))
        k = np.arange(1, int(0.45 * sr / mains) + 1)
        amps = rng.uniform(0.1, 1.0, len(k)) * k**-0.8 * np.where(k % 2 == 1, 1.0, 0.3)
        (x,) = dsp.lookup([dsp.table(amps, rng.uniform(0, 2 * np.pi, len(k)))], np.cumsum(f / sr))
        x = x / dsp.rms(x) * 10 ** (1.0 * dsp.smooth(rng, n, sr, 0.5) / 20)
        x += dsp.colored(rng, n, 1.0, sr, 20.0) * rng.uniform(0.03, 0.1)
    else:  # cafe: distant babble, cups and cutlery, room rumble
        talk = _babble(rng, n, sr, int(rng.integers(10, 18)))
        x = dsp.filt(dsp.sos("lowpass", rng.uniform(2000, 3500), sr, 2), talk)
        x = x / (dsp.rms(x) + 1e-12)
        x += dsp.colored(rng, n, 2.0, sr, 20.0) * 0.3
        for p in _events(rng, n, sr, rng.uniform(0.3, 1.5)):
            for _ in range(int(rng.integers(1, 4))):  # a clink, sometimes bouncing
                tt = t[: int(0.25 * sr)]
                partials = rng.uniform(1500, min(3900, 0.48 * sr), int(rng.integers(2, 5)))
                clink = sum(np.sin(2 * np.pi * fp * tt + rng.uniform(0, 6.3)) for fp in partials)
                clink *= np.exp(-tt / rng.uniform(0.02, 0.12)) * rng.uniform(0.3, 1.5)
                dsp.place(x, int(p), clink.astype(np.float32))
                p += int(rng.uniform(0.03, 0.15) * sr)
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean()
    x *= 10 ** (NOISE_RMS_DBFS / 20) / (dsp.rms(x) + 1e-12)
    peak = float(np.abs(x).max())
    if peak > 0.98:
        x *= 0.98 / peak
    return dsp.fades(x, sr).astype(np.float32)
