"""Simulated room impulse responses: shoebox rooms drawn from a seed, computed by pyroomacoustics."""

from __future__ import annotations

import math

import numpy as np

from fplib.data import item_rng
from fplib.synth import dsp

RIR_SR = 16000  # Hz, impulse responses (and their WAV files)


def simulate_rir(seed: int, sr: int = RIR_SR) -> tuple[np.ndarray, dict]:
    """A shoebox room impulse response simulated with pyroomacoustics: ``float32 [L]``, peak 1.

    Room dimensions (log-uniform, 3 x 3 x 2.5 m up to 15 x 12 x 5 m), energy absorption (0.1-0.7) and
    the source and microphone positions (at least 0.5 m from every wall, at least 1 m apart) are drawn
    from ``seed``. The image-source order is chosen so that the reflections are complete up to the
    Sabine RT60 clipped to 0.1-0.6 s (at most order 60, ~0.1 s of computing); the response is cut
    there, or earlier where the energy still to come is 60 dB below the total, and faded out over
    10 ms. ``sr`` is the sample rate in Hz. The metadata holds the room (m), absorption, the
    image-source order, the theoretical (Sabine and Eyring) and measured RT60 in seconds, and the length.
    """
    import pyroomacoustics as pra  # slow to import; only needed here

    rng = item_rng(seed, "rir")
    dims = np.exp(rng.uniform(np.log([3.0, 3.0, 2.5]), np.log([15.0, 12.0, 5.0])))  # m, log-uniform
    absorption = float(rng.uniform(0.1, 0.7))
    for _ in range(100):
        src, mic = (rng.uniform(0.5, dims - 0.5) for _ in range(2))
        if np.linalg.norm(src - mic) >= 1.0:
            break
    vol, surf = float(np.prod(dims)), 2 * float(dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
    rt60_sabine = 0.161 * vol / (surf * absorption)
    cover_s = float(np.clip(rt60_sabine, 0.1, 0.6))
    per_order = dsp.SPEED_OF_SOUND * math.sqrt(float(np.sum(dims**-2.0)))  # metres of path added per reflection order
    max_order = int(min(60, math.ceil(cover_s * per_order)))
    room = pra.ShoeBox(dims.tolist(), fs=sr, materials=pra.Material(absorption), max_order=max_order)
    room.add_source(src.tolist())
    room.add_microphone(mic.tolist())
    room.compute_rir()
    h = np.asarray(room.rir[0][0], dtype=np.float64)
    complete_s = max_order / per_order  # reflections are complete up to this path time
    delay = pra.constants.get("frac_delay_length") // 2
    cut = min(len(h), int((complete_s + 0.005) * sr) + delay)
    h = h[:cut]
    energy = np.cumsum(h[::-1] ** 2)[::-1]  # Schroeder backward integral
    cut = int(np.searchsorted(-energy, -energy[0] * 1e-6)) + 1
    h = h[: max(cut, int(np.argmax(np.abs(h))) + 1)]
    k = min(len(h) // 4, int(0.01 * sr))
    h[len(h) - k :] *= np.linspace(1, 0, k)
    h /= np.abs(h).max()
    try:
        rt60_measured = float(pra.experimental.measure_rt60(h, fs=sr, decay_db=20))
    except Exception:  # a decay too short to fit
        rt60_measured = float("nan")
    meta = {
        "seed": int(seed),
        "sr": int(sr),
        "room_dim_m": [round(float(d), 3) for d in dims],
        "absorption": round(absorption, 4),
        "source_m": [round(float(v), 3) for v in src],
        "mic_m": [round(float(v), 3) for v in mic],
        "distance_m": round(float(np.linalg.norm(src - mic)), 3),
        "max_order": max_order,
        "rt60_sabine_s": round(rt60_sabine, 4),
        "rt60_eyring_s": round(0.161 * vol / (-surf * math.log(1 - absorption)), 4),
        "rt60_measured_s": round(rt60_measured, 4) if math.isfinite(rt60_measured) else None,
        "length_s": round(len(h) / sr, 4),
    }
    return h.astype(np.float32), meta
