"""Near-identical songs in a catalogue: the same recording twice (an album's and a compilation's copy: other
bytes, re-encoded, at another gain, a fraction of a second later), found by their fingerprints.

Why it matters: recognition's margin decision (the best song's score minus the next song's,
:mod:`fplib.search`) would compare a recording with itself and answer "not in the database" for every
query of it. The commands that add songs (``generate_fingerprints``, ``fplib db add``, ``fplib db merge``)
call :func:`find_copies` once their songs are in; it records each pair in the catalogue
(:meth:`~fplib.catalogue.Catalogue.record_copies`, :class:`~fplib.catalogue.Copy`), the commands print a line
per pair, and the recogniser treats a song and its copies as one answer
(:meth:`fplib.search.Recognizer.runner_up`).

How: the songs not yet looked at (those added since the last look, :attr:`Catalogue.copies_checked`: a run
that was killed, or songs added by the library alone, are looked at by the next command) each search
:data:`SAMPLES` of their windows, evenly spread, among every stored window of the catalogue: in its
faiss index where one is given (``fplib db add``, ``create_faiss_indexes``), else exactly (faiss's blocked
search, the store read once in chunks); a copy's windows land on one other song at one alignment (give
or take a window), unrelated songs' scatter. Each song so named is then compared
whole at that alignment: a copy if their windows are alike over most of the shorter song
(:data:`MIN_COVER`), on average at least :data:`MIN_SCORE`, and standing out from how alike the two
songs' windows are at any alignment by :data:`MIN_CONTRAST` (an untrained network finds everything alike;
no pair stands out). Measured with the shipped model on synthetic songs: a copy 0.1 s later scored 0.91,
0.25 s later (the worst case, half a hop) 0.55, at -4 dB or with noise added 0.98-1.0; unrelated songs at
most 0.39, contrast at most 0.12 (0.29 for the worst copy).

Cost: the exact search compares ``SAMPLES`` windows of each new song with every stored window: about
0.2 s a song for a catalogue of 400,000 windows (55 hours) on a 2-core CPU, a tenth of the time
fingerprinting a 3-minute song takes there (200 songs of 3 minutes, all new: 3.0 s; 800: 44 s). It
grows with the catalogue, so a larger catalogue (:data:`EXACT_WINDOWS`) is searched through its index
instead: :func:`find_copies` without one returns None, and ``create_faiss_indexes`` (which builds it)
looks at those songs.
"""

from __future__ import annotations

from collections import Counter

import faiss
import numpy as np

from fplib.catalogue import Catalogue, Copy, Song

SAMPLES = 16  # windows of each new song searched in the whole store
NEIGHBOURS = 10  # nearest stored windows kept for each (its own song's among them are dropped)
CANDIDATES = 3  # other songs, by votes, compared whole with each new song
MIN_SCORE = 0.45  # mean similarity of the aligned windows of a copy
MIN_CONTRAST = 0.2  # ... above the two songs' mean similarity at any alignment
MIN_COVER = 0.8  # share of the shorter song's windows the alignment covers
EXACT_WINDOWS = 400_000  # catalogues up to this many windows are searched exactly; larger ones through an index


def comparable(stored: np.ndarray, kind: str) -> np.ndarray:
    """Stored fingerprints as ``float32`` rows whose inner products are their similarities
    (:mod:`fplib.codes`): unit vectors as they are; packed binary codes as +-1 / sqrt(D)."""
    if kind == "float":
        return np.ascontiguousarray(stored, dtype=np.float32)
    bits = np.unpackbits(np.asarray(stored, np.uint8), axis=1).astype(np.float32)
    return np.ascontiguousarray((2.0 * bits - 1.0) / np.sqrt(bits.shape[1]))


def find_copies(cat: Catalogue, index: faiss.Index | faiss.IndexBinary | None = None) -> list[Copy] | None:
    """Look for copies of the songs of ``cat`` not yet looked at (see the module), record what is found and
    that they were looked at; returns the pairs found (the later song of each is ``song``, a copy of the
    earlier, ``original``). ``index``: the catalogue's faiss index (ids: vector ids, every song in it), to
    search in; without one a catalogue of more than :data:`EXACT_WINDOWS` windows is not looked at (None:
    left for the next command given its index)."""
    songs = cat.songs()
    new = [i for i, s in enumerate(songs) if s.first_vector >= cat.copies_checked]
    if not new:
        return []
    if index is None and sum(s.n_vectors for s in songs) > EXACT_WINDOWS:
        return None
    checked = max(s.first_vector + s.n_vectors for s in songs)
    found: dict[tuple[int, int], tuple[float, float]] = {}
    if len(songs) > 1:
        for si, other, offset, score in _pairs(cat, songs, new, index):
            a, b = songs[si], songs[other]
            if a.id < b.id:  # the later song is the copy: its start in the earlier
                a, b, offset = b, a, -offset
            if score > found.get((a.id, b.id), (0.0, -np.inf))[1]:
                found[(a.id, b.id)] = (offset * cat.fe.hop_s, score)
    cat.record_copies([(a, b, o, sc) for (a, b), (o, sc) in found.items()], checked)
    by_id = {s.id: s for s in songs}
    return [Copy(a, by_id[a].name, b, by_id[b].name, o, sc) for (a, b), (o, sc) in sorted(found.items())]


