"""Throughput of fplib's batched augmentation and front end, next to the reference's per-example way.

What is measured (all in one process run, on the same CPU, so the ratios are what to read; absolute
figures move with the machine and its load):

1. Training pairs per second. fplib: ``Augmenter(AugmentConfig()).pairs(seg, noise, ir, g)`` on batches
   of 1-s segments at 8 kHz (plus ``Augmenter.context`` samples each side), noise excerpts ``[B, 8000]``
   and impulse responses ``[B, 4000]`` (0.5 s of exponentially decaying noise after a direct-path
   spike), giving clean and degraded log-mels ``[B, 1, 256, 32]``. The reference, the per-example way: every
   example on its own through an audiomentations chain with AugmentConfig's default probabilities
   (Shift -> ApplyImpulseResponse -> AddBackgroundNoise at 0-10 dB SNR -> LowPassFilter + HighPassFilter
   together with p 0.4 -> TimeMask), IRs and noises read from wav files in a temporary folder as
   audiomentations requires, then ``librosa.feature.melspectrogram`` + ``librosa.power_to_db(ref=np.max,
   top_db=80)`` for both views and SpecAugment-style masks on the degraded one. Stronger variants of
   the reference are timed too: the per-example work spread over worker processes (as DataLoader
   workers would; ``--threads`` of them, one thread each), and the mel filterbank computed once instead
   of on every ``melspectrogram`` call (librosa rebuilds it each call, most of that call's time).
2. Feature extraction as a multiple of real time: ``fplib.features.logmel`` on a long synthetic
   music-like signal (1-s windows every 0.5 s), next to librosa computing the same log-mels window by
   window (same variants as above). Also windows per second. The two outputs are compared as a check.

How: ``time.perf_counter``. Each table row warms both sides up, then times fplib and the reference in
alternating rounds (the order flips each round; each side runs enough calls per round to last a
minimum time, after a short idle gap that lets the other side's spinning OpenBLAS/OpenMP threads
park), so a slow spell of a shared machine hits both. Reported: median rates, the median of the
per-round ratios, and the ratio of the best times. torch's intra-op threads and numpy's BLAS threads
are both set to ``--threads`` (default 2). The CPU time other processes took during the run is
printed too: above 5% of the machine the figures are flagged as unreliable.

Targets (from the issue): fplib >= 10x the reference in pairs/s, and feature extraction >= 2000x real
time on 2 CPU cores.

Usage: ``.venv/bin/python benchmarks/bench_augment.py [--quick] [--device cuda] [--json PATH]``
(``--device cuda`` times fplib on the GPU, inputs copied from the CPU inside the timing; the
reference always runs on the CPU).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import audiomentations as am
import librosa
import numpy as np
import soundfile as sf
import torch
from threadpoolctl import threadpool_limits

from fplib.augment import AugmentConfig, Augmenter
from fplib.features import FrontEnd, logmel

FE = FrontEnd()
CFG = AugmentConfig()
SR = FE.sr
IR_LEN = int(round(CFG.ir_max_s * SR))  # 0.5 s
N_IR_FILES = 8
N_NOISE_FILES = 8
NOISE_FILE_S = 20.0
MEL_KW = dict(
    sr=SR,
    n_fft=FE.n_fft,
    hop_length=FE.stft_hop,
    n_mels=FE.n_mels,
    fmin=FE.f_min,
    fmax=FE.f_max,
    htk=True,
    norm=None,
    center=True,
)


# -- synthetic audio ---------------------------------------------------------------------------------
def music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Overlapping notes with decaying harmonics, a new one every 0.25 s, plus a little noise: float32 [T]."""
    rng = np.random.default_rng(seed)
    step, note_len = SR // 4, SR // 2
    n_notes = int(np.ceil(seconds * SR / step))
    t = np.arange(note_len) / SR
    f0 = 110.0 * 2.0 ** (rng.integers(0, 36, n_notes) / 12.0)
    notes = np.zeros((n_notes, note_len))
    for k in (1, 2, 3, 4):
        notes += np.sin(2 * np.pi * k * f0[:, None] * t[None, :] + rng.uniform(0, 2 * np.pi, (n_notes, 1))) / k
    notes *= np.exp(-4.0 * t)[None, :] * rng.uniform(0.3, 1.0, (n_notes, 1))
    out = np.zeros((n_notes + 1) * step)
    out[: n_notes * step] += notes[:, :step].reshape(-1)  # first half of every note
    out[step : (n_notes + 1) * step] += notes[:, step:].reshape(-1)  # its tail, under the next note
    n = int(round(seconds * SR))
    out = out[:n] + 0.01 * rng.standard_normal(n)
    return (0.9 * out / np.abs(out).max()).astype(np.float32)


