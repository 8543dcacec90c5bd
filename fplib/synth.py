"""The built-in demo corpus: procedural music, background noises and simulated room impulse responses.

Nothing can be downloaded on the machines this project runs on, so a small corpus is generated here,
deterministically, and written as ordinary audio files: the rest of the pipeline reads it exactly as
it reads a user's own folders. Layout under ``root``::

    music/song_000.flac ...      # procedural songs, 16 kHz mono FLAC (exercises the 16 -> 8 kHz path)
    noise/<kind>_<k>.wav ...     # background noises, 8 kHz 16-bit WAV, cycling through NOISE_KINDS
    rir/room_000.wav ...         # pyroomacoustics shoebox rooms, 16 kHz float WAV, peak 1
    corpus.json                  # the spec and every file's metadata; written last

Songs have melody, chords, bass and drums, with per-song tempo, meter, key, scale/mode, chord
progressions, instruments (additive wavetable synths with ADSR envelopes, FM, Karplus-Strong plucks,
organ, detuned pads) and drum kits. A song is built from sections (intro, A, B, C, ...) whose melody
is re-varied on every phrase and every repeat, with drum fills and crashes at section changes, so no
second of a song repeats another. All randomness comes from ``numpy.random.default_rng`` seeded from
the caller's seed; every item of the corpus gets its own seed from ``(spec.seed, item kind, index)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from fplib import audio, storage
from fplib.data import item_rng

MUSIC_SR = 16000  # Hz, songs (and their FLAC files)
NOISE_SR = 8000  # Hz, background noises (and their WAV files)
RIR_SR = 16000  # Hz, impulse responses (and their WAV files)
PEAK_DBFS = -1.0  # songs are peak-normalised to this level
NOISE_RMS_DBFS = -20.0  # noises are RMS-normalised to this level (then limited to a 0.98 peak)
NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown", "babble", "traffic", "rain", "hum", "cafe")
# Bump when the generator's output changes: a corpus made by another version is regenerated.
SYNTH_VERSION = 2
MANIFEST = "corpus.json"

_C = 343.0  # m/s, speed of sound (pyroomacoustics' default)
_TABLE_N = 2048  # samples in one wavetable cycle
_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
}
# Chord progressions as 0-based scale degrees (I V vi IV, I vi IV V, vi IV I V, ii V I, ...).
_PROGRESSIONS: tuple[tuple[int, ...], ...] = (
    (0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3), (1, 4, 0, 0), (0, 3, 1, 4),
    (0, 6, 5, 4), (0, 2, 3, 4), (3, 4, 0, 5), (0, 0, 3, 4), (0, 5, 1, 4), (0, 3, 5, 4),
)
# One beat of melody rhythm: note durations in beats.
_CELLS: tuple[tuple[float, ...], ...] = (
    (1.0,), (0.5, 0.5), (0.75, 0.25), (0.25, 0.25, 0.5), (0.5, 0.25, 0.25), (0.25, 0.25, 0.25, 0.25),
    (1 / 3, 1 / 3, 1 / 3),
)
_FORMS: tuple[str, ...] = ("ABAB", "AABA", "ABCB", "ABAC", "AABB", "ABCA", "ABBA", "ABCD")
# Vowel formants (F1, F2, F3) in Hz, for the babble voices.
_VOWELS: tuple[tuple[float, float, float], ...] = (
    (730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
    (660, 1720, 2410), (440, 1020, 2240),
)


@dataclass(frozen=True)
class CorpusSpec:
    """What :func:`make_demo_corpus` generates (durations in seconds)."""

    n_songs: int = 16
    song_seconds: float = 30.0
    n_noises: int = 12
    noise_seconds: float = 20.0
    n_irs: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_songs", "n_noises", "n_irs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("song_seconds", "noise_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator from an int seed (any sign) and optional string keys naming a purpose."""
    return item_rng(seed, *keys)


def item_seed(seed: int, kind: str, index: int) -> int:
    """The seed of item ``index`` of ``kind`` ("music", "noise", "rir") in a corpus made with ``seed``."""
    return int(item_rng(seed, kind, index).integers(2**53))  # 53 bits: exact in JSON


