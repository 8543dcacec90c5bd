"""Queries of NAFP's evaluation protocol: degraded excerpts of several lengths and SNRs, cut at random
positions (not on the 0.5-s grid) from songs held out of training.

A query: ``length_s`` seconds of a song from ``start_s``, convolved with a room impulse response
(aligned on its direct path, full length), plus background noise at ``snr_db`` dB, optionally under a
condition (a codec, a change of speed: :data:`CONDITIONS`); all from test folders and seeds, so every
run draws the same queries (:func:`plan_queries`, :func:`render`). The query list is written out
(:func:`save_queries`) so runs can be compared; :mod:`fplib.evaluate` runs and scores them.

Queries are never cut from digital silence (the start is drawn again): silence is not a recording of
the song and the recogniser rejects it before any search. Where the song repeats the query's audio
exactly (a looped section, common in game music: one benchmark track holds the same 135 s twice),
no system can tell the copies apart, so every start whose audio matches the query's (normalised
cross-correlation of the clean waveforms at least ``REPEAT_CORR``) counts as a right offset
(:func:`find_repeats`; stored with the query as ``repeats``).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import scipy.fft
import soxr
import torch

from fplib import audio, storage
from fplib.augment import add_noise, bandlimit, convolve_ir
from fplib.data import IRBank, NoiseBank, item_rng


@dataclass(frozen=True)
class Query:
    id: int
    in_database: bool
    song: str  # file
    name: str  # catalogue name of the song ("" for out-of-database songs)
    start_s: float
    length_s: float
    snr_db: float
    ir: int  # index into the IR bank
    seed: int
    bandlimit: bool = False
    repeats: tuple[float, ...] = ()  # other starts (s) where the song holds the same audio (loops)
    condition: str = ""  # "" or one of CONDITIONS: a codec or a speed change on top of the room and noise


# Query conditions beyond rooms and noise (reported as their own rows): the rendered query through a lossy
# codec (MP3 and AAC at 64 kb/s, encoded at 44.1 kHz as a file or stream would be; GSM full rate and AMR-NB
# 12.2 kb/s, the phone codecs, at 8 kHz), or the song played faster or slower (pitch moving with tempo)
CONDITIONS = {
    "mp3_64": ("codec", "mp3", 64.0, 44100),
    "aac_64": ("codec", "aac", 64.0, 44100),
    "gsm": ("codec", "gsm", 13.0, 8000),
    "amr_12.2": ("codec", "amr_nb", 12.2, 8000),
    "speed+2": ("speed", 1.02),
    "speed-2": ("speed", 0.98),
    "speed+5": ("speed", 1.05),
    "speed-5": ("speed", 0.95),
}


def with_conditions(queries: list[Query], conditions: tuple[str, ...]) -> list[Query]:
    """``queries`` followed by a copy of each under each of ``conditions`` (:data:`CONDITIONS`), with
    new ids; a speed-changed copy whose song is too short for the longer read is left out."""
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad:
        raise ValueError(f"unknown query condition(s) {bad}; known: {', '.join(CONDITIONS)}")
    out, k = list(queries), max((q.id for q in queries), default=-1) + 1
    durations: dict[str, float] = {}
    for c in conditions:
        for q in queries:
            if CONDITIONS[c][0] == "speed":
                d = durations.setdefault(q.song, audio.info(q.song).duration)
                if q.start_s + q.length_s * CONDITIONS[c][1] > d:
                    continue
            out.append(replace(q, id=k, condition=c))
            k += 1
    return out


REPEAT_CORR = 0.9  # normalised cross-correlation above which two stretches of a song are the same audio


def find_repeats(
    song: np.ndarray,
    start: int,
    length: int,
    sr: int,
    min_corr: float = REPEAT_CORR,
    min_gap_s: float = 0.5,
    limit: int = 20,
) -> tuple[float, ...]:
    """Starts (s) other than ``start`` (samples) where ``song[t : t + length]`` is the same audio as
    ``song[start : start + length]``: normalised cross-correlation >= ``min_corr``, the strongest
    ``limit`` peaks at least ``min_gap_s`` from the query and from each other (FFT correlation)."""
    x = song[start : start + length].astype(np.float64)
    s = song.astype(np.float64)
    n_pos = len(s) - length + 1
    if n_pos <= 1 or not np.any(x):
        return ()
    n = scipy.fft.next_fast_len(len(s) + length - 1, real=True)
    corr = scipy.fft.irfft(scipy.fft.rfft(s, n) * np.conj(scipy.fft.rfft(x, n)), n)[:n_pos]
    energy = np.concatenate([[0.0], np.cumsum(s * s)])
    window = energy[length:] - energy[:-length]
    ncc = corr / np.sqrt(np.maximum(window, 1e-12) * float(x @ x))
    gap = int(round(min_gap_s * sr))
    found: list[int] = []
    for t in np.flatnonzero(ncc >= min_corr)[np.argsort(-ncc[ncc >= min_corr], kind="stable")]:
        if abs(t - start) > gap and all(abs(t - f) > gap for f in found):
            found.append(int(t))
            if len(found) == limit:
                break
    return tuple(sorted(round(t / sr, 4) for t in found))


def split_test_songs(files: list[Path], n_in: int) -> tuple[list[Path], list[Path]]:
    """The first ``n_in`` test songs go into the database, the rest stay out of it."""
    files = sorted(files)
    if not 0 < n_in < len(files):
        raise ValueError(f"need 0 < n_in < {len(files)} test songs, got {n_in}")
    return files[:n_in], files[n_in:]


def plan_queries(
    in_db: dict[str, str],
    out_db: list[str],
    n_irs: int,
    lengths: list[float],
    snrs: list[float],
    per_cell: int,
    seed: int,
    bandlimit_share: float = 0.0,
    sr: int = audio.SR,
) -> list[Query]:
    """``per_cell`` queries per (length, SNR) from the in-database songs ``{file: catalogue name}``, and
    as many from the out-of-database songs. Songs shorter than a query length are not drawn for it;
    starts in digital silence are drawn again (up to 20 times, then the query is left out); each
    in-database query records where its song repeats the same audio (:func:`find_repeats`)."""
    queries: list[Query] = []
    files = sorted(in_db)
    durations = {f: audio.info(f).duration for f in files + list(out_db)}
    k = 0
    for length in lengths:
        for snr in snrs:
            for j in range(per_cell):
                for kind, pool in (("in", files), ("out", sorted(out_db))):
                    if not pool:
                        continue
                    rng = item_rng(seed, "query", kind, length, snr, j)
                    fits = [s for s in pool if durations[s] > length]
                    if not fits:
                        continue
                    song = fits[int(rng.integers(len(fits)))]
                    room = durations[song] - length
                    if room <= 0:
                        continue
                    for _ in range(20):
                        start = math.floor(float(rng.uniform(0.0, room)) * 1e4) / 1e4
                        clip = audio.load(song, sr, offset=start, duration=length, allow_silent=True)
                        if audio.peak_dbfs(clip) >= audio.SILENCE_DBFS:
                            break
                    else:
                        continue
                    queries.append(
                        Query(
                            k,
                            kind == "in",
                            song,
                            in_db.get(song, ""),
                            start,
                            length,
                            snr,
                            int(rng.integers(n_irs)),
                            int(rng.integers(2**31)),
                            bool(rng.random() < bandlimit_share),
                        )
                    )
                    k += 1
    return _with_repeats(queries, sr)


def _with_repeats(queries: list[Query], sr: int) -> list[Query]:
    """Each in-database query with the other starts where its song holds the same audio."""
    by_song: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        if q.in_database:
            by_song[q.song].append(i)
    out = list(queries)
    for song, idx in by_song.items():
        wav = audio.load(song, sr, allow_silent=True)
        for i in idx:
            q = queries[i]
            rep = find_repeats(wav, int(round(q.start_s * sr)), int(round(q.length_s * sr)), sr)
            out[i] = replace(q, repeats=rep)
    return out


def render(q: Query, irs: IRBank, noises: NoiseBank, sr: int = audio.SR) -> np.ndarray:
    """The degraded query audio, ``float32 [length * sr]``."""
    cond = CONDITIONS[q.condition] if q.condition else ("",)
    if cond[0] == "speed":  # `speed` x the query's length of the song, played in the query's length
        wav = audio.load(q.song, sr, offset=q.start_s, duration=q.length_s * cond[1], allow_silent=True)
        wav = resample_to(wav, int(round(q.length_s * sr)))
    else:
        wav = audio.load(q.song, sr, offset=q.start_s, duration=q.length_s, allow_silent=True)
    rng = np.random.default_rng(q.seed)
    x = torch.from_numpy(wav)[None]
    x = convolve_ir(x, torch.from_numpy(irs.irs[q.ir])[None])
    x = add_noise(x, torch.from_numpy(noises.sample(rng, x.shape[1]).copy())[None], torch.tensor([q.snr_db]))
    if q.bandlimit:
        x = bandlimit(
            x,
            sr,
            torch.tensor([float(rng.uniform(2000, 3000))]),
            torch.tensor([float(rng.uniform(500, 1000))]),
            torch.tensor([4]),
        )
    x = x / x.abs().max().clamp_min(1.0)
    out = x[0].numpy().astype(np.float32)
    if cond[0] == "codec":
        out = audio.codec_roundtrip(out, sr, cond[1], cond[2], codec_sr=cond[3])
    return out


def resample_to(wav: np.ndarray, n: int) -> np.ndarray:
    """``wav`` stretched or squeezed to ``n`` samples (a change of playback speed: pitch moves with tempo)."""
    if n == len(wav):
        return wav
    y = soxr.resample(wav, len(wav), n, quality="HQ").astype(np.float32)
    return np.pad(y, (0, max(0, n - len(y))))[:n]


def save_queries(path: str | os.PathLike, queries: list[Query]) -> None:
    storage.write_json(path, [asdict(q) for q in queries])


def load_queries(path: str | os.PathLike) -> list[Query]:
    return [Query(**{**q, "repeats": tuple(q.get("repeats", ()))}) for q in storage.read_json(path)]


@dataclass(frozen=True)
class Played:
    """What plays in a stretch of a mixtape (:func:`mixtape`): a catalogue song (``song``, its catalogue name;
    ``offset_s``, where in the song the recording is at ``start_s``) or an unknown stretch (``song`` None: a
    song outside the catalogue). Where two songs crossfade, the boundary is the crossfade's middle."""

    start_s: float
    end_s: float
    song: str | None = None
    offset_s: float | None = None


