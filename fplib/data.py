"""Data plumbing shared by the static generator and online training: splits, seeded per-item random
streams, noise and impulse-response banks, and segment reading with context.

Randomness is derived per item from ``(seed, *keys)`` with ``numpy.random.SeedSequence``. An item's
draws therefore do not depend on which DataLoader worker handles it, on the number of workers, or on
whether a run was resumed: different workers see different streams because they handle different
items, and a rerun reproduces every item exactly.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fplib import audio
from fplib.augment import ir_onset


def item_rng(seed: int, *keys: int | float | str) -> np.random.Generator:
    """A numpy generator for one item, from the run seed and any ints/floats/strings naming the item."""
    words: list[int] = []
    for k in (seed, *keys):
        if isinstance(k, float) and not k.is_integer():
            k = repr(k)  # 2.5 and 2 must not share a stream
        if isinstance(k, str):
            digest = hashlib.sha256(k.encode()).digest()
            words.extend(int.from_bytes(digest[i : i + 4], "little") for i in (0, 4))
        else:  # any size and sign, as 32-bit words
            k = int(k) % 2**64
            words.extend((k & 0xFFFFFFFF, k >> 32))
    return np.random.default_rng(np.random.SeedSequence(words))


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU torch generator seeded from a numpy generator."""
    return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: gives each worker distinct global numpy/random states (torch's
    own per-worker seed), for any third-party code that uses global RNGs. fplib itself uses
    :func:`item_rng`."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def split_files(files: list[Path], train_ratio: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded shuffle-and-split of ``files`` into (train, val), each sorted.

    With two or more files each side gets at least one; with a single file both sides share it.
    """
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    files = sorted(files)
    if len(files) == 1:
        return list(files), list(files)
    order = item_rng(seed, "split").permutation(len(files))
    n_train = min(max(1, int(round(train_ratio * len(files)))), len(files) - 1)
    train = sorted(files[i] for i in order[:n_train])
    val = sorted(files[i] for i in order[n_train:])
    return train, val


class NoUsableFiles(ValueError):
    """Every file of one kind was unusable; the message lists each file with its reason."""

    def __init__(self, what: str, items: list[tuple[str, str]], note: str = ""):
        self.what, self.items = what, list(items)
        lines = "".join(f"\n  {p}: {r}" for p, r in self.items)
        super().__init__(f"no usable {what}: {len(self.items)} file(s), all skipped{note}:{lines}")


@dataclass
class Skipped:
    """Files that could not be used, with the reason, for the end-of-job report."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, err: audio.AudioError) -> None:
        self.items.append((err.path, err.reason))

    def report(self) -> str:
        if not self.items:
            return "no files skipped"
        lines = [f"{len(self.items)} file(s) skipped:"] + [f"  {p}: {r}" for p, r in self.items]
        return "\n".join(lines)


