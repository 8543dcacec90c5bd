"""The musical plan of a synthetic song: key, tempo, meter, form, chord progressions, and the note and drum
events of every part (in beats, then seconds). :mod:`fplib.synth.music` renders it to audio."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES: dict[str, tuple[int, ...]] = {
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
    (0, 4, 5, 3),
    (0, 5, 3, 4),
    (5, 3, 0, 4),
    (0, 3, 4, 3),
    (1, 4, 0, 0),
    (0, 3, 1, 4),
    (0, 6, 5, 4),
    (0, 2, 3, 4),
    (3, 4, 0, 5),
    (0, 0, 3, 4),
    (0, 5, 1, 4),
    (0, 3, 5, 4),
)
# One beat of melody rhythm: note durations in beats.
_CELLS: tuple[tuple[float, ...], ...] = (
    (1.0,),
    (0.5, 0.5),
    (0.75, 0.25),
    (0.25, 0.25, 0.5),
    (0.5, 0.25, 0.25),
    (0.25, 0.25, 0.25, 0.25),
    (1 / 3, 1 / 3, 1 / 3),
)
_FORMS: tuple[str, ...] = ("ABAB", "AABA", "ABCB", "ABAC", "AABB", "ABCA", "ABBA", "ABCD")


@dataclass
class Notes:
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
        return (
            on[order],
            np.asarray(self.dur, dtype=np.float64)[order],
            np.asarray(self.midi, dtype=np.float64)[order],
            np.asarray(self.vel, dtype=np.float64)[order],
        )


class Song:
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
        self.scale_name = str(rng.choice(list(SCALES)))
        self.scale = SCALES[self.scale_name]
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
            "stabs": sorted(
                int(s) for s in rng.choice(np.arange(1, 2 * self.meter), int(rng.integers(2, 5)), replace=False)
            ),
            "arp": (str(rng.choice(["up", "down", "updown", "random"])), 4 if self.tempo < 120 else 2),
            "drums": self._drum_pattern(energy),
            "melody": not intro or rng.random() < 0.4,
            "bass_on": not intro or rng.random() < 0.5,
            "drums_on": (rng.random() < 0.3) if intro else (rng.random() < 0.9),
            "density": float(np.clip(self.density + rng.uniform(-0.25, 0.25), 0.05, 1.0)),
            "aux": [
                (int(s), float(rng.uniform(0.4, 1.0))) for s in range(4 * self.meter) if rng.random() < self.aux_density
            ],
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
        w = np.array([2.0 - density, 2.0, 1.0, 1.0 * density, 1.0 * density, 1.5 * density**2, 0.3], dtype=np.float64)
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

    def melody(self) -> Notes:
        rng = self.rng
        notes = Notes()
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

    def bass(self) -> Notes:
        rng = self.rng
        notes = Notes()
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

    def comp(self) -> tuple[list[Notes], Notes]:
        """Chord voices (one :class:`Notes` per chord tone) and an arpeggio line."""
        rng = self.rng
        n_voices = 4 if self.sevenths else 3
        voices = [Notes() for _ in range(n_voices)]
        arp = Notes()
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
                hits = [
                    (s / 2, 0.3 + 0.2 * rng.random(), 0.7 + 0.2 * rng.random()) for s in sorted(stabs) if s / 2 < span
                ]
            else:  # arpeggio + a quiet pad underneath
                hits = [(0.0, span * 0.97, 0.35)]
                mode, per_beat = spec["arp"]
                pool = np.concatenate([tones, tones + 12])
                order = {
                    "up": np.arange(len(pool)),
                    "down": np.arange(len(pool))[::-1],
                    "updown": np.r_[np.arange(len(pool)), np.arange(len(pool) - 2, 0, -1)],
                    "random": rng.permutation(len(pool)),
                }[mode]
                for s in range(int(span * per_beat)):
                    if s == 0 or rng.random() > 0.1:  # an occasional skipped note
                        arp.add(
                            start + s / per_beat,
                            0.9 / per_beat,
                            float(pool[order[arp_i % len(order)]]),
                            0.75 + 0.15 * (s % per_beat == 0) + rng.uniform(-0.1, 0.1),
                        )
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
            kick = {
                "four": [0, 4, 8, 12],
                "rock": [0, 8, 10] if rng.random() < 0.5 else [0, 8],
                "half": [0, 11] if rng.random() < 0.5 else [0],
                "break": [0, 10, 6],
                "random": [0, *(s for s in (2, 3, 6, 7, 10, 11, 14) if rng.random() < 0.3)],
            }[style]
            snare = [8] if style == "half" else [4, 12]
        hat_style = str(
            rng.choice(
                ["8ths", "16ths", "offbeat", "quarters"], p=[0.45, 0.25 * energy + 0.05, 0.2, 0.3 - 0.25 * energy]
            )
        )
        every = {"8ths": 2, "16ths": 1, "offbeat": 4, "quarters": 4}[hat_style]
        first = 2 if hat_style == "offbeat" else 0
        hat = [(s, 0.8 if s % 4 == 0 else 0.55) for s in range(first, spb, every)]
        ohat = [(spb - 2, 0.6)] if rng.random() < 0.3 * energy + 0.1 else []
        if energy < 0.45 and rng.random() < 0.5:
            kick = kick[:1]
        return {
            "kick": [(s, 1.0 if s == 0 else 0.85) for s in kick],
            "snare": [(s, 0.9) for s in snare],
            "hat": hat,
            "ohat": ohat,
        }

    def _to_seconds(self, notes: Notes, jitter: float) -> Notes:
        if not notes.on:
            return notes
        on = np.asarray(notes.on)
        end = on + np.asarray(notes.dur)
        t_on = self.seconds(on) + self.rng.normal(0, jitter, len(on))
        t_end = self.seconds(end)
        dur = np.maximum(t_end - t_on, 0.02)
        return Notes(list(np.maximum(t_on, 0.0)), list(dur), notes.midi, notes.vel)