def coloured_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Background noise with a 1/f-ish spectrum: float32 [T], RMS about 0.1."""
    n = int(round(seconds * SR))
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1.0 / SR), 20.0))
    x = np.fft.irfft(spec, n)
    return (0.1 * x / x.std()).astype(np.float32)


def impulse_response(rng: np.random.Generator) -> np.ndarray:
    """0.5 s of exponentially decaying noise after a direct-path spike (at a small random delay): float32 [L]."""
    t60 = rng.uniform(0.2, 0.8)
    delay = int(rng.integers(0, 40))
    ir = np.zeros(IR_LEN)
    tail = rng.standard_normal(IR_LEN - delay) * np.exp(-6.9 * np.arange(IR_LEN - delay) / (t60 * SR))
    ir[delay:] = 0.3 * tail
    ir[delay] = 1.0
    return (ir / np.abs(ir).max()).astype(np.float32)


@dataclass
class Inputs:
    """The benchmark's audio: a long signal, noise and IR banks (in memory and as wav files)."""

    music: np.ndarray  # float32 [T]
    noises: list[np.ndarray]
    irs: list[np.ndarray]
    noise_dir: str
    ir_dir: str


def make_inputs(root: Path, seconds: float, seed: int = 0) -> Inputs:
    rng = np.random.default_rng(seed)
    noises = [coloured_noise(NOISE_FILE_S, rng) for _ in range(N_NOISE_FILES)]
    irs = [impulse_response(rng) for _ in range(N_IR_FILES)]
    (root / "noise").mkdir()
    (root / "ir").mkdir()
    for i, x in enumerate(noises):
        sf.write(root / "noise" / f"noise_{i}.wav", x, SR, subtype="FLOAT")
    for i, x in enumerate(irs):
        sf.write(root / "ir" / f"ir_{i}.wav", x, SR, subtype="FLOAT")
    return Inputs(music_like(seconds, seed), noises, irs, str(root / "noise"), str(root / "ir"))


def make_batch(inp: Inputs, batch: int, context: int, seed: int) -> dict[str, np.ndarray]:
    """What a DataLoader would hand over: segments with context, noise excerpts and IRs, float32."""
    rng = np.random.default_rng(seed)
    n = FE.win_len + 2 * context
    starts = rng.integers(0, inp.music.shape[0] - n, batch)
    seg = np.stack([inp.music[s : s + n] for s in starts])
    noise = []
    for k in rng.integers(0, len(inp.noises), batch):
        s = int(rng.integers(0, inp.noises[k].shape[0] - FE.win_len))
        noise.append(inp.noises[k][s : s + FE.win_len])
    ir = np.stack([inp.irs[k] for k in rng.integers(0, len(inp.irs), batch)])
    return {"seg": seg, "noise": np.stack(noise), "ir": ir}


