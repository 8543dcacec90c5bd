"""The landmark baseline: audfprint (Ellis' Shazam-style spectral-peak-pair hashing, ``audfprint2``
on PyPI), driven through its Python API on decoded arrays so that it sees exactly the audio the
neural system sees (its own file reader needs ffmpeg)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import soxr

from fplib import audio


@dataclass(frozen=True)
class LandmarkMatch:
    name: str
    offset_s: float  # where the query starts in the song
    count: int  # time-aligned matching hashes


class Landmark:
    """An audfprint hash table in memory. ``density``: target hashes per second (audfprint's default 20)."""

    def __init__(self, density: float = 20.0, hashbits: int = 20, depth: int = 100, min_count: int = 5, seed: int = 0):
        from audfprint2.core import analyzer, hash_table, matcher

        self._analyzer_mod = analyzer
        self.analyzer = analyzer.Analyzer(density=density)
        self.table = hash_table.HashTable(hashbits=hashbits, depth=depth)
        self.matcher = matcher.Matcher()
        self.matcher.threshcount = min_count
        self.matcher.max_returns = 3
        self.sr = self.analyzer.target_sr
        random.seed(seed)  # audfprint thins overfull hash buckets with the global `random` module

    def hashes(self, wav: np.ndarray, sr: int = audio.SR) -> np.ndarray:
        """(time frame, hash) pairs of a signal, deduplicated as audfprint does."""
        x = soxr.resample(np.asarray(wav, np.float32), sr, self.sr) if sr != self.sr else wav
        peaks = self.analyzer.find_peaks(x.astype(np.float64), self.sr)
        h = self._analyzer_mod.landmarks2hashes(self.analyzer.peaks2landmarks(peaks))
        return np.unique(h, axis=0) if len(h) else h

    def add(self, name: str, wav: np.ndarray, sr: int = audio.SR) -> int:
        h = self.hashes(wav, sr)
        self.table.store(name, [tuple(r) for r in h.tolist()])
        return len(h)

    def match(self, wav: np.ndarray, sr: int = audio.SR) -> list[LandmarkMatch]:
        """Best matches (at most 3); empty when no song has enough time-aligned hashes."""
        h = self.hashes(wav, sr)
        if len(h) == 0:
            return []
        rows = self.matcher.match_hashes(self.table, h)
        hop_s = self.analyzer.n_hop / self.sr
        return [
            LandmarkMatch(self.table.names[int(r[0])], float(r[2]) * hop_s, int(r[1]))
            for r in rows[: self.matcher.max_returns]
        ]

    def bytes_per_second(self, seconds_of_audio: float) -> float:
        """Hash-table entries stored per second of reference audio, in bytes (4 per entry)."""
        return 4.0 * float(self.table.counts.clip(max=self.table.depth).sum()) / seconds_of_audio
