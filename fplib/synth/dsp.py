"""Small signal helpers of the generators: wavetables, smooth random curves, coloured noise, filters, mixing."""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

SPEED_OF_SOUND = 343.0  # m/s (pyroomacoustics' default)
TABLE_N = 2048  # samples in one wavetable cycle


def hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def table(amps: np.ndarray, phases: np.ndarray | None = None) -> np.ndarray:
    """One cycle of ``sum_h amps[h-1] * sin(2 pi h x + phases[h-1])``: ``float32 [TABLE_N + 1]`` (wraps)."""
    amps = np.asarray(amps, dtype=np.float64)
    spec = np.zeros(TABLE_N // 2 + 1, dtype=np.complex128)
    ph = np.zeros_like(amps) if phases is None else np.asarray(phases, dtype=np.float64)
    spec[1 : 1 + len(amps)] = amps * np.exp(1j * (ph - np.pi / 2))
    tab = np.fft.irfft(spec, TABLE_N) * (TABLE_N / 2)
    return np.append(tab, tab[0]).astype(np.float32)


def lookup(tables: list[np.ndarray], phase: np.ndarray) -> list[np.ndarray]:
    """Read wavetables at ``phase`` (cycles, float64), linearly interpolated."""
    pos = (phase % 1.0) * TABLE_N
    i = pos.astype(np.int32)
    frac = (pos - i).astype(np.float32)
    out = []
    for tab in tables:
        a = tab[i]
        out.append(a + frac * (tab[i + 1] - a))
    return out


def sin_cycles(phase: np.ndarray) -> np.ndarray:
    """``sin(2 pi phase)`` in float32 (``phase`` in cycles, float64)."""
    return np.sin((2 * np.pi) * (phase % 1.0).astype(np.float32))


def smooth(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """A smooth random control curve ``float32 [n]`` in about [-1, 1], varying at ``rate_hz``."""
    n_pts = int(math.ceil(n / sr * rate_hz)) + 3
    pts = rng.uniform(-1, 1, n_pts)
    hop = 64  # the curve is computed every 64 samples, then linearly interpolated
    x = np.arange(n // hop + 2) * (hop * rate_hz / sr)
    i = np.minimum(x.astype(np.int64), n_pts - 2)
    f = x - i
    f = f * f * (3 - 2 * f)  # smoothstep between control points
    c = (pts[i] * (1 - f) + pts[i + 1] * f).astype(np.float32)
    ramp = np.arange(hop, dtype=np.float32) / hop
    return (c[:-1, None] + np.diff(c)[:, None] * ramp[None, :]).ravel()[:n]


def colored(rng: np.random.Generator, n: int, exponent: float, sr: int, f_lo: float = 0.0) -> np.ndarray:
    """Gaussian noise with power spectrum ~ ``f**-exponent`` (zero below ``f_lo`` Hz), unit RMS."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1 / sr)
    f[0] = f[1]
    spec *= f ** (-exponent / 2)
    spec[f < max(f_lo, f[1] * 1.01)] = 0
    x = np.fft.irfft(spec, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def sos(kind: str, freq: float | tuple[float, float], sr: int, order: int = 4) -> np.ndarray:
    """A Butterworth filter; cut-offs (Hz) above 0.45 * ``sr`` are lowered to it (whatever the rate)."""
    top = 0.45 * sr
    if isinstance(freq, tuple):
        hi = min(freq[1], top)
        freq = (min(freq[0], 0.7 * hi), hi)
    else:
        freq = min(freq, top)
    return signal.butter(order, freq, btype=kind, fs=sr, output="sos")


def filt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    return signal.sosfilt(sos, x).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def place(out: np.ndarray, start: int, x: np.ndarray) -> None:
    """``out[start : start + len(x)] += x``, clipped to ``out``."""
    if start >= out.shape[0] or start + x.shape[0] <= 0:
        return
    a, b = max(start, 0), min(start + x.shape[0], out.shape[0])
    out[a:b] += x[a - start : b - start]


def fades(x: np.ndarray, sr: int, seconds: float = 0.005) -> np.ndarray:
    k = min(int(seconds * sr), x.shape[0] // 2)
    if k > 0:
        ramp = np.linspace(0, 1, k, dtype=np.float32)
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x