# -- the reference: per example, audiomentations + librosa ------------------------------------------
class Reference:
    """The reference: one example at a time through audiomentations, log-mels with librosa."""

    def __init__(self, noise_dir: str, ir_dir: str, cached_mel: bool = False, seed: int = 0):
        c = CFG
        self.chain = am.Compose(
            [
                am.Shift(
                    min_shift=-c.offset_max_s,
                    max_shift=c.offset_max_s,
                    shift_unit="seconds",
                    rollover=False,
                    fade_duration=0.0,
                    p=c.offset_p,
                ),
                am.ApplyImpulseResponse(ir_dir, p=c.ir_p, leave_length_unchanged=True),
                am.AddBackgroundNoise(noise_dir, min_snr_db=c.snr_db[0], max_snr_db=c.snr_db[1], p=c.noise_p),
                am.Compose(
                    [  # low-pass and high-pass together, zero-phase like fplib's band-limiting
                        am.LowPassFilter(
                            min_cutoff_freq=c.lowpass_hz[0],
                            max_cutoff_freq=c.lowpass_hz[1],
                            min_rolloff=12,
                            max_rolloff=36,
                            zero_phase=True,
                            p=1.0,
                        ),
                        am.HighPassFilter(
                            min_cutoff_freq=c.highpass_hz[0],
                            max_cutoff_freq=c.highpass_hz[1],
                            min_rolloff=12,
                            max_rolloff=36,
                            zero_phase=True,
                            p=1.0,
                        ),
                    ],
                    p=c.bandlimit_p,
                ),
                am.TimeMask(
                    min_band_part=c.time_mask_s[0] / FE.win_s,
                    max_band_part=c.time_mask_s[1] / FE.win_s,
                    fade_duration=0.0,
                    p=c.time_mask_p,
                ),
            ]
        )
        self.mel_basis = librosa.filters.mel(**{k: v for k, v in MEL_KW.items() if k not in ("hop_length", "center")})
        self.cached_mel = cached_mel
        self.rng = np.random.default_rng(seed)
        random.seed(seed)
        np.random.seed(seed)

    def logmel(self, y: np.ndarray) -> np.ndarray:
        """One window -> log-mel ``[256, 32]`` in dB re its maximum, floored at -80 dB."""
        if self.cached_mel:  # what melspectrogram does, with the filterbank built once
            power = np.abs(librosa.stft(y, n_fft=FE.n_fft, hop_length=FE.stft_hop, center=True)) ** 2
            mel = self.mel_basis @ power
        else:
            mel = librosa.feature.melspectrogram(y=y, **MEL_KW)
        return librosa.power_to_db(mel, ref=np.max, top_db=-FE.floor_db)

    def spec_mask(self, db: np.ndarray) -> np.ndarray:
        c, r = CFG, self.rng
        if r.random() < c.freq_mask_p:
            w = int(r.integers(0, c.freq_mask_max_bins + 1))
            s = int(r.integers(0, FE.n_mels - w + 1))
            db[s : s + w, :] = FE.floor_db
        if r.random() < c.spec_time_mask_p:
            w = int(r.integers(0, c.spec_time_mask_max_frames + 1))
            s = int(r.integers(0, FE.n_frames - w + 1))
            db[:, s : s + w] = FE.floor_db
        return db

    def pairs(self, seg: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
        """``seg [B, T + 2*context]`` -> clean and degraded log-mels ``[B, 1, 256, 32]``."""
        clean_out, aug_out = [], []
        for s in seg:
            clean = s[context : context + FE.win_len]
            aug = self.chain(samples=clean, sample_rate=SR)
            aug = aug / max(1.0, float(np.abs(aug).max()))
            clean_out.append(self.logmel(clean))
            aug_out.append(self.spec_mask(self.logmel(aug)))
        return np.stack(clean_out)[:, None], np.stack(aug_out)[:, None]

    def features(self, wav: np.ndarray) -> np.ndarray:
        """A signal -> log-mels of its windows, one window at a time: ``[N, 1, 256, 32]``."""
        n = (wav.shape[0] - FE.win_len) // FE.hop_len + 1
        return np.stack([self.logmel(wav[i * FE.hop_len : i * FE.hop_len + FE.win_len]) for i in range(n)])[:, None]


# worker processes (torch is not used there): each holds its own References and uses one BLAS thread
_WORKER: dict[str, Reference] = {}


def _worker_init(noise_dir: str, ir_dir: str) -> None:
    threadpool_limits(1)
    seed = os.getpid()
    _WORKER["plain"] = Reference(noise_dir, ir_dir, cached_mel=False, seed=seed)
    _WORKER["cached"] = Reference(noise_dir, ir_dir, cached_mel=True, seed=seed)


def _worker_pairs(args: tuple[str, np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
    kind, seg, context = args
    return _WORKER[kind].pairs(seg, context)


def _worker_features(args: tuple[str, np.ndarray]) -> np.ndarray:
    kind, wav = args
    return _WORKER[kind].features(wav)


def pool_pairs(pool, kind: str, seg: np.ndarray, context: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    parts = pool.map(_worker_pairs, [(kind, s, context) for s in np.array_split(seg, workers)])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def pool_features(pool, kind: str, wav: np.ndarray, workers: int) -> np.ndarray:
    """Windows split into ``workers`` contiguous runs; each worker gets its stretch of the signal."""
    n = (wav.shape[0] - FE.win_len) // FE.hop_len + 1
    runs = [r for r in np.array_split(np.arange(n), workers) if len(r)]
    chunks = [wav[r[0] * FE.hop_len : r[-1] * FE.hop_len + FE.win_len] for r in runs]
    return np.concatenate(pool.map(_worker_features, [(kind, c) for c in chunks]))


# -- timing ------------------------------------------------------------------------------------------
@dataclass
class Timing:
    median: float  # seconds per call
    min: float
    calls_per_round: int


@dataclass
class Row:
    """fplib and a reference doing the same work, timed in interleaved rounds."""

    label: str
    work: float  # per call: pairs, or seconds of audio
    fplib: Timing
    ref: Timing
    ratios: list[float]  # per round: reference time / fplib time

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def best_ratio(self) -> float:
        """Best reference time over best fplib time (what each side does on a quiet machine)."""
        return self.ref.min / self.fplib.min

    def rates(self, scale: float = 1.0) -> tuple[float, float]:
        """Work per second (median), fplib and reference, times ``scale``."""
        return scale * self.work / self.fplib.median, scale * self.work / self.ref.median


def calls_for(fn: Callable[[], object], min_round_s: float) -> int:
    """Warm ``fn`` up (one call) and return how many calls make a round of at least ``min_round_s``."""
    t0 = time.perf_counter()
    fn()
    return max(1, int(np.ceil(min_round_s / max(time.perf_counter() - t0, 1e-9))))


def seconds_per_call(fn: Callable[[], object], calls: int, settle_s: float) -> float:
    time.sleep(settle_s)  # let the other side's idle threads stop spinning first
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


@dataclass(frozen=True)
class Plan:
    """How long to measure: interleaved rounds, each side's minimum time per round, and the idle gap
    before each side's turn: the reference's idle OpenBLAS threads spin for about 0.1 s after a call
    (and would slow fplib down), torch's OpenMP threads for much less."""

    rounds: int
    min_round_s: float
    settle_mine_s: float = 0.1
    settle_ref_s: float = 0.02


def compare(label: str, work: float, mine: Callable[[], object], ref: Callable[[], object], plan: Plan) -> Row:
    """Warm both up, then alternate them round by round (the order flips every round), so that a slow
    spell of a noisy machine hits both sides; the ratio is the median of the per-round ratios."""
    n_mine, n_ref = calls_for(mine, plan.min_round_s), calls_for(ref, plan.min_round_s)
    t_mine, t_ref = [], []
    for r in range(plan.rounds):
        if r % 2 == 0:
            t_mine.append(seconds_per_call(mine, n_mine, plan.settle_mine_s))
            t_ref.append(seconds_per_call(ref, n_ref, plan.settle_ref_s))
        else:
            t_ref.append(seconds_per_call(ref, n_ref, plan.settle_ref_s))
            t_mine.append(seconds_per_call(mine, n_mine, plan.settle_mine_s))
    return Row(
        label,
        work,
        Timing(statistics.median(t_mine), min(t_mine), n_mine),
        Timing(statistics.median(t_ref), min(t_ref), n_ref),
        [b / a for a, b in zip(t_mine, t_ref)],
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fplib_pairs_fn(batch: dict[str, np.ndarray], device: torch.device) -> Callable[[], object]:
    """``Augmenter.pairs`` on a CPU batch (copied to ``device`` inside the timing)."""
    aug = Augmenter(CFG, FE)
    seg, noise, ir = (torch.from_numpy(batch[k]) for k in ("seg", "noise", "ir"))
    g = torch.Generator().manual_seed(0)

    def run():
        out = aug.pairs(seg.to(device), noise.to(device), ir.to(device), g)
        sync(device)
        return out

    return run


def fplib_features_fn(wav: np.ndarray, device: torch.device) -> Callable[[], torch.Tensor]:
    x = torch.from_numpy(wav)

    def run():
        out = logmel(x, FE, device=device)
        sync(device)
        return out

    return run


# -- the benchmark -----------------------------------------------------------------------------------
def variants(workers: int) -> list[tuple[str, str, bool]]:
    """Stronger references: (label, mel mode, in worker processes)."""
    return [
        (f"ref. in {workers} worker processes", "plain", True),
        ("ref. with mel filterbank cached", "cached", False),
        (f"ref. {workers} processes + cached fbank", "cached", True),
    ]


def bench_pairs(
    inp: Inputs,
    refs: dict[str, Reference],
    pool,
    workers: int,
    batches: list[int],
    variant_batch: int,
    device: torch.device,
    plan: Plan,
) -> list[Row]:
    context = Augmenter(CFG, FE).context
    rows = []
    for b in batches:
        batch = make_batch(inp, b, context, seed=b)
        clean, aug = fplib_pairs_fn(batch, device)()
        assert clean.shape == aug.shape == (b, *FE.shape), (clean.shape, aug.shape)
        ref = refs["plain"]
        rows.append(
            compare(
                f"pairs/s (batch {b})",
                b,
                fplib_pairs_fn(batch, device),
                lambda ref=ref, batch=batch: ref.pairs(batch["seg"], context),
                plan,
            )
        )
    b = variant_batch
    batch = make_batch(inp, b, context, seed=b)
    for name, kind, in_pool in variants(workers):
        if in_pool:
            fn = lambda kind=kind: pool_pairs(pool, kind, batch["seg"], context, workers)
        else:
            fn = lambda kind=kind: refs[kind].pairs(batch["seg"], context)
        rows.append(compare(f"  batch {b}, {name}", b, fplib_pairs_fn(batch, device), fn, plan))
    return rows


def check_features(wav: np.ndarray, ref: Reference, device: torch.device) -> dict:
    """fplib's log-mels against librosa's on the same windows (dB)."""
    mine = fplib_features_fn(wav, device)().cpu().numpy()
    theirs = ref.features(wav)
    assert mine.shape == theirs.shape, (mine.shape, theirs.shape)
    diff = np.abs(mine - theirs)
    return {
        "n_windows": int(mine.shape[0]),
        "max_abs_diff_db": float(diff.max()),
        "mean_abs_diff_db": float(diff.mean()),
    }


def bench_features(
    wav: np.ndarray, refs: dict[str, Reference], pool, workers: int, device: torch.device, plan: Plan
) -> list[Row]:
    seconds = wav.shape[0] / SR
    rows = [
        compare(
            "feature extraction (x real time)",
            seconds,
            fplib_features_fn(wav, device),
            lambda: refs["plain"].features(wav),
            plan,
        )
    ]
    for name, kind, in_pool in variants(workers):
        if in_pool:
            fn = lambda kind=kind: pool_features(pool, kind, wav, workers)
        else:
            fn = lambda kind=kind: refs[kind].features(wav)
        rows.append(compare(f"  x real time, {name}", seconds, fplib_features_fn(wav, device), fn, plan))
    return rows


# -- report ------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def busy_cpu_s() -> float | None:
    """CPU time the whole machine has spent busy since boot (Linux ``/proc/stat``), s; None elsewhere."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def own_cpu_s() -> float:
    """CPU time of this process and its reaped children (the worker processes), s."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


FMT = "{:<48} {:>11} {:>11} {:>8} {:>8}"


def table_line(label: str, mine: float, ref: float, row: Row) -> str:
    return FMT.format(label, f"{mine:,.1f}", f"{ref:,.1f}", f"{row.ratio:.1f}x", f"{row.best_ratio:.1f}x")


def report(pair_rows: list[Row], feat_rows: list[Row], check: dict, meta: dict) -> tuple[str, dict]:
    """The printed table and the JSON figures."""
    lines = [
        f"bench_augment (torch {meta['torch']}, {meta['threads']} threads, CPU {meta['cpu']} x{meta['cpu_count']},"
        f" fplib on {meta['device']}, median of {meta['rounds']} interleaved rounds)",
        FMT.format("", "fplib", "reference", "ratio", "(best)"),
    ]
    rows_json = []
    for row in pair_rows:
        lines.append(table_line(row.label, *row.rates(), row))
    main_feat = feat_rows[0]
    lines.append(table_line(main_feat.label, *main_feat.rates(), main_feat))
    win_scale = check["n_windows"] / main_feat.work
    lines.append(table_line("feature extraction (windows/s)", *main_feat.rates(win_scale), main_feat))
    for row in feat_rows[1:]:
        lines.append(table_line(row.label, *row.rates(), row))
    for unit, rows in (("pairs/s", pair_rows), ("x real time", feat_rows)):
        for row in rows:
            mine, ref = row.rates()
            rows_json.append(
                {
                    "label": row.label.strip(),
                    "unit": unit,
                    "fplib": mine,
                    "reference": ref,
                    "ratio": row.ratio,
                    "best_ratio": row.best_ratio,
                    "ratios": row.ratios,
                    "fplib_best": row.work / row.fplib.min,
                    "reference_best": row.work / row.ref.min,
                    "calls_per_round": [row.fplib.calls_per_round, row.ref.calls_per_round],
                }
            )

    big = [r for r in pair_rows if r.label.startswith("pairs/s")][-1]
    rt = main_feat.rates()[0]
    targets = {
        "pairs_ratio": big.ratio,
        "pairs_ratio_met": big.ratio >= 10,
        "features_x_real_time": rt,
        "features_met": rt >= 2000,
    }
    lines += [
        "ratio: median over rounds of reference time / fplib time (the two alternate round by round);"
        " (best): best time / best time",
        "reference: one example at a time, audiomentations chain + librosa.feature.melspectrogram, 1 process;"
        " indented rows: stronger references",
        f"features: {main_feat.work:.0f} s of music-like audio, {check['n_windows']} windows;"
        f" fplib vs librosa log-mels: max |diff| {check['max_abs_diff_db']:.2g} dB,"
        f" mean {check['mean_abs_diff_db']:.2g} dB",
        f"targets: pairs/s >= 10x the reference ({big.label}: {big.ratio:.1f}x,"
        f" {'met' if targets['pairs_ratio_met'] else 'NOT met'}); feature extraction >= 2000x real time"
        f" ({rt:,.0f}x, {'met' if targets['features_met'] else 'NOT met'})",
    ]
    if meta["other_processes_cpu_s"] is not None:
        share = meta["other_processes_cpu_s"] / (meta["wall_s"] * meta["cpu_count"])
        lines.append(
            f"run: {meta['wall_s']:.0f} s; other processes used {meta['other_processes_cpu_s']:.1f} CPU-s"
            f" meanwhile ({share:.0%} of the machine)"
            + ("; figures UNRELIABLE, run again on an idle machine" if share > 0.05 else "")
        )
    return "\n".join(lines), {"meta": meta, "check": check, "targets": targets, "rows": rows_json}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short signal, fewer rounds (about 20 s)")
    p.add_argument("--device", default="cpu", help="where fplib runs: cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch and BLAS threads; reference worker processes")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: this torch sees no CUDA device", file=sys.stderr)
        return 2
    batches = [64, 256]
    # --quick: a 1-min signal, 3 rounds, and the stronger references at the small batch only
    if args.quick:
        print(
            "bench_augment QUICK MODE: a 1-min signal, 3 rounds, the stronger references at batch 64 only; the "
            "figures are not comparable with a full run's",
            flush=True,
        )
        seconds, plan, variant_batch = 60.0, Plan(rounds=3, min_round_s=0.05), 64
    else:
        seconds, plan, variant_batch = 600.0, Plan(rounds=7, min_round_s=0.3), 256

    t0, busy0, own0 = time.perf_counter(), busy_cpu_s(), own_cpu_s()
    with tempfile.TemporaryDirectory(prefix="bench_augment_") as tmp:
        inp = make_inputs(Path(tmp), seconds)
        # the worker processes first, before torch starts its thread pool in this process
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with (
            ctx.Pool(args.threads, initializer=_worker_init, initargs=(inp.noise_dir, inp.ir_dir)) as pool,
            threadpool_limits(args.threads),
        ):
            torch.set_num_threads(args.threads)
            refs = {
                "plain": Reference(inp.noise_dir, inp.ir_dir),
                "cached": Reference(inp.noise_dir, inp.ir_dir, cached_mel=True),
            }
            pair_rows = bench_pairs(inp, refs, pool, args.threads, batches, variant_batch, device, plan)
            check = check_features(inp.music, refs["plain"], device)
            feat_rows = bench_features(inp.music, refs, pool, args.threads, device, plan)
    wall, busy1 = time.perf_counter() - t0, busy_cpu_s()
    # CPU time that other processes took from this machine while the benchmark ran (a noisy-run warning)
    others = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - (own_cpu_s() - own0))

    device_name = str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})"
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device_name,
        "rounds": plan.rounds,
        "quick": args.quick,
        "signal_s": seconds,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "librosa": librosa.__version__,
        "audiomentations": am.__version__,
        "wall_s": wall,
        "other_processes_cpu_s": others,
    }
    text, figures = report(pair_rows, feat_rows, check, meta)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
