"""Procedural songs: the plan of :mod:`fplib.synth.compose` played by random instruments (additive wavetable
synths with ADSR envelopes, FM, Karplus-Strong plucks, organ, detuned pads) and a drum kit, then mixed.

A song has melody, chords, bass and drums, with per-song tempo, meter, key, scale/mode, chord
progressions, instruments and drum kit. It is built from sections (intro, A, B, C, ...) whose melody
is re-varied on every phrase and every repeat, with drum fills and crashes at section changes, so no
second of a song repeats another. All randomness comes from ``numpy.random.default_rng`` seeded from
the caller's seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import signal

from fplib.data import item_rng
from fplib.synth import dsp
from fplib.synth.compose import NOTE_NAMES, Notes, Song

MUSIC_SR = 16000  # Hz, songs (and their FLAC files)
PEAK_DBFS = -1.0  # songs are peak-normalised to this level


def _instrument(rng: np.random.Generator, role: str) -> dict[str, Any]:
    """Random timbre parameters for a part ("melody", "chords", "arp" or "bass")."""
    names = {
        "melody": ["lead", "fm_brass", "fm_bell", "pluck", "square", "flute"],
        "chords": ["pad", "organ", "epiano", "strings", "pluck"],
        "arp": ["pluck", "fm_bell", "lead", "square"],
        "bass": ["sub", "saw", "fm_bass", "pluck"],
    }[role]
    name = str(rng.choice(names))
    u = rng.uniform
    p: dict[str, Any] = {"name": name, "kind": "add", "detune": 0.0, "vibrato": (0.0, 0.0, 0.0), "breath": 0.0}
    if name in ("lead", "square", "strings", "saw", "sub", "flute", "pad", "organ"):
        slope = {
            "lead": u(0.8, 1.6),
            "square": u(0.9, 1.2),
            "strings": u(0.9, 1.3),
            "saw": u(0.9, 1.2),
            "sub": u(2.5, 4.0),
            "flute": u(2.5, 3.5),
            "pad": u(1.0, 1.6),
            "organ": 0.0,
        }[name]
        odd = {"square": u(0.0, 0.15), "flute": u(0.3, 0.7)}.get(name, u(0.5, 1.0))
        p.update(slope=slope, odd=odd, n_harm=int(rng.integers(8, 24)), dark=u(1.5, 4.0), bright_tau=u(0.05, 0.4))
    if name == "organ":
        draw = np.zeros(16)
        for h in (1, 2, 3, 4, 6, 8, 10, 12, 16):
            draw[h - 1] = u(0.0, 1.0) if h > 1 else 1.0
        p.update(drawbars=draw, adsr=(0.01, 0.2, 0.9, 0.05), bright_tau=0.0)
    elif name in ("fm_brass", "fm_bell", "epiano", "fm_bass"):
        ratio = {
            "fm_brass": 1.0,
            "fm_bell": float(rng.choice([1.4, 2.0, 3.5, 3.0])),
            "epiano": float(rng.choice([1.0, 2.0])),
            "fm_bass": float(rng.choice([0.5, 1.0, 2.0])),
        }[name]
        index = {"fm_brass": u(1.5, 4.0), "fm_bell": u(1.5, 5.0), "epiano": u(1.0, 3.0), "fm_bass": u(1.0, 3.0)}[name]
        p.update(kind="fm", ratio=ratio, index=index, index_tau=u(0.05, 0.5), index_sus=u(0.05, 0.4))
    elif name == "pluck":
        p.update(kind="pluck", t60=u(0.6, 2.5), lowpass=u(0.0, 0.7))
    adsr = {
        "lead": (u(0.005, 0.05), u(0.1, 0.4), u(0.5, 0.9), u(0.05, 0.2)),
        "square": (u(0.003, 0.02), u(0.1, 0.3), u(0.4, 0.8), u(0.03, 0.1)),
        "flute": (u(0.04, 0.1), 0.2, u(0.7, 0.9), u(0.05, 0.15)),
        "strings": (u(0.08, 0.3), 0.5, u(0.7, 0.9), u(0.2, 0.5)),
        "pad": (u(0.2, 0.6), 1.0, u(0.7, 0.95), u(0.3, 0.8)),
        "fm_brass": (u(0.02, 0.08), u(0.2, 0.5), u(0.5, 0.8), u(0.05, 0.15)),
        "fm_bell": (0.002, u(0.3, 1.0), 0.0, u(0.2, 0.6)),
        "epiano": (0.003, u(0.5, 1.5), u(0.0, 0.3), u(0.1, 0.3)),
        "fm_bass": (0.004, u(0.1, 0.4), u(0.3, 0.7), 0.05),
        "saw": (0.004, u(0.1, 0.4), u(0.4, 0.8), 0.05),
        "sub": (0.006, 0.3, u(0.7, 1.0), 0.06),
        "pluck": (0.001, 1.0, 1.0, u(0.05, 0.2)),
    }
    p.setdefault("adsr", adsr.get(name, (0.01, 0.2, 0.8, 0.1)))
    if name in ("lead", "flute", "strings", "fm_brass") and rng.random() < 0.8:
        p["vibrato"] = (u(4.5, 6.5), u(0.1, 0.35), u(0.1, 0.3))  # Hz, semitones, onset delay s
    if name in ("pad", "strings", "saw") or (name == "lead" and rng.random() < 0.4):
        p["detune"] = u(4.0, 14.0)  # cents, a second oscillator
    if name == "flute":
        p["breath"] = u(0.03, 0.1)
    return p


def _tracks(on_s: np.ndarray, dur_s: np.ndarray, n: int, sr: int, release_s: float):
    """Per-sample state of a monophonic line: note index, time since onset (s), gate (s), end fade."""
    on = np.round(on_s * sr).astype(np.int64)
    keep = np.r_[True, np.diff(on) > 0] & (on < n)
    on, dur_s = on[keep], dur_s[keep]
    nxt = np.r_[on[1:], n]
    gate = np.minimum(np.round(dur_s * sr).astype(np.int64), nxt - on)
    end = np.minimum(nxt, on + gate + int(4 * release_s * sr) + 1)
    marker = np.zeros(n, dtype=np.int32)
    marker[on] = 1
    idx = np.cumsum(marker, dtype=np.int32) - 1
    pos = np.maximum(idx, 0)
    ar = np.arange(n, dtype=np.int64)
    t = np.maximum(ar - on[pos], 0)
    fade_len = 0.004 * sr
    fade = np.clip((end[pos] - ar) / fade_len, 0.0, 1.0).astype(np.float32)
    fade[idx < 0] = 0.0
    return keep, pos, (t / sr).astype(np.float32), (gate / sr).astype(np.float32)[pos], fade


def _adsr(ts: np.ndarray, gate: np.ndarray, adsr: tuple[float, float, float, float]) -> np.ndarray:
    a, d, s, r = adsr

    def held(x: np.ndarray) -> np.ndarray:
        return np.where(x < a, x / a, s + (1 - s) * np.exp(-(x - a) / d)).astype(np.float32)

    released = held(gate) * np.exp(-np.maximum(ts - gate, 0) / r)
    return np.where(ts < gate, held(ts), released).astype(np.float32)


def _harmonic_amps(p: dict[str, Any], n_harm: int) -> tuple[np.ndarray, np.ndarray]:
    """(bright, dark) harmonic amplitudes of an additive instrument."""
    h = np.arange(1, n_harm + 1, dtype=np.float64)
    if "drawbars" in p:
        amps = np.asarray(p["drawbars"], dtype=np.float64)[:n_harm]
        amps = np.pad(amps, (0, n_harm - len(amps)))
        return amps, amps
    amps = h ** -p["slope"]
    amps[1::2] *= p["odd"]  # even harmonics (h = 2, 4, ...)
    return amps, amps * np.exp(-(h - 1) / p["dark"])


def _render_voices(notes: list[Notes], p: dict[str, Any], n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Render monophonic lines (chord voices share one instrument) with instrument ``p``: float32 [n]."""
    out = np.zeros(n, dtype=np.float32)
    for line in notes:
        if not line.on:
            continue
        on_s, dur_s, midi, vel = line.arrays()
        inside = np.round(on_s * sr) < n
        if not inside.any():
            continue
        on_s, dur_s, midi, vel = on_s[inside], dur_s[inside], midi[inside], vel[inside]
        if p["kind"] == "pluck":
            _render_pluck(out, on_s, dur_s, midi, vel, p, sr, rng)
            continue
        keep, pos, ts, gate, fade = _tracks(on_s, dur_s, n, sr, p["adsr"][3])
        midi, vel = midi[keep], vel[keep]
        env = _adsr(ts, gate, p["adsr"]) * fade * vel.astype(np.float32)[pos]
        f = dsp.hz(midi)[pos]
        rate, depth, delay = p["vibrato"]
        if depth > 0:
            ramp = np.clip(ts / delay - 1.0, 0.0, 1.0)
            f = f * 2.0 ** (depth / 12 * ramp * np.sin(2 * np.pi * rate * np.arange(n) / sr))
        f_max = float(dsp.hz(midi.max())) * 2 ** (depth / 12)
        oscs = [1.0] + ([2 ** (p["detune"] / 1200)] if p["detune"] else [])
        sig = np.zeros(n, dtype=np.float32)
        wobble = 0.5 + 0.5 * dsp.smooth(rng, n, sr, 0.3)  # slow timbre movement, 0-1
        for mult in oscs:
            phase = np.cumsum(f * (mult / sr)) + rng.random()
            if p["kind"] == "fm":
                ratio = p["ratio"]
                cap = max(0.3, (0.45 * sr / (f_max * ratio)) - 1.0)
                index = min(p["index"], cap)
                ienv = index * (p["index_sus"] + (1 - p["index_sus"]) * np.exp(-ts / p["index_tau"]))
                ienv *= 0.7 + 0.6 * wobble
                carrier = (2 * np.pi) * (phase % 1.0).astype(np.float32)
                sig += np.sin(carrier + ienv * dsp.sin_cycles(phase * ratio))
            else:
                n_harm = max(1, min(p.get("n_harm", 16), int(0.45 * sr / f_max)))
                bright, dark = _harmonic_amps(p, n_harm)
                tb, td = dsp.lookup([dsp.table(bright), dsp.table(dark)], phase)
                if p["bright_tau"] > 0:
                    b = np.minimum(np.exp(-ts / p["bright_tau"]) + 0.5 * wobble, 1.0)
                    sig += td + b * (tb - td)
                else:
                    sig += tb * (0.85 + 0.3 * wobble)
        sig *= env / len(oscs)
        if p["breath"] > 0:
            sig += dsp.filt(dsp.sos("highpass", 1500.0, sr, 2), rng.standard_normal(n)) * env * p["breath"]
        out += sig
    return out