class NoiseBank:
    """Background noises decoded once into memory (float32, ``sr`` Hz); unusable files are skipped."""

    def __init__(self, files: list[Path], sr: int = audio.SR, skipped: Skipped | None = None):
        self.files: list[Path] = []
        self.waves: list[np.ndarray] = []
        failed = Skipped()
        for f in files:
            try:
                self.waves.append(audio.load(f, sr))
                self.files.append(Path(f))
            except audio.AudioError as e:
                if skipped is None:
                    raise
                skipped.add(e)
                failed.add(e)
        if not self.waves:
            raise NoUsableFiles("background-noise files", failed.items)

    def __len__(self) -> int:
        return len(self.waves)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """A random ``float32 [n]`` excerpt of a random noise (looped if the noise is shorter)."""
        w = self.waves[int(rng.integers(len(self.waves)))]
        if w.shape[0] < n:
            w = np.tile(w, -(-n // w.shape[0]) + 1)
        start = int(rng.integers(0, w.shape[0] - n + 1))
        return w[start : start + n]


class IRBank:
    """Room impulse responses decoded once, cut ``max_s`` after their direct path, peak-normalised."""

    def __init__(self, files: list[Path], sr: int = audio.SR, max_s: float = 0.5, skipped: Skipped | None = None):
        self.files: list[Path] = []
        self.irs: list[np.ndarray] = []
        failed = Skipped()
        for f in files:
            try:
                ir = audio.load(f, sr)
            except audio.AudioError as e:
                if skipped is None:
                    raise
                skipped.add(e)
                failed.add(e)
                continue
            onset = int(ir_onset(torch.from_numpy(ir)[None])[0])
            ir = ir[: onset + int(round(max_s * sr)) + 1]
            self.irs.append((ir / np.abs(ir).max()).astype(np.float32))
            self.files.append(Path(f))
        if not self.irs:
            raise NoUsableFiles("impulse-response files", failed.items)

    def __len__(self) -> int:
        return len(self.irs)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return self.irs[int(rng.integers(len(self.irs)))]


def pad_stack(arrays: list[np.ndarray]) -> torch.Tensor:
    """Zero-pad 1-D arrays to a common length and stack: ``float32 [B, max_len]``."""
    n = max(a.shape[0] for a in arrays)
    out = np.zeros((len(arrays), n), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return torch.from_numpy(out)


def read_with_context(
    path: str | os.PathLike, start_s: float, win_s: float, context_s: float, duration_s: float, sr: int = audio.SR
) -> np.ndarray:
    """Read ``[start - context, start + win + context]`` seconds as ``float32 [win + 2*context]``,
    zero-padding where the context would fall outside the file (only the segment read is decoded)."""
    a = max(0.0, start_s - context_s)
    b = min(duration_s, start_s + win_s + context_s)
    wav = audio.load(path, sr, offset=a, duration=b - a, allow_silent=True)
    return slice_with_context(wav, start_s - a, win_s, context_s, sr)


def slice_with_context(wav: np.ndarray, start_s: float, win_s: float, context_s: float, sr: int) -> np.ndarray:
    """:func:`read_with_context` on audio already decoded at ``sr`` (``start_s`` counted from its start)."""
    n_total = int(round((win_s + 2 * context_s) * sr))
    lo = int(round((start_s - context_s) * sr))
    out = np.zeros(n_total, dtype=np.float32)
    a, b = max(0, lo), min(wav.shape[0], lo + n_total)
    out[a - lo : b - lo] = wav[a:b]
    return out


class SegmentDataset(torch.utils.data.Dataset):
    """Random 1-s segments of songs for online augmentation, each with a noise excerpt and an IR.

    Item ``i`` of epoch ``e`` reads only its own segment (plus ``context`` samples each side) from
    song ``i // items_per_song`` at a position drawn from ``item_rng(seed, e, i)``, skipping near-silent
    positions. Songs that cannot be read, or are silent throughout (:func:`fplib.audio.silent_reason`), are
    skipped (and reported in ``skipped``) when the dataset is built. With ``preload`` every song is decoded
    once, at ``sr``, and held in memory (4 bytes per sample: an hour of music at 8 kHz is 115 MB), which
    spares the per-item decoding that otherwise dominates on a CPU. Batch with :func:`collate_segments`.

    A segment that fails to decode later (NaN samples in the middle of a file, a file changed or
    removed since) does not raise, in a DataLoader worker or not: the item comes back silent with
    ``error = (path, reason)``, and :func:`collate_segments` marks it so that the training loop leaves it out.
    """

    def __init__(
        self,
        songs: list[Path],
        noises: NoiseBank | None,
        irs: IRBank | None,
        context: int,
        seed: int = 0,
        items_per_song: int = 1,
        win_s: float = 1.0,
        sr: int = audio.SR,
        silence_dbfs: float = -50.0,
        skipped: Skipped | None = None,
        preload: bool = False,
        what: str = "songs",
    ):
        self.songs: list[Path] = []
        failed = Skipped()
        self.durations: list[float] = []
        self.decoded: list[np.ndarray] | None = [] if preload else None
        for s in songs:
            try:
                meta = audio.info(s)
                duration = meta.duration
                if duration < win_s:
                    raise audio.AudioError(s, f"too short: {duration:.2f} s, at least {win_s:.2f} s needed")
                wav = None
                if self.decoded is not None:
                    wav = audio.load(s, sr, allow_silent=True)
                    duration = wav.shape[0] / sr
                silent = audio.silent_reason(s, meta, wav)
                if silent:  # nothing to learn from: every segment of it would be silence
                    raise audio.AudioError(s, silent)
            except audio.AudioError as e:
                if skipped is None:
                    raise
                skipped.add(e)
                failed.add(e)
                continue
            self.songs.append(Path(s))
            self.durations.append(duration)
            if self.decoded is not None:
                self.decoded.append(wav)
        if not self.songs:
            raise NoUsableFiles(what, failed.items)
        self.noises, self.irs = noises, irs
        self.context, self.seed, self.items_per_song = context, seed, items_per_song
        self.win_s, self.sr, self.silence_dbfs = win_s, sr, silence_dbfs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Fresh draws every epoch (call before iterating; DataLoader workers pick it up at start)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.songs) * self.items_per_song

    def __getitem__(self, i: int) -> dict:
        rng = item_rng(self.seed, "item", self.epoch, i)
        song, duration = self.songs[i // self.items_per_song], self.durations[i // self.items_per_song]
        win = int(round(self.win_s * self.sr))
        error = None
        try:
            for _ in range(8):  # a few tries to avoid silent positions
                start = float(rng.uniform(0.0, duration - self.win_s))
                if self.decoded is None:
                    seg = read_with_context(song, start, self.win_s, self.context / self.sr, duration, self.sr)
                else:
                    seg = slice_with_context(
                        self.decoded[i // self.items_per_song], start, self.win_s, self.context / self.sr, self.sr
                    )
                if audio.rms_dbfs(seg[self.context : self.context + win]) >= self.silence_dbfs:
                    break
        except (audio.AudioError, OSError) as e:
            error = (e.path, e.reason) if isinstance(e, audio.AudioError) else (str(song), f"cannot read: {e}")
            seg = np.zeros(win + 2 * self.context, dtype=np.float32)
        item = {
            "seg": torch.from_numpy(seg),
            "start": torch.tensor(start),
            "song": torch.tensor(i // self.items_per_song),
        }
        if self.noises is not None:
            item["noise"] = torch.from_numpy(self.noises.sample(rng, win).copy())
        if self.irs is not None:
            item["ir"] = torch.from_numpy(self.irs.sample(rng))
        if error is not None:
            item["error"] = error
        return item


def collate_segments(items: list[dict]) -> dict:
    """Stack a list of :class:`SegmentDataset` items; IRs of different lengths are zero-padded. Items
    that failed to decode are marked: ``ok`` is False for them and ``errors`` lists their ``(path,
    reason)`` (both only when some failed)."""
    out = {}
    for key in items[0]:
        if key == "error":
            continue
        if key == "ir":
            out[key] = pad_stack([it[key].numpy() for it in items])
        else:
            out[key] = torch.stack([it[key] for it in items])
    errors = [it["error"] for it in items if "error" in it]
    if errors:
        out["ok"] = torch.tensor(["error" not in it for it in items])
        out["errors"] = errors
    return out