def _hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _table(amps: np.ndarray, phases: np.ndarray | None = None) -> np.ndarray:
    """One cycle of ``sum_h amps[h-1] * sin(2 pi h x + phases[h-1])``: ``float32 [_TABLE_N + 1]`` (wraps)."""
    amps = np.asarray(amps, dtype=np.float64)
    spec = np.zeros(_TABLE_N // 2 + 1, dtype=np.complex128)
    ph = np.zeros_like(amps) if phases is None else np.asarray(phases, dtype=np.float64)
    spec[1 : 1 + len(amps)] = amps * np.exp(1j * (ph - np.pi / 2))
    tab = np.fft.irfft(spec, _TABLE_N) * (_TABLE_N / 2)
    return np.append(tab, tab[0]).astype(np.float32)


def _lookup(tables: list[np.ndarray], phase: np.ndarray) -> list[np.ndarray]:
    """Read wavetables at ``phase`` (cycles, float64), linearly interpolated."""
    pos = (phase % 1.0) * _TABLE_N
    i = pos.astype(np.int32)
    frac = (pos - i).astype(np.float32)
    out = []
    for tab in tables:
        a = tab[i]
        out.append(a + frac * (tab[i + 1] - a))
    return out


def _sin_cycles(phase: np.ndarray) -> np.ndarray:
    """``sin(2 pi phase)`` in float32 (``phase`` in cycles, float64)."""
    return np.sin((2 * np.pi) * (phase % 1.0).astype(np.float32))


def _smooth(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
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


def _colored(rng: np.random.Generator, n: int, exponent: float, sr: int, f_lo: float = 0.0) -> np.ndarray:
    """Gaussian noise with power spectrum ~ ``f**-exponent`` (zero below ``f_lo`` Hz), unit RMS."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1 / sr)
    f[0] = f[1]
    spec *= f ** (-exponent / 2)
    spec[f < max(f_lo, f[1] * 1.01)] = 0
    x = np.fft.irfft(spec, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _sos(kind: str, freq: float | tuple[float, float], sr: int, order: int = 4) -> np.ndarray:
    """A Butterworth filter; cut-offs (Hz) above 0.45 * ``sr`` are lowered to it (whatever the rate)."""
    top = 0.45 * sr
    if isinstance(freq, tuple):
        hi = min(freq[1], top)
        freq = (min(freq[0], 0.7 * hi), hi)
    else:
        freq = min(freq, top)
    return signal.butter(order, freq, btype=kind, fs=sr, output="sos")


def _filt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    return signal.sosfilt(sos, x).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _place(out: np.ndarray, start: int, x: np.ndarray) -> None:
    """``out[start : start + len(x)] += x``, clipped to ``out``."""
    if start >= out.shape[0] or start + x.shape[0] <= 0:
        return
    a, b = max(start, 0), min(start + x.shape[0], out.shape[0])
    out[a:b] += x[a - start : b - start]


def _fades(x: np.ndarray, sr: int, seconds: float = 0.005) -> np.ndarray:
    k = min(int(seconds * sr), x.shape[0] // 2)
    if k > 0:
        ramp = np.linspace(0, 1, k, dtype=np.float32)
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


# ----------------------------------------------------------------------------------------------------
# Music: composition (events in beats, then seconds)
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Notes:
    """Note events: onset and duration in seconds, MIDI pitch, velocity 0-1 (``voice`` for chords)."""

    on: list[float] = dataclasses.field(default_factory=list)
    dur: list[float] = dataclasses.field(default_factory=list)
    midi: list[float] = dataclasses.field(default_factory=list)
    vel: list[float] = dataclasses.field(default_factory=list)

    def add(self, on: float, dur: float, midi: float, vel: float) -> None:
        self.on.append(on)
        self.dur.append(dur)
        self.midi.append(midi)
        self.vel.append(vel)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        on = np.asarray(self.on, dtype=np.float64)
        order = np.argsort(on, kind="stable")
        return (on[order], np.asarray(self.dur, dtype=np.float64)[order],
                np.asarray(self.midi, dtype=np.float64)[order], np.asarray(self.vel, dtype=np.float64)[order])


class _Song:
    """The musical plan of one song: key, tempo, sections and the note/drum events of every part."""

    def __init__(self, rng: np.random.Generator, seconds: float):
        self.rng = rng
        self.tempo = float(rng.uniform(70, 170))
        self.meter = 3 if rng.random() < 0.2 else 4
        self.beat_s = 60.0 / self.tempo
        self.swing = float(rng.choice([0.5, 0.5, 0.5, rng.uniform(0.56, 0.66)]))
        # the swung unit in beats: 1.0 swings 8th notes, 0.5 swings 16th notes
        self.swing_unit = 1.0 if self.tempo < 110 and rng.random() < 0.5 else 0.5
        self.tonic = int(rng.integers(12))
        self.scale_name = str(rng.choice(list(_SCALES)))
        self.scale = _SCALES[self.scale_name]
        self.sevenths = bool(rng.random() < 0.4)
        self.n_bars = int(math.ceil(seconds / (self.meter * self.beat_s))) + 1
        self.legato = float(rng.uniform(0.55, 0.95))
        self.density = float(rng.uniform(0.2, 0.9))
        self.aux_density = float(rng.uniform(0.15, 0.4))  # share of 16th steps the aux percussion plays
        self.melody_base = 60 + self.tonic if self.tonic < 7 else 48 + self.tonic  # MIDI of degree 0
        self.bass_base = 36 + self.tonic if self.tonic < 6 else 24 + self.tonic
        self.sections = self._form()
        self.specs: dict[str, dict[str, Any]] = {}
        for label, _, _, _ in self.sections:
            if label not in self.specs:
                self.specs[label] = self._section_spec(label)
        self.chords = self._chord_timeline()  # [(start_beat, end_beat, degree, section index)]

    # -- structure --------------------------------------------------------------------------------

    def _form(self) -> list[tuple[str, int, int, int]]:
        """Sections as (label, occurrence, first bar, bars)."""
        rng = self.rng
        bar_s = self.meter * self.beat_s
        sec_bars = 8 if bar_s < 1.7 else 4
        labels = []
        if rng.random() < 0.7:
            labels.append("intro")
        form = str(rng.choice(_FORMS))
        while len(labels) < 64:
            labels.extend(form)
            form = form[1:] + form[0] if rng.random() < 0.5 else str(rng.choice(_FORMS))
        out, bar, seen = [], 0, {}
        for lab in labels:
            if bar >= self.n_bars:
                break
            n = (2 if sec_bars == 4 else 4) if lab == "intro" else sec_bars
            k = seen.get(lab, 0)
            seen[lab] = k + 1
            out.append((lab, k, bar, n))
            bar += n
        return out

    def _section_spec(self, label: str) -> dict[str, Any]:
        rng = self.rng
        prog = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
        if rng.random() < 0.3:  # a fresh random progression
            prog = (0, *(int(d) for d in rng.choice([1, 2, 3, 4, 5, 6, 4, 3], 3)))
        used = [s["prog"] for s in self.specs.values()]
        while prog in used and len(used) < len(_PROGRESSIONS):
            prog = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
        intro = label == "intro"
        energy = 0.3 if intro else float(rng.uniform(0.4, 1.0))
        spec = {
            "prog": prog,
            "chords_per_bar": 2 if (rng.random() < 0.3 and self.meter == 4 and self.tempo < 130) else 1,
            "motif": [self._rhythm(2 * self.meter), self._rhythm(2 * self.meter, ending=True)],
            "bass": str(rng.choice(["whole", "root_fifth", "eighths", "synco", "walk"])),
            "synco": sorted({0, *(int(s) for s in rng.choice(4 * self.meter, int(rng.integers(2, 6))))}),
            "comp": str(rng.choice(["pad", "stabs", "arp", "pad", "strum"])),
            "stabs": sorted(int(s) for s in rng.choice(np.arange(1, 2 * self.meter), int(rng.integers(2, 5)),
                                                      replace=False)),
            "arp": (str(rng.choice(["up", "down", "updown", "random"])), 4 if self.tempo < 120 else 2),
            "drums": self._drum_pattern(energy),
            "melody": not intro or rng.random() < 0.4,
            "bass_on": not intro or rng.random() < 0.5,
            "drums_on": (rng.random() < 0.3) if intro else (rng.random() < 0.9),
            "density": float(np.clip(self.density + rng.uniform(-0.25, 0.25), 0.05, 1.0)),
            "aux": [(int(s), float(rng.uniform(0.4, 1.0))) for s in range(4 * self.meter)
                    if rng.random() < self.aux_density],
            "octave": 12 if (not intro and rng.random() < 0.2) else 0,
        }
        if intro and not spec["melody"]:  # an intro without melody still moves: an arpeggio
            spec["comp"] = "arp"
        return spec

    def _rhythm(self, beats: int, ending: bool = False) -> list[tuple[float, ...] | str]:
        """A phrase rhythm: one cell per beat (durations in beats), "rest" or "long" (2 beats)."""
        rng = self.rng
        cells: list[tuple[float, ...] | str] = []
        b = 0
        while b < beats:
            cells.append(self._cell(self.density))
            if cells[-1] == "long":
                if b + 1 < beats:
                    cells.append("tied")
                    b += 1
                else:
                    cells[-1] = (1.0,)
            b += 1
        if ending:
            cells[-1] = "rest" if rng.random() < 0.5 else (1.0,)
            if beats >= 2 and cells[-2] != "tied":
                cells[-2] = "long"
                cells[-1] = "tied"
        return cells

    def _cell(self, density: float) -> tuple[float, ...] | str:
        rng = self.rng
        r = rng.random()
        if r < 0.08:
            return "rest"
        if r < 0.08 + 0.2 * (1 - density):
            return "long"
        w = np.array([2.0 - density, 2.0, 1.0, 1.0 * density, 1.0 * density, 1.5 * density ** 2, 0.3],
                     dtype=np.float64)
        return _CELLS[int(rng.choice(len(_CELLS), p=w / w.sum()))]

    def _chord_timeline(self) -> list[tuple[float, float, int, int]]:
        out = []
        for si, (label, k, bar0, n_bars) in enumerate(self.sections):
            spec = self.specs[label]
            cpb = spec["chords_per_bar"]
            span = self.meter / cpb
            prog = list(spec["prog"])
            n_chords = n_bars * cpb
            seq = [prog[i % len(prog)] for i in range(n_chords)]
            if k > 0 and self.rng.random() < 0.5:  # a repeat re-harmonises one chord
                seq[int(self.rng.integers(n_chords))] = int(self.rng.integers(7))
            if n_chords >= 4 and self.rng.random() < 0.5:
                seq[-1] = 4  # half cadence into the next section
            for i, deg in enumerate(seq):
                start = bar0 * self.meter + i * span
                out.append((start, start + span, deg, si))
        return out

    def chord_at(self, beat: float) -> int:
        for start, end, deg, _ in self.chords:
            if start <= beat < end:
                return deg
        return self.chords[-1][2]

    def degree_midi(self, deg: int | np.ndarray, base: int) -> np.ndarray:
        deg = np.asarray(deg)
        return base + 12 * (deg // 7) + np.asarray(self.scale)[deg % 7]

    def chord_degrees(self, root: int) -> list[int]:
        return [root, root + 2, root + 4] + ([root + 6] if self.sevenths else [])

    def seconds(self, beats: np.ndarray) -> np.ndarray:
        """Beats -> seconds, with swing applied (positions within each swing unit are warped)."""
        beats = np.asarray(beats, dtype=np.float64)
        if self.swing == 0.5:
            return beats * self.beat_s
        u = self.swing_unit
        whole = np.floor(beats / u)
        f = beats / u - whole
        s = self.swing
        warped = np.where(f < 0.5, f * (2 * s), s + (f - 0.5) * (2 * (1 - s)))
        return (whole + warped) * u * self.beat_s

    # -- parts ------------------------------------------------------------------------------------

    def melody(self) -> _Notes:
        rng = self.rng
        notes = _Notes()
        deg = int(rng.integers(0, 5))
        lo, hi = -2, 11
        for label, k, bar0, n_bars in self.sections:
            spec = self.specs[label]
            if not spec["melody"]:
                continue
            mut = 0.15 if k == 0 else 0.35
            octave = spec["octave"] if k == 0 else int(rng.choice([0, 0, 12])) * (spec["octave"] == 0)
            contour = rng.choice([-2, -1, -1, 0, 1, 1, 2, -3, 3, 4], 64)
            j = 0  # the contour runs on through the section: no two phrases share their steps
            for p in range(0, n_bars, 2):
                cells = list(spec["motif"][(p // 2) % 2])
                for i in range(len(cells)):  # rhythmic variation, more on repeats
                    if cells[i] != "tied" and rng.random() < mut:
                        if cells[i] == "long":
                            cells[i + 1] = self._cell(spec["density"])
                            cells[i + 1] = (0.5, 0.5) if cells[i + 1] in ("long", "rest") else cells[i + 1]
                        cells[i] = self._cell(spec["density"])
                        if cells[i] == "long":
                            cells[i] = (1.0,)
                shift = int(rng.choice([0, 0, 1, -1, 2, -2]))
                for b, cell in enumerate(cells):
                    beat0 = (bar0 + p) * self.meter + b
                    if beat0 >= self.n_bars * self.meter:
                        break
                    if cell in ("rest", "tied"):
                        continue
                    durs = (2.0,) if cell == "long" else cell
                    pos = beat0
                    for d in durs:
                        step = int(contour[j % len(contour)]) + (shift if j == 0 else 0)
                        if rng.random() < mut:
                            step = int(rng.integers(-3, 4))
                        j += 1
                        deg += step
                        if deg > hi or deg < lo:
                            deg = 2 * (hi if deg > hi else lo) - deg
                        strong = (pos % 1.0 == 0) and (int(pos) % self.meter) in (0, 2)
                        if strong or d >= 1.0:
                            deg = self._nearest_chord_tone(deg, self.chord_at(pos))
                        vel = (0.9 if strong else 0.72) + rng.uniform(-0.08, 0.08)
                        gate = d * (self.legato + rng.uniform(-0.1, 0.05))
                        notes.add(pos, gate, float(self.degree_midi(deg, self.melody_base)) + octave, vel)
                        pos += d
        return self._to_seconds(notes, jitter=0.006)

    def _nearest_chord_tone(self, deg: int, root: int) -> int:
        tones = self.chord_degrees(root)[:3]
        best = deg
        for dd in (0, 1, -1, 2, -2, 3, -3):
            if (deg + dd - root) % 7 in [(t - root) % 7 for t in tones]:
                best = deg + dd
                break
        return best

    def bass(self) -> _Notes:
        rng = self.rng
        notes = _Notes()
        for ci, (start, end, root, si) in enumerate(self.chords):
            label = self.sections[si][0]
            spec = self.specs[label]
            if not spec["bass_on"]:
                continue
            span = end - start
            r = float(self.degree_midi(root, self.bass_base))
            fifth = float(self.degree_midi(root + 4, self.bass_base))
            nxt = self.chords[ci + 1][2] if ci + 1 < len(self.chords) else root
            style = spec["bass"]
            g = 0.9 if rng.random() < 0.7 else 0.6
            if style == "whole":
                notes.add(start, span * 0.95, r, 0.9)
            elif style == "root_fifth":
                for b in range(int(span)):
                    notes.add(start + b, g, r if b % 2 == 0 else fifth, 0.85 if b % 2 == 0 else 0.7)
            elif style == "eighths":
                for h in range(int(span * 2)):
                    m = r + 12 if (h % 4 == 3 and rng.random() < 0.3) else r
                    notes.add(start + h / 2, 0.5 * g, m, 0.8 if h % 2 == 0 else 0.65)
            elif style == "synco":
                steps = [s for s in spec["synco"] if s < span * 4]
                if rng.random() < 0.3:
                    steps = sorted({*steps, int(rng.integers(int(span * 4)))})
                for i, s in enumerate(steps):
                    e = steps[i + 1] if i + 1 < len(steps) else span * 4
                    m = r if s == 0 or rng.random() < 0.6 else float(rng.choice([fifth, r + 12]))
                    notes.add(start + s / 4, (e - s) / 4 * g, m, 0.9 if s == 0 else 0.7)
            else:  # walking bass toward the next chord's root
                n = int(span)
                degs = np.round(np.linspace(root, nxt + (7 if nxt < root - 3 else 0), n + 1)[:-1]).astype(int)
                for b in range(n):
                    notes.add(start + b, 0.9, float(self.degree_midi(int(degs[b]), self.bass_base)), 0.8)
        return self._to_seconds(notes, jitter=0.003)

    def comp(self) -> tuple[list[_Notes], _Notes]:
        """Chord voices (one :class:`_Notes` per chord tone) and an arpeggio line."""
        rng = self.rng
        n_voices = 4 if self.sevenths else 3
        voices = [_Notes() for _ in range(n_voices)]
        arp = _Notes()
        prev: np.ndarray | None = None
        arp_i = 0
        for start, end, root, si in self.chords:
            spec = self.specs[self.sections[si][0]]
            tones = self._voicing(root, prev)
            prev = tones
            span = end - start
            style = spec["comp"]
            if style == "pad":
                hits = [(0.0, span * 0.97, 0.8)]
            elif style == "strum":
                hits = [(0.0, span / 2 * 0.97, 0.85), (span / 2, span / 2 * 0.97, 0.7)]
            elif style == "stabs":
                stabs = set(spec["stabs"])
                if rng.random() < 0.5:  # the stab rhythm varies from chord to chord
                    stabs ^= {int(rng.integers(1, 2 * self.meter))}
                hits = [(s / 2, 0.3 + 0.2 * rng.random(), 0.7 + 0.2 * rng.random()) for s in sorted(stabs)
                        if s / 2 < span]
            else:  # arpeggio + a quiet pad underneath
                hits = [(0.0, span * 0.97, 0.35)]
                mode, per_beat = spec["arp"]
                pool = np.concatenate([tones, tones + 12])
                order = {"up": np.arange(len(pool)), "down": np.arange(len(pool))[::-1],
                         "updown": np.r_[np.arange(len(pool)), np.arange(len(pool) - 2, 0, -1)],
                         "random": rng.permutation(len(pool))}[mode]
                for s in range(int(span * per_beat)):
                    if s == 0 or rng.random() > 0.1:  # an occasional skipped note
                        arp.add(start + s / per_beat, 0.9 / per_beat, float(pool[order[arp_i % len(order)]]),
                                0.75 + 0.15 * (s % per_beat == 0) + rng.uniform(-0.1, 0.1))
                    arp_i += int(rng.choice([1, 1, 1, 2, -1, -2, 3]))  # the pattern wanders
            for t0, d, v in hits:
                for vi in range(n_voices):
                    stagger = vi * 0.04 if style == "strum" else 0.0
                    voices[vi].add(start + t0 + stagger, d - stagger, float(tones[vi]), v)
        return [self._to_seconds(v, jitter=0.002) for v in voices], self._to_seconds(arp, jitter=0.002)

    def _voicing(self, root: int, prev: np.ndarray | None) -> np.ndarray:
        degs = self.chord_degrees(root)
        base = self.degree_midi(np.asarray(degs), 48 + self.tonic).astype(np.float64)
        cands = []
        for inv in range(len(degs)):
            c = np.sort(np.concatenate([base[inv:], base[:inv] + 12]))
            for octv in (-12, 0, 12):
                cands.append(c + octv)
        target = 62.0 if prev is None else float(prev.mean())
        cost = [abs(c.mean() - target) + (0 if prev is None else 0.3 * np.abs(c - prev).sum()) for c in cands]
        best = cands[int(np.argmin(cost))]
        while best.mean() > 70:
            best = best - 12
        while best.mean() < 52:
            best = best + 12
        return best

    def drums(self) -> dict[str, list[tuple[float, float]]]:
        """Drum hits per instrument: (onset in seconds, velocity)."""
        rng = self.rng
        spb = 4 * self.meter  # 16th steps per bar
        names = ("kick", "snare", "hat", "ohat", "tom1", "tom2", "tom3", "crash", "aux")
        hits: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for si, (label, k, bar0, n_bars) in enumerate(self.sections):
            spec = self.specs[label]
            if not spec["drums_on"]:
                continue
            pat = dict(spec["drums"])
            if k > 0 and rng.random() < 0.5:  # a repeated section gets busier or sparser hats
                every = int(rng.choice([1, 2, 4]))
                pat["hat"] = [(st, 0.8 if st % 4 == 0 else 0.5) for st in range(0, spb, every)]
            aux = list(spec["aux"])
            if si > 0 and rng.random() < 0.75:
                hits["crash"].append((bar0 * spb, 0.8))
            for b in range(n_bars):
                bar = bar0 + b
                if bar >= self.n_bars:
                    break
                fill = b == n_bars - 1 and si + 1 < len(self.sections) and rng.random() < 0.75
                fill_from = spb - (4 if rng.random() < 0.6 else 8) if fill else spb
                if rng.random() < 0.5:  # the aux percussion pattern drifts bar by bar
                    st = int(rng.integers(spb))
                    had = any(a[0] == st for a in aux)
                    aux = [a for a in aux if a[0] != st] if had else [*aux, (st, 0.7)]
                pat["aux"] = aux
                for name in ("kick", "snare", "hat", "ohat", "aux"):
                    for step, vel in pat[name]:
                        if step < fill_from:
                            hits[name].append((bar * spb + step, vel * rng.uniform(0.6, 1.0)))
                if rng.random() < 0.4:  # a per-bar kick variation
                    hits["kick"].append((bar * spb + int(rng.integers(1, spb // 2)) * 2, 0.7))
                for _ in range(int(rng.integers(0, 3))):  # ghost notes
                    hits["snare"].append((bar * spb + int(rng.integers(fill_from)), 0.25))
                if fill:
                    every = 1 if rng.random() < 0.6 else 2
                    n_fill = max(1, (spb - fill_from) // every)
                    for j, step in enumerate(range(fill_from, spb, every)):  # a crescendo of snare and toms
                        name = str(rng.choice(["snare", "tom1", "tom2", "tom3", "snare"]))
                        hits[name].append((bar * spb + step, 0.5 + 0.5 * j / n_fill))
        out = {}
        for name, hs in hits.items():
            if hs:
                steps = np.array([h[0] for h in hs], dtype=np.float64)
                on = self.seconds(steps / 4) + rng.normal(0, 0.003, len(steps))
                out[name] = [(float(t), float(v)) for t, (_, v) in zip(on, hs)]
        return out

    def _drum_pattern(self, energy: float) -> dict[str, list[tuple[int, float]]]:
        rng = self.rng
        spb = 4 * self.meter
        if self.meter == 3:
            kick = [0] if rng.random() < 0.5 else [0, 6]
            snare = [4, 8] if rng.random() < 0.5 else [8]
        else:
            style = str(rng.choice(["four", "rock", "half", "break", "random"]))
            kick = {"four": [0, 4, 8, 12], "rock": [0, 8, 10] if rng.random() < 0.5 else [0, 8],
                    "half": [0, 11] if rng.random() < 0.5 else [0], "break": [0, 10, 6],
                    "random": [0, *(s for s in (2, 3, 6, 7, 10, 11, 14) if rng.random() < 0.3)]}[style]
            snare = [8] if style == "half" else [4, 12]
        hat_style = str(rng.choice(["8ths", "16ths", "offbeat", "quarters"], p=[0.45, 0.25 * energy + 0.05,
                                                                                 0.2, 0.3 - 0.25 * energy]))
        every = {"8ths": 2, "16ths": 1, "offbeat": 4, "quarters": 4}[hat_style]
        first = 2 if hat_style == "offbeat" else 0
        hat = [(s, 0.8 if s % 4 == 0 else 0.55) for s in range(first, spb, every)]
        ohat = [(spb - 2, 0.6)] if rng.random() < 0.3 * energy + 0.1 else []
        if energy < 0.45 and rng.random() < 0.5:
            kick = kick[:1]
        return {"kick": [(s, 1.0 if s == 0 else 0.85) for s in kick], "snare": [(s, 0.9) for s in snare],
                "hat": hat, "ohat": ohat}

    def _to_seconds(self, notes: _Notes, jitter: float) -> _Notes:
        if not notes.on:
            return notes
        on = np.asarray(notes.on)
        end = on + np.asarray(notes.dur)
        t_on = self.seconds(on) + self.rng.normal(0, jitter, len(on))
        t_end = self.seconds(end)
        dur = np.maximum(t_end - t_on, 0.02)
        return _Notes(list(np.maximum(t_on, 0.0)), list(dur), notes.midi, notes.vel)


# ----------------------------------------------------------------------------------------------------
# Music: instruments and rendering
# ----------------------------------------------------------------------------------------------------


def _instrument(rng: np.random.Generator, role: str) -> dict[str, Any]:
    """Random timbre parameters for a part ("melody", "chords", "arp" or "bass")."""
    names = {"melody": ["lead", "fm_brass", "fm_bell", "pluck", "square", "flute"],
             "chords": ["pad", "organ", "epiano", "strings", "pluck"],
             "arp": ["pluck", "fm_bell", "lead", "square"],
             "bass": ["sub", "saw", "fm_bass", "pluck"]}[role]
    name = str(rng.choice(names))
    u = rng.uniform
    p: dict[str, Any] = {"name": name, "kind": "add", "detune": 0.0, "vibrato": (0.0, 0.0, 0.0),
                         "breath": 0.0}
    if name in ("lead", "square", "strings", "saw", "sub", "flute", "pad", "organ"):
        slope = {"lead": u(0.8, 1.6), "square": u(0.9, 1.2), "strings": u(0.9, 1.3), "saw": u(0.9, 1.2),
                 "sub": u(2.5, 4.0), "flute": u(2.5, 3.5), "pad": u(1.0, 1.6), "organ": 0.0}[name]
        odd = {"square": u(0.0, 0.15), "flute": u(0.3, 0.7)}.get(name, u(0.5, 1.0))
        p.update(slope=slope, odd=odd, n_harm=int(rng.integers(8, 24)), dark=u(1.5, 4.0),
                 bright_tau=u(0.05, 0.4))
    if name == "organ":
        draw = np.zeros(16)
        for h in (1, 2, 3, 4, 6, 8, 10, 12, 16):
            draw[h - 1] = u(0.0, 1.0) if h > 1 else 1.0
        p.update(drawbars=draw, adsr=(0.01, 0.2, 0.9, 0.05), bright_tau=0.0)
    elif name in ("fm_brass", "fm_bell", "epiano", "fm_bass"):
        ratio = {"fm_brass": 1.0, "fm_bell": float(rng.choice([1.4, 2.0, 3.5, 3.0])),
                 "epiano": float(rng.choice([1.0, 2.0])), "fm_bass": float(rng.choice([0.5, 1.0, 2.0]))}[name]
        index = {"fm_brass": u(1.5, 4.0), "fm_bell": u(1.5, 5.0), "epiano": u(1.0, 3.0),
                 "fm_bass": u(1.0, 3.0)}[name]
        p.update(kind="fm", ratio=ratio, index=index, index_tau=u(0.05, 0.5), index_sus=u(0.05, 0.4))
    elif name == "pluck":
        p.update(kind="pluck", t60=u(0.6, 2.5), lowpass=u(0.0, 0.7))
    adsr = {"lead": (u(0.005, 0.05), u(0.1, 0.4), u(0.5, 0.9), u(0.05, 0.2)),
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
            "pluck": (0.001, 1.0, 1.0, u(0.05, 0.2))}
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


def _render_voices(notes: list[_Notes], p: dict[str, Any], n: int, sr: int,
                   rng: np.random.Generator) -> np.ndarray:
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
        f = _hz(midi)[pos]
        rate, depth, delay = p["vibrato"]
        if depth > 0:
            ramp = np.clip(ts / delay - 1.0, 0.0, 1.0)
            f = f * 2.0 ** (depth / 12 * ramp * np.sin(2 * np.pi * rate * np.arange(n) / sr))
        f_max = float(_hz(midi.max())) * 2 ** (depth / 12)
        oscs = [1.0] + ([2 ** (p["detune"] / 1200)] if p["detune"] else [])
        sig = np.zeros(n, dtype=np.float32)
        wobble = 0.5 + 0.5 * _smooth(rng, n, sr, 0.3)  # slow timbre movement, 0-1
        for mult in oscs:
            phase = np.cumsum(f * (mult / sr)) + rng.random()
            if p["kind"] == "fm":
                ratio = p["ratio"]
                cap = max(0.3, (0.45 * sr / (f_max * ratio)) - 1.0)
                index = min(p["index"], cap)
                ienv = index * (p["index_sus"] + (1 - p["index_sus"]) * np.exp(-ts / p["index_tau"]))
                ienv *= 0.7 + 0.6 * wobble
                carrier = (2 * np.pi) * (phase % 1.0).astype(np.float32)
                sig += np.sin(carrier + ienv * _sin_cycles(phase * ratio))
            else:
                n_harm = max(1, min(p.get("n_harm", 16), int(0.45 * sr / f_max)))
                bright, dark = _harmonic_amps(p, n_harm)
                tb, td = _lookup([_table(bright), _table(dark)], phase)
                if p["bright_tau"] > 0:
                    b = np.minimum(np.exp(-ts / p["bright_tau"]) + 0.5 * wobble, 1.0)
                    sig += td + b * (tb - td)
                else:
                    sig += tb * (0.85 + 0.3 * wobble)
        sig *= env / len(oscs)
        if p["breath"] > 0:
            sig += _filt(_sos("highpass", 1500.0, sr, 2), rng.standard_normal(n)) * env * p["breath"]
        out += sig
    return out


def _render_pluck(out: np.ndarray, on_s: np.ndarray, dur_s: np.ndarray, midi: np.ndarray, vel: np.ndarray,
                  p: dict[str, Any], sr: int, rng: np.random.Generator) -> None:
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
        f0 = float(_hz(midi[i]))
        delay = sr / f0  # loop delay in samples: z^-N, the 2-point average (0.5) and an allpass (frac)
        big_n = max(2, int(math.floor(delay - 0.5 - 0.1)))
        frac = delay - 0.5 - big_n
        c = (1 - frac) / (1 + frac)
        g = 10 ** (-3.0 / (p["t60"] * f0))  # per-period loss for the wanted 60 dB decay time
        loop = np.zeros(big_n + 3)
        loop[big_n:big_n + 3] = 0.5 * g * np.array([c, 1 + c, 1.0])  # z^-N (1 + z^-1)/2 (c + z^-1)
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
        return _filt(sos, rng.standard_normal(len(tt))) * np.exp(-tt / tau).astype(np.float32)

    prm: dict[str, Any] = {"kick_hz": u(100, 200), "kick_end_hz": u(40, 60), "kick_decay_s": u(0.12, 0.35),
           "snare_hz": u(150, 250), "snare_noise": u(0.5, 1.5), "snare_decay_s": u(0.08, 0.2),
           "hat_hp_hz": u(5000, 7000), "hat_decay_s": u(0.02, 0.06), "tom_hz": u(90, 140)}
    kick = swept(prm["kick_hz"], prm["kick_end_hz"], u(0.02, 0.06), prm["kick_decay_s"], 0.6)
    kick[: int(0.003 * sr)] += rng.uniform(-0.4, 0.4, int(0.003 * sr)).astype(np.float32)
    snare = swept(prm["snare_hz"] * 1.3, prm["snare_hz"], 0.01, u(0.04, 0.1), 0.4)
    snare_sos = _sos("bandpass", (1000, 6000), sr, 2)
    snare = snare + prm["snare_noise"] * noise(0.4, prm["snare_decay_s"], snare_sos)
    hat_sos = _sos("highpass", prm["hat_hp_hz"], sr, 4)
    kit = {
        "kick": kick,
        "snare": snare,
        "hat": 0.6 * noise(0.25, prm["hat_decay_s"], hat_sos),
        "ohat": 0.6 * noise(0.8, u(0.15, 0.35), hat_sos),
        "crash": 0.7 * noise(2.0, u(0.5, 1.2), _sos("highpass", u(2500, 4000), sr, 2)),
    }
    aux = str(rng.choice(["shaker", "clap", "rim", "cowbell", "tambourine"]))
    prm["aux"] = aux
    if aux == "shaker":
        kit["aux"] = noise(0.15, u(0.02, 0.05), _sos("bandpass", (4000, 7500), sr, 2))
    elif aux == "clap":
        c = noise(0.3, u(0.05, 0.12), _sos("bandpass", (900, 3000), sr, 2))
        for j in (1, 2):
            c[int(j * 0.01 * sr):] += c[: len(c) - int(j * 0.01 * sr)] * 0.8
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
    return {k: _fades(v / np.abs(v).max(), sr, 0.002) for k, v in kit.items()}, prm


def _render_drums(hits: dict[str, list[tuple[float, float]]], kit: dict[str, np.ndarray], n: int,
                  sr: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    gains = {"kick": 1.0, "snare": 0.8, "hat": 0.35, "ohat": 0.3, "crash": 0.35, "tom1": 0.7, "tom2": 0.7,
             "tom3": 0.7, "aux": 0.3}
    for name, hs in hits.items():
        sample = kit[name] * gains[name]
        for t0, vel in hs:
            _place(out, int(round(t0 * sr)), sample * vel)
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
    rng = _rng(seed, "song")
    n = int(round(seconds * sr))
    song = _Song(rng, seconds)
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
        r = _rms(x)
        if r > 0:
            gain_db = levels[name] + rng.uniform(-3, 3)
            automation = 10 ** (1.5 * _smooth(rng, n, sr, 0.15) / 20)  # +-1.5 dB slow balance changes
            mix += x * (10 ** (gain_db / 20) / r) * automation
    peak = float(np.abs(mix).max())
    mix = _fades(mix * (10 ** (PEAK_DBFS / 20) / peak if peak > 0 else 1.0), sr)
    beat_s = 60.0 / song.tempo
    sections = [(lab, bar0 * song.meter * beat_s, nb) for lab, _, bar0, nb in song.sections
                if bar0 * song.meter * beat_s < seconds]
    labels = list(dict.fromkeys(lab for lab, _, _ in sections))
    meta = {
        "seed": int(seed),
        "seconds": float(seconds),
        "sr": int(sr),
        "tempo_bpm": round(song.tempo, 2),
        "meter": song.meter,
        "swing": round(song.swing, 3),
        "key": _NOTE_NAMES[song.tonic],
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


# ----------------------------------------------------------------------------------------------------
# Background noises
# ----------------------------------------------------------------------------------------------------


def _babble(rng: np.random.Generator, n: int, sr: int, n_voices: int) -> np.ndarray:
    """Many talkers: glottal pulse trains with intonation, syllabic envelopes and vowel formants."""
    n_v = len(_VOWELS)
    src = np.zeros((n_v, n), dtype=np.float32)  # voiced source, split by the vowel being spoken
    fric = np.zeros(n, dtype=np.float32)
    ar = np.arange(n)
    for _ in range(n_voices):
        f0 = rng.uniform(85, 155) if rng.random() < 0.5 else rng.uniform(165, 255)
        contour = 2.0 ** ((3 * _smooth(rng, n, sr, 3.0) + 1.5 * _smooth(rng, n, sr, 0.5)) / 12)
        f = f0 * contour.astype(np.float64)
        n_harm = max(1, int(0.45 * sr / f.max()))
        h = np.arange(1, n_harm + 1)
        phase = np.cumsum(f / sr) + rng.random()
        (voiced,) = _lookup([_table(h ** -1.4)], phase)
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
    out = _filt(_sos("highpass", 2000.0, sr, 2), fric)
    for v, formants in enumerate(_VOWELS):
        sos = []
        for fc, bw in zip(formants, (80.0, 110.0, 160.0)):
            r = math.exp(-math.pi * bw / sr)
            a = [1.0, -2 * r * math.cos(2 * math.pi * min(fc, 0.45 * sr) / sr), r * r]
            sos.append([sum(a), 0, 0, *a])  # unit gain at 0 Hz
        out += _filt(np.asarray(sos), src[v]) * 0.05
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
    rng = _rng(seed, "noise", kind)
    n = int(round(seconds * sr))
    t = np.arange(n, dtype=np.float64) / sr
    if kind == "white":
        x = rng.standard_normal(n).astype(np.float32)
    elif kind == "pink":
        x = _colored(rng, n, rng.uniform(0.9, 1.1), sr, 10.0)
    elif kind == "brown":
        x = _colored(rng, n, rng.uniform(1.8, 2.2), sr, rng.uniform(15.0, 30.0))
    elif kind == "babble":
        x = _babble(rng, n, sr, int(rng.integers(5, 10)))
    elif kind == "traffic":
        bed = _filt(_sos("lowpass", rng.uniform(150, 400), sr, 2), _colored(rng, n, 1.5, sr, 20.0))
        x = bed * 10 ** (4 * _smooth(rng, n, sr, 0.1) / 20)
        for tc in _events(rng, n, sr, rng.uniform(0.15, 0.5)) / sr:  # passing vehicles
            v, d = rng.uniform(8, 25), rng.uniform(3, 20)  # m/s, closest distance m
            lo, hi = max(0, int((tc - 6) * sr)), min(n, int((tc + 6) * sr))
            tt = t[lo:hi] - tc
            r = np.sqrt(d**2 + (v * tt) ** 2)
            doppler = _C / (_C + v * (v * tt) / r)
            f_eng = rng.uniform(25, 60) * doppler
            ph = np.cumsum(f_eng / sr)
            eng = sum(_sin_cycles(ph * k) / k for k in range(1, 7))
            tyre = _filt(_sos("bandpass", (300, 1500), sr, 2), rng.standard_normal(hi - lo))
            car = (eng + rng.uniform(0.5, 2.0) * tyre) * (rng.uniform(1.0, 4.0) / r).astype(np.float32)
            x[lo:hi] += car
    elif kind == "rain":
        x = _filt(_sos("highpass", rng.uniform(1000, 2500), sr, 2), rng.standard_normal(n)) * 0.3
        drops = np.zeros(n, dtype=np.float32)
        pos = _events(rng, n, sr, rng.uniform(300, 3000))
        amp = np.minimum(rng.pareto(2.5, len(pos)), 3.0) * rng.choice([-1, 1], len(pos))
        np.add.at(drops, pos, amp.astype(np.float32))
        x += _filt(_sos("bandpass", (rng.uniform(1500, 2200), 0.49 * sr), sr, 2), drops)
        for p in _events(rng, n, sr, rng.uniform(2, 10)):  # bigger drops: short chirped "plinks"
            tt = t[: int(0.04 * sr)]
            f = rng.uniform(1000, min(3500, 0.45 * sr))
            plink = np.sin(2 * np.pi * f * tt * (1 + 2 * tt)) * np.exp(-tt / rng.uniform(0.005, 0.015))
            _place(x, int(p), (rng.uniform(0.2, 0.6) * plink).astype(np.float32))
        x *= 10 ** (3 * _smooth(rng, n, sr, 0.2) / 20)
    elif kind == "hum":
        mains = 50.0 if rng.random() < 0.5 else 60.0
        f = mains * (1 + 0.002 * _smooth(rng, n, sr, 0.3).astype(np.float64))
        k = np.arange(1, int(0.45 * sr / mains) + 1)
        amps = rng.uniform(0.1, 1.0, len(k)) * k**-0.8 * np.where(k % 2 == 1, 1.0, 0.3)
        (x,) = _lookup([_table(amps, rng.uniform(0, 2 * np.pi, len(k)))], np.cumsum(f / sr))
        x = x / _rms(x) * 10 ** (1.0 * _smooth(rng, n, sr, 0.5) / 20)
        x += _colored(rng, n, 1.0, sr, 20.0) * rng.uniform(0.03, 0.1)
    else:  # cafe: distant babble, cups and cutlery, room rumble
        talk = _babble(rng, n, sr, int(rng.integers(10, 18)))
        x = _filt(_sos("lowpass", rng.uniform(2000, 3500), sr, 2), talk)
        x = x / (_rms(x) + 1e-12)
        x += _colored(rng, n, 2.0, sr, 20.0) * 0.3
        for p in _events(rng, n, sr, rng.uniform(0.3, 1.5)):
            for _ in range(int(rng.integers(1, 4))):  # a clink, sometimes bouncing
                tt = t[: int(0.25 * sr)]
                partials = rng.uniform(1500, min(3900, 0.48 * sr), int(rng.integers(2, 5)))
                clink = sum(np.sin(2 * np.pi * fp * tt + rng.uniform(0, 6.3)) for fp in partials)
                clink *= np.exp(-tt / rng.uniform(0.02, 0.12)) * rng.uniform(0.3, 1.5)
                _place(x, int(p), clink.astype(np.float32))
                p += int(rng.uniform(0.03, 0.15) * sr)
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean()
    x *= 10 ** (NOISE_RMS_DBFS / 20) / (_rms(x) + 1e-12)
    peak = float(np.abs(x).max())
    if peak > 0.98:
        x *= 0.98 / peak
    return _fades(x, sr).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Room impulse responses
# ----------------------------------------------------------------------------------------------------


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

    rng = _rng(seed, "rir")
    dims = np.exp(rng.uniform(np.log([3.0, 3.0, 2.5]), np.log([15.0, 12.0, 5.0])))  # m, log-uniform
    absorption = float(rng.uniform(0.1, 0.7))
    for _ in range(100):
        src, mic = (rng.uniform(0.5, dims - 0.5) for _ in range(2))
        if np.linalg.norm(src - mic) >= 1.0:
            break
    vol, surf = float(np.prod(dims)), 2 * float(dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
    rt60_sabine = 0.161 * vol / (surf * absorption)
    cover_s = float(np.clip(rt60_sabine, 0.1, 0.6))
    per_order = _C * math.sqrt(float(np.sum(dims**-2.0)))  # metres of path added per reflection order
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


# ----------------------------------------------------------------------------------------------------
# The corpus on disk
# ----------------------------------------------------------------------------------------------------


def _plan(spec: CorpusSpec) -> list[tuple[str, str, int, str]]:
    """Every file of a corpus: (folder, file name, seed, noise kind or "")."""
    items = [("music", f"song_{i:03d}.flac", item_seed(spec.seed, "music", i), "")
             for i in range(spec.n_songs)]
    nk = len(NOISE_KINDS)
    for i in range(spec.n_noises):
        kind = NOISE_KINDS[i % nk]
        items.append(("noise", f"{kind}_{i // nk:02d}.wav", item_seed(spec.seed, "noise", i), kind))
    items += [("rir", f"room_{i:03d}.wav", item_seed(spec.seed, "rir", i), "") for i in range(spec.n_irs)]
    return items


# Names make_demo_corpus writes (and the temporary files of interrupted atomic writes of them).
_OWN_FILE = re.compile(
    r"^\.?(song_\d{3,}|room_\d{3,}|(" + "|".join(NOISE_KINDS) + r")_\d{2,})(\..*)?\.(flac|wav)$"
)


def _is_current(manifest: Path, spec_dict: dict, root: Path) -> bool:
    try:
        old = storage.read_json(manifest)
    except (OSError, ValueError):
        return False
    if old.get("spec") != spec_dict or old.get("version") != SYNTH_VERSION:
        return False
    return all((root / f["path"]).is_file() for f in old.get("files", []))


def make_demo_corpus(
    root: str | os.PathLike, spec: CorpusSpec = CorpusSpec(), progress: bool = True
) -> dict[str, Path]:
    """Write the demo corpus under ``root`` and return ``{"music": Path, "noise": Path, "rir": Path}``.

    If ``root/corpus.json`` already describes this spec (and its files exist) nothing is done. Otherwise
    the manifest is removed first, every file is (re)generated and written atomically, files of an
    earlier corpus that the new spec does not include are deleted (only names this module writes), and
    ``corpus.json`` is written last: an interrupted run leaves no manifest and is simply redone.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    dirs = {name: root / name for name in ("music", "noise", "rir")}
    manifest = root / MANIFEST
    spec_dict = dataclasses.asdict(spec)
    if _is_current(manifest, spec_dict, root):
        return dirs
    manifest.unlink(missing_ok=True)
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    plan = _plan(spec)
    wanted = {(folder, name) for folder, name, _, _ in plan}
    for folder, d in dirs.items():
        for f in d.iterdir():
            if f.is_file() and _OWN_FILE.match(f.name) and (folder, f.name) not in wanted \
                    and not storage.is_live_temp(f):  # another process may be writing the same corpus
                f.unlink()
    files = []
    for folder, name, seed, kind in tqdm(plan, desc="demo corpus", unit="file", disable=not progress):
        path = dirs[folder] / name
        if folder == "music":
            wav, meta = synth_song(seed, spec.song_seconds, MUSIC_SR)
            audio.write(path, wav, MUSIC_SR, subtype="PCM_16")
        elif folder == "noise":
            wav = synth_noise(kind, seed, spec.noise_seconds, NOISE_SR)
            meta = {"kind": kind, "seed": seed, "seconds": spec.noise_seconds, "sr": NOISE_SR}
            audio.write(path, wav, NOISE_SR, subtype="PCM_16")
        else:
            wav, meta = simulate_rir(seed, RIR_SR)
            audio.write(path, wav, RIR_SR, subtype="FLOAT")
        files.append({"path": f"{folder}/{name}", "type": folder, **meta})
    storage.write_json(manifest, {"version": SYNTH_VERSION, "spec": spec_dict, "files": files})
    return dirs


def demo_corpus(root: str | os.PathLike) -> dict[str, Path]:
    """The folders of a demo corpus that :func:`make_demo_corpus` finished writing under ``root``."""
    root = Path(root)
    if not (root / MANIFEST).exists():
        raise FileNotFoundError(f"{root}: no demo corpus ({MANIFEST} missing); run notebook 01_generate_dataset first")
    return {kind: root / kind for kind in ("music", "noise", "rir")}