def _render_pluck(
    out: np.ndarray,
    on_s: np.ndarray,
    dur_s: np.ndarray,
    midi: np.ndarray,
    vel: np.ndarray,
    p: dict[str, Any],
    sr: int,
    rng: np.random.Generator,
) -> None:
    """Karplus-Strong plucked strings, one comb filter (``scipy.signal.lfilter``) per note."""
    n = out.shape[0]
    on = np.round(on_s * sr).astype(np.int64)
    nxt = np.r_[on[1:], n]
    release = p["adsr"][3]
    for i in range(len(on)):
        if on[i] >= n:
            continue
        # rings until the next note (plus the release), at most 2.5 s
        length = int(min(nxt[i] - on[i] + release * sr, (dur_s[i] + 4 * release) * sr, 2.5 * sr, n - on[i]))
        if length < 8:
            continue
        f0 = float(dsp.hz(midi[i]))
        delay = sr / f0  # loop delay in samples: z^-N, the 2-point average (0.5) and an allpass (frac)
        big_n = max(2, int(math.floor(delay - 0.5 - 0.1)))
        frac = delay - 0.5 - big_n
        c = (1 - frac) / (1 + frac)
        g = 10 ** (-3.0 / (p["t60"] * f0))  # per-period loss for the wanted 60 dB decay time
        loop = np.zeros(big_n + 3)
        loop[big_n : big_n + 3] = 0.5 * g * np.array([c, 1 + c, 1.0])  # z^-N (1 + z^-1)/2 (c + z^-1)
        a = np.zeros(big_n + 3)
        a[:2] = [1.0, c]
        a -= loop
        b = np.array([1.0, c])
        burst = rng.uniform(-1, 1, big_n)
        if p["lowpass"] > 0:
            burst = signal.lfilter([1 - p["lowpass"]], [1, -p["lowpass"]], burst)
        burst -= burst.mean()
        x = np.zeros(length)
        x[: min(big_n, length)] = burst[: min(big_n, length)]
        y = signal.lfilter(b, a, x).astype(np.float32)
        k = min(length, int(0.004 * sr))
        y[length - k :] *= np.linspace(1, 0, k, dtype=np.float32)
        out[on[i] : on[i] + length] += y * (vel[i] / (np.abs(burst).max() + 1e-9))