def _pairs(cat: Catalogue, songs: list[Song], new: list[int], index=None) -> list[tuple[int, int, int, float]]:
    """``(song index, other song index, offset in windows, score)`` of each copy found for the songs ``new``
    (indices into ``songs``): window i of the first is window i + offset of the other."""
    starts = np.array([s.first_vector for s in songs], np.int64)
    queries, owner, position = [], [], []
    for si in new:
        n = songs[si].n_vectors
        picks = np.unique(np.linspace(0, n - 1, min(n, SAMPLES)).round().astype(np.int64))
        queries.append(cat.vectors(songs[si])[picks])
        owner += [si] * len(picks)
        position.append(picks)
    q = np.ascontiguousarray(np.concatenate(queries))
    owner, position = np.array(owner), np.concatenate(position)
    near = _neighbours(cat, songs, q, index)
    valid = near >= 0
    other = np.searchsorted(starts, np.where(valid, near, 0), side="right") - 1
    offset = near - starts[other] - position[:, None]
    pairs = []
    for si in new:
        mine = (owner == si)[:, None] & valid
        votes = Counter(
            (int(o), int(w)) for o, w in zip(other[mine], offset[mine]) if o != si
        )  # (other song, offset): a copy's samples agree on one, give or take a window
        pooled: dict[int, tuple[int, int]] = {}
        for (o, w), _ in votes.items():
            n = votes[(o, w - 1)] + votes[(o, w)] + votes[(o, w + 1)]
            if n > pooled.get(o, (0, 0))[0]:
                pooled[o] = (n, w)
        need = max(2, int(np.ceil((owner == si).sum() / 4)))
        ranked = sorted(((n, o, w) for o, (n, w) in pooled.items() if n >= need), reverse=True)[:CANDIDATES]
        if not ranked:
            continue
        mine_v = comparable(cat.vectors(songs[si]), cat.kind)
        for _, o, w in ranked:
            score = _aligned(mine_v, comparable(cat.vectors(songs[o]), cat.kind), w)
            if score is not None:
                pairs.append((si, o, *score))
    return pairs


def _neighbours(cat: Catalogue, songs: list[Song], q: np.ndarray, index) -> np.ndarray:
    """The vector ids ``int64 [len(q), NEIGHBOURS]`` of the stored windows nearest each of ``q`` (stored
    fingerprints), in ``index`` or, without one, exactly over the whole store (-1: none)."""
    if index is not None:
        return index.search(q, NEIGHBOURS)[1].astype(np.int64)
    q = comparable(q, cat.kind)
    best_sim = np.full((len(q), 0), -np.inf, np.float32)
    best_id = np.zeros((len(q), 0), np.int64)
    for ids, vectors in cat.iter_vectors(songs):  # the store read once, in chunks
        sims, rows = faiss.knn(q, comparable(vectors, cat.kind), min(NEIGHBOURS, len(ids)), faiss.METRIC_INNER_PRODUCT)
        best_sim = np.concatenate([best_sim, sims], axis=1)
        best_id = np.concatenate([best_id, ids[rows]], axis=1)
        keep = np.argsort(-best_sim, axis=1)[:, :NEIGHBOURS]
        best_sim, best_id = np.take_along_axis(best_sim, keep, 1), np.take_along_axis(best_id, keep, 1)
    return best_id


def _aligned(a: np.ndarray, b: np.ndarray, near: int) -> tuple[int, float] | None:
    """``(offset, score)`` if songs ``a`` and ``b`` (comparable rows) are copies at an offset within two windows
    of ``near`` (window i of ``a`` is window i + offset of ``b``), else None."""
    background = float(a.mean(axis=0) @ b.mean(axis=0))  # their mean similarity at every alignment
    shorter = min(len(a), len(b))
    best = None
    for w in range(near - 2, near + 3):
        i = np.arange(max(0, -w), min(len(a), len(b) - w))
        if len(i) < MIN_COVER * shorter:
            continue
        score = float(np.einsum("nd,nd->n", a[i], b[i + w]).mean())
        if score >= MIN_SCORE and score - background >= MIN_CONTRAST and (best is None or score > best[1]):
            best = (w, score)
    return best
