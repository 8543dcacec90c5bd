"""What ``bench_scale.py`` and ``bench_search.py`` share: real songs to query, and filler to make a catalogue
of any size without that much music.

Real songs: the demo corpus's synthetic music (60 s each), fingerprinted by the shipped model; queries
are cut from them at random (off-grid) offsets with noise at 5 dB.

Filler song ``j``: a run of the real songs' fingerprint sequences (``filler_song`` windows, cycling
through them from a random start) turned by a random orthogonal matrix, both drawn from the seed
``(seed, j)``. So the filler is clustered and ordered like real fingerprints, related to no query, and
any row can be regenerated without storing the catalogue (``rows``, ``take``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LENGTHS = (1.0, 3.0, 10.0)


def real_songs(folder: Path, n_songs: int):
    """The demo corpus's ``n_songs`` songs of 60 s fingerprinted by the shipped model: (catalogue, song
    files, noise files, model, front end)."""
    from fplib import audio, pretrained
    from fplib.catalogue import Catalogue
    from fplib.checkpoints import load_model, model_description
    from fplib.extraction import extract
    from fplib.synth import demo

    corpus = demo.make_demo_corpus(
        folder / "corpus", demo.CorpusSpec(n_songs=n_songs, song_seconds=60.0, n_noises=4, n_irs=1), progress=False
    )
    songs = audio.list_audio(corpus["music"])
    ckpt = pretrained.default_model()
    model, fe = load_model(ckpt)
    real = Catalogue(folder / "real", fe, model_description(ckpt))
    extract(songs, real, model, progress=False)
    return real, songs, audio.list_audio(corpus["noise"]), model, fe


def make_queries(songs: list, sr: int, noises: list, per_length: int, lengths=LENGTHS, seed: int = 0) -> dict:
    """``per_length`` queries per length: ``q<L>`` audio ``[n, L x sr]``, ``name<L>`` the song, ``offset<L>`` (s)."""
    import torch

    from fplib import audio, augment

    rng = np.random.default_rng(seed)
    noise = np.concatenate([audio.load(n, sr) for n in noises])
    arrays = {}
    for length in lengths:
        qs, names, offsets = [], [], []
        for i in range(per_length):
            song = songs[i % len(songs)]
            wav = audio.load(song, sr)
            off = round(float(rng.uniform(0, len(wav) / sr - length - 0.1)), 2)
            x = wav[int(off * sr) : int(off * sr) + int(length * sr)]
            start = int(rng.integers(0, len(noise) - len(x)))
            n = noise[start : start + len(x)]
            y = augment.add_noise(torch.from_numpy(x)[None], torch.from_numpy(n)[None], torch.tensor([5.0]))[0]
            qs.append(y.numpy())
            names.append(song.stem)
            offsets.append(off)
        arrays[f"q{length:g}"] = np.stack(qs)
        arrays[f"name{length:g}"] = np.array(names)
        arrays[f"offset{length:g}"] = np.array(offsets)
    return arrays


class Database:
    """``n_rows`` fingerprints: the real songs' (``pool``, first), then filler songs of ``filler_song``
    windows (the last one shorter)."""

    def __init__(self, pool: np.ndarray, n_rows: int, filler_song: int = 7200, seed: int = 0):
        if n_rows < len(pool):
            raise ValueError(f"{n_rows} rows cannot hold the {len(pool)} real ones")
        self.pool, self.n, self.song_len, self.seed = np.ascontiguousarray(pool, np.float32), n_rows, filler_song, seed
        self.n_filler = -(-(n_rows - len(pool)) // filler_song)

    def filler(self, j: int) -> np.ndarray:
        """Filler song ``j``'s rows ``float32 [length, d]``."""
        rng = np.random.default_rng([self.seed, j])
        d = self.pool.shape[1]
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        length = min(self.song_len, self.n - len(self.pool) - j * self.song_len)
        start = int(rng.integers(0, len(self.pool)))
        return np.take(self.pool, np.arange(start, start + length) % len(self.pool), axis=0) @ q.astype(np.float32)

    def chunks(self, rows: int = 1_000_000):
        """``(first id, float32 [m, d])`` in order, about ``rows`` at a time (whole filler songs)."""
        yield 0, self.pool
        first, batch, j = len(self.pool), [], 0
        while j < self.n_filler:
            batch.append(self.filler(j))
            j += 1
            if sum(map(len, batch)) >= rows or j == self.n_filler:
                block = np.concatenate(batch)
                yield first, block
                first, batch = first + len(block), []

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (any order)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.pool.shape[1]), np.float32)
        real = ids < len(self.pool)
        out[real] = self.pool[ids[real]]
        song, within = np.divmod(ids[~real] - len(self.pool), self.song_len)
        idx = np.flatnonzero(~real)
        for j in np.unique(song):
            sel = song == j
            out[idx[sel]] = self.filler(int(j))[within[sel]]
        return out

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` distinct rows at random (all rows when there are no more)."""
        rng = np.random.default_rng(seed)
        ids = np.arange(self.n) if n >= self.n else np.sort(rng.choice(self.n, n, replace=False))
        return self.take(ids)