def _drum_kit(rng: np.random.Generator, sr: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One-shot drum samples (float32) and the parameters drawn."""
    u = rng.uniform

    def t(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * sr), dtype=np.float64) / sr

    def swept(f_hi: float, f_lo: float, tau_f: float, tau_a: float, seconds: float) -> np.ndarray:
        tt = t(seconds)
        f = f_lo + (f_hi - f_lo) * np.exp(-tt / tau_f)
        return (np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-tt / tau_a)).astype(np.float32)

    def noise(seconds: float, tau: float, sos: np.ndarray) -> np.ndarray:
        tt = t(seconds)
        return dsp.filt(sos, rng.standard_normal(len(tt))) * np.exp(-tt / tau).astype(np.float32)

    prm: dict[str, Any] = {
        "kick_hz": u(100, 200),
        "kick_end_hz": u(40, 60),
        "kick_decay_s": u(0.12, 0.35),
        "snare_hz": u(150, 250),
        "snare_noise": u(0.5, 1.5),
        "snare_decay_s": u(0.08, 0.2),
        "hat_hp_hz": u(5000, 7000),
        "hat_decay_s": u(0.02, 0.06),
        "tom_hz": u(90, 140),
    }
    kick = swept(prm["kick_hz"], prm["kick_end_hz"], u(0.02, 0.06), prm["kick_decay_s"], 0.6)
    kick[: int(0.003 * sr)] += rng.uniform(-0.4, 0.4, int(0.003 * sr)).astype(np.float32)
    snare = swept(prm["snare_hz"] * 1.3, prm["snare_hz"], 0.01, u(0.04, 0.1), 0.4)
    snare_sos = dsp.sos("bandpass", (1000, 6000), sr, 2)
    snare = snare + prm["snare_noise"] * noise(0.4, prm["snare_decay_s"], snare_sos)
    hat_sos = dsp.sos("highpass", prm["hat_hp_hz"], sr, 4)
    kit = {
        "kick": kick,
        "snare": snare,
        "hat": 0.6 * noise(0.25, prm["hat_decay_s"], hat_sos),
        "ohat": 0.6 * noise(0.8, u(0.15, 0.35), hat_sos),
        "crash": 0.7 * noise(2.0, u(0.5, 1.2), dsp.sos("highpass", u(2500, 4000), sr, 2)),
    }
    aux = str(rng.choice(["shaker", "clap", "rim", "cowbell", "tambourine"]))
    prm["aux"] = aux
    if aux == "shaker":
        kit["aux"] = noise(0.15, u(0.02, 0.05), dsp.sos("bandpass", (4000, 7500), sr, 2))
    elif aux == "clap":
        c = noise(0.3, u(0.05, 0.12), dsp.sos("bandpass", (900, 3000), sr, 2))
        for j in (1, 2):
            c[int(j * 0.01 * sr) :] += c[: len(c) - int(j * 0.01 * sr)] * 0.8
        kit["aux"] = c
    elif aux == "rim":
        kit["aux"] = swept(u(1500, 2500), u(800, 1500), 0.005, 0.015, 0.1)
    elif aux == "cowbell":
        tt = t(0.4)
        f1 = u(500, 600)
        bell = np.sign(np.sin(2 * np.pi * f1 * tt)) + np.sign(np.sin(2 * np.pi * f1 * 1.48 * tt))
        kit["aux"] = (bell * np.exp(-tt / u(0.05, 0.1))).astype(np.float32)
    else:
        tt = t(0.3)
        jingle = sum(np.sin(2 * np.pi * f * tt) for f in u(5000, 7500, 4)) * np.exp(-tt / u(0.05, 0.1))
        kit["aux"] = noise(0.3, 0.06, hat_sos) + 0.3 * jingle.astype(np.float32)
    for j, name in enumerate(("tom1", "tom2", "tom3")):
        f = prm["tom_hz"] * 1.35**j
        kit[name] = swept(f * 1.5, f, 0.03, u(0.15, 0.3), 0.6)
    return {k: dsp.fades(v / np.abs(v).max(), sr, 0.002) for k, v in kit.items()}, prm


def _render_drums(
    hits: dict[str, list[tuple[float, float]]], kit: dict[str, np.ndarray], n: int, sr: int
) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    gains = {
        "kick": 1.0,
        "snare": 0.8,
        "hat": 0.35,
        "ohat": 0.3,
        "crash": 0.35,
        "tom1": 0.7,
        "tom2": 0.7,
        "tom3": 0.7,
        "aux": 0.3,
    }
    for name, hs in hits.items():
        sample = kit[name] * gains[name]
        for t0, vel in hs:
            dsp.place(out, int(round(t0 * sr)), sample * vel)
    return out


def synth_song(seed: int, seconds: float, sr: int = MUSIC_SR) -> tuple[np.ndarray, dict]:
    """A procedurally composed and synthesised song: ``float32 [round(seconds * sr)]`` and its metadata.

    ``seconds`` is the duration in seconds and ``sr`` the sample rate in Hz. The mix is peak-normalised
    to -1 dBFS (so every sample is in [-1, 1]). The metadata (JSON-able) holds the tempo (BPM), meter
    (beats per bar), key, scale/mode, instruments, sections (start in seconds) and progressions.
    The same seed always gives the same array; different seeds give different songs.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if sr < 8000:
        raise ValueError(f"sr must be at least 8000 Hz, got {sr}")
    rng = item_rng(seed, "song")
    n = int(round(seconds * sr))
    song = Song(rng, seconds)
    insts = {role: _instrument(rng, role) for role in ("melody", "chords", "arp", "bass")}
    voices, arp = song.comp()
    stems = {
        "melody": _render_voices([song.melody()], insts["melody"], n, sr, rng),
        "chords": _render_voices(voices, insts["chords"], n, sr, rng),
        "arp": _render_voices([arp], insts["arp"], n, sr, rng),
        "bass": _render_voices([song.bass()], insts["bass"], n, sr, rng),
    }
    kit, kit_prm = _drum_kit(rng, sr)
    stems["drums"] = _render_drums(song.drums(), kit, n, sr)
    levels = {"melody": -16.0, "chords": -22.0, "arp": -20.0, "bass": -18.0, "drums": -18.0}  # dB RMS
    mix = np.zeros(n, dtype=np.float32)
    for name, x in stems.items():
        r = dsp.rms(x)
        if r > 0:
            gain_db = levels[name] + rng.uniform(-3, 3)
            automation = 10 ** (1.5 * dsp.smooth(rng, n, sr, 0.15) / 20)  # +-1.5 dB slow balance changes
            mix += x * (10 ** (gain_db / 20) / r) * automation
    peak = float(np.abs(mix).max())
    mix = dsp.fades(mix * (10 ** (PEAK_DBFS / 20) / peak if peak > 0 else 1.0), sr)
    beat_s = 60.0 / song.tempo
    sections = [
        (lab, bar0 * song.meter * beat_s, nb)
        for lab, _, bar0, nb in song.sections
        if bar0 * song.meter * beat_s < seconds
    ]
    labels = list(dict.fromkeys(lab for lab, _, _ in sections))
    meta = {
        "seed": int(seed),
        "seconds": float(seconds),
        "sr": int(sr),
        "tempo_bpm": round(song.tempo, 2),
        "meter": song.meter,
        "swing": round(song.swing, 3),
        "key": NOTE_NAMES[song.tonic],
        "scale": song.scale_name,
        "sevenths": song.sevenths,
        "instruments": {role: p["name"] for role, p in insts.items()}
        | {"drums": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in kit_prm.items()}},
        "sections": [{"label": lab, "start_s": round(t0, 3), "bars": nb} for lab, t0, nb in sections],
        "progressions": {lab: list(song.specs[lab]["prog"]) for lab in labels},
        "comping": {lab: song.specs[lab]["comp"] for lab in labels},
        "bass_styles": {lab: song.specs[lab]["bass"] for lab in labels},
    }
    return mix.astype(np.float32), meta