def mixtape(
    songs: list[tuple[str, str | None]],
    seconds: float = 25.0,
    crossfade_s: float = 4.0,
    seed: int = 0,
    sr: int = audio.SR,
) -> tuple[np.ndarray, list[Played]]:
    """A long recording made of ``songs`` (``[(file, catalogue name or None for a song outside the catalogue)]``)
    one after another as a DJ set plays them: ``seconds`` of each from a seeded position, equal-power crossfades
    of ``crossfade_s``; and the truth, one :class:`Played` per song (consecutive unknown ones merged).
    Degrade it as a query (:func:`fplib.augment.convolve_ir`, :func:`fplib.augment.add_noise`) to listen to it
    in a room."""
    rng = item_rng(seed, "mixtape")
    n, fade = int(round(seconds * sr)), int(round(crossfade_s * sr))
    step = n - fade
    out = np.zeros(step * len(songs) + fade, np.float32)
    ramp = np.sin(np.linspace(0.0, np.pi / 2, fade, dtype=np.float32)) ** 2
    truth: list[Played] = []
    for i, (path, name) in enumerate(songs):
        duration = audio.info(path).duration
        offset = math.floor(float(rng.uniform(0.0, max(0.0, duration - seconds))) * 100) / 100
        x = audio.load(path, sr, offset=offset, duration=min(seconds, duration - offset))
        x = np.pad(x, (0, max(0, n - len(x))))[:n] * np.float32(0.1 / max(float(np.sqrt(np.mean(x**2))), 1e-6))
        if i:
            x[:fade] *= ramp
        if i < len(songs) - 1:
            x[-fade:] *= ramp[::-1]
        out[i * step : i * step + n] += x
        start = 0.0 if i == 0 else (i * step + fade / 2) / sr
        end = len(out) / sr if i == len(songs) - 1 else ((i + 1) * step + fade / 2) / sr
        if name is None and truth and truth[-1].song is None:
            truth[-1] = replace(truth[-1], end_s=end)
        else:
            truth.append(Played(start, end, name, None if name is None else offset + start - i * step / sr))
    return np.clip(out, -1.0, 1.0), truth


def degrade(wav: np.ndarray, irs: IRBank, noises: NoiseBank, snr_db: float, seed: int = 0) -> np.ndarray:
    """``wav`` through a room of ``irs`` and with noise of ``noises`` at ``snr_db`` dB, both drawn from
    ``seed``: a recording of it played in a room (a query's degradations, :func:`render`, for any length)."""
    rng = item_rng(seed, "degrade")
    x = torch.from_numpy(np.asarray(wav, np.float32))[None]
    x = convolve_ir(x, torch.from_numpy(irs.irs[int(rng.integers(len(irs)))])[None])
    x = add_noise(x, torch.from_numpy(noises.sample(rng, x.shape[1]).copy())[None], torch.tensor([float(snr_db)]))
    return (x / x.abs().max().clamp_min(1.0))[0].numpy().astype(np.float32)
