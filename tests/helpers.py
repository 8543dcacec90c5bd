"""Synthetic signals for tests (no mocks: real files are written and decoded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, sr: int = 8000, freq: float = 440.0, amp: float = 0.5, seed: int = 0) -> np.ndarray:
    """A sine with a little noise: float32 [T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return (x + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def music_like(seconds: float, sr: int = 8000, seed: int = 0) -> np.ndarray:
    """Random notes with harmonics (different every second): float32 [T] in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n, dtype=np.float64)
    step = sr // 4
    for start in range(0, n, step):
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        t = np.arange(min(step * 2, n - start)) / sr
        env = np.exp(-3 * t)
        out[start : start + len(t)] += sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) * env
    out += 0.01 * rng.standard_normal(n)
    return (0.9 * out / np.abs(out).max()).astype(np.float32)


def write(path: Path, wav: np.ndarray, sr: int = 8000, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, sr, **kw)
    return path


def make_folders(root: Path, n_songs: int = 5, seconds: float = 8.0, sr: int = 16000) -> dict[str, Path]:
    """A tiny corpus on disk: songs (flac, 16 kHz), noises (wav, 8 kHz), impulse responses (wav)."""
    rng = np.random.default_rng(0)
    for i in range(n_songs):
        write(root / "songs" / f"song_{i}.flac", music_like(seconds, sr, seed=i), sr)
    for i in range(3):
        write(root / "noise" / f"noise_{i}.wav", (0.1 * rng.standard_normal(8000 * 4)).astype(np.float32), 8000)
    for i in range(3):
        ir = 0.3 * np.exp(-np.arange(2000) / (200.0 * (i + 1))) * rng.standard_normal(2000)
        ir[:20] = 0
        ir[20] = 1.0
        write(root / "rir" / f"room_{i}.wav", (ir / np.abs(ir).max()).astype(np.float32), 8000, subtype="FLOAT")
    return {"songs": root / "songs", "noise": root / "noise", "rir": root / "rir"}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``fplib.cli.main(argv)`` in this process (arguments as strings): its exit code, standard output and error."""
    from fplib import cli

    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err
