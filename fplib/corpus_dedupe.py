"""Copies among the corpus's songs: the same track shipped twice, a loop of it, or a copy played faster.

Every track is fingerprinted with a shipped model (:data:`DEDUPE_MODEL`); excerpts of each track, played at
a grid of speeds (:data:`SPEEDS`), are searched among every other track's windows, and a track whose
excerpts are found in one longer track is its duplicate (:func:`find_duplicates`). The records are the
corpus manifest's (``key``, ``path`` under the corpus folder, ``seconds``, ``role``, ``status``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fplib import audio

SPEEDS = (0.8, 0.84, 0.88, 0.92, 0.95, 0.98, 1.0, 1.02, 1.05, 1.09, 1.13, 1.19, 1.25)
EXCERPTS = (0.25, 0.5, 0.75)  # where in a track its excerpts are cut (share of its length)
EXCERPT_S = 8.0
DUP_SIM = 0.7  # a window votes for a track when its nearest window there is at least this similar...
DUP_RATIO = 0.6  # ...and clearly nearer than any third track's: 1 - sim <= DUP_RATIO x (1 - third's sim)
DUP_SHARE = 0.5  # an excerpt is found in a track when this share of its windows vote for it
NEIGHBOURS = 32  # neighbours searched per window
# the shipped model that looks for copies, by name: fixed, so that the corpus a model was trained on is
# rebuilt the same after the default model changes (the thresholds above were measured with it)
DEDUPE_MODEL = "fplib-small-v1"
LOUD_DBFS = -45.0  # quieter windows (fades, silence) neither vote nor are searched


def _loud_windows(wav: np.ndarray, n: int, fe) -> np.ndarray:
    """Which of the ``n`` windows (every ``fe.hop_s``) of ``wav`` are above :data:`LOUD_DBFS`."""
    return np.array(
        [audio.rms_dbfs(wav[i * fe.hop_len : i * fe.hop_len + fe.win_len]) >= LOUD_DBFS for i in range(n)], dtype=bool
    )


def find_duplicates(
    records: list[dict], out: Path, model_path: str | os.PathLike | None = None, progress: bool = True
) -> dict[str, tuple[str, float, float]]:
    """``{key: (key of the longer track it copies, speed, share)}`` among the kept music records (``speed``:
    how fast the copy is played to match the original; 0.8 for a copy 1.25 times as fast).

    Every track is fingerprinted with the shipped model :data:`DEDUPE_MODEL` (or ``model_path``); three
    excerpts of each track, played at each of :data:`SPEEDS`, are searched among every other track's
    windows (faiss, exact inner product): :func:`duplicate_evidence`. A window votes for the track
    holding its nearest neighbour when that neighbour is close (:data:`DUP_SIM`) and clearly closer than
    the next tracks' but one (:data:`DUP_RATIO`, a ratio test against the third distinct track, so that
    two copies of the same audio do not hide each other: generic windows that resemble many tracks do
    not vote). A track is a duplicate when, at one speed, two of its three excerpts find one and the
    same longer track with most of their windows (:func:`decide_duplicates`)."""
    music = [r for r in records if r["role"] == "music" and r["status"] == "kept"]
    if len(music) < 2:
        return {}
    return decide_duplicates(music, duplicate_evidence(music, out, model_path, progress))


def duplicate_evidence(
    music: list[dict], out: Path, model_path: str | os.PathLike | None = None, progress: bool = True
) -> list[dict[str, np.ndarray]]:
    """Per track, per window of its excerpts: ``speed`` and ``excerpt`` (indices into :data:`SPEEDS`,
    :data:`EXCERPTS`), ``top`` (the index of the other track nearest), ``s1`` (that similarity) and ``s2``
    (the third distinct track's: :func:`_nearest_tracks`). The track's own windows are not searched."""
    import faiss
    import soxr
    from tqdm.auto import tqdm

    from fplib.checkpoints import load_model
    from fplib.extraction import fingerprint
    from fplib.pretrained import default_model

    model, fe = load_model(model_path or default_model(name=DEDUPE_MODEL))
    vectors, owner = [], []
    for i, r in enumerate(tqdm(music, desc="fingerprinting songs", unit="song", disable=not progress)):
        wav = audio.load(out / r["path"], fe.sr, allow_silent=True)
        v = fingerprint(wav, model, fe)
        loud = _loud_windows(wav, len(v), fe)
        vectors.append(v[loud])
        owner.append(np.full(int(loud.sum()), i))
    index = faiss.IndexFlatIP(vectors[0].shape[1])
    index.add(np.concatenate(vectors).astype(np.float32))
    owner_all = np.concatenate(owner)
    starts = np.cumsum([0] + [len(v) for v in vectors])  # track i's windows: ids starts[i] .. starts[i+1]-1
    evidence = []
    for i, r in enumerate(tqdm(music, desc="searching for copies", unit="song", disable=not progress)):
        wav = audio.load(out / r["path"], fe.sr, allow_silent=True)
        qs, labels = [], []
        for si, speed in enumerate(SPEEDS):
            for ei, at in enumerate(EXCERPTS):
                n = int(EXCERPT_S * fe.sr * speed)
                start = int(at * max(0, len(wav) - n))
                clip = wav[start : start + n]
                if speed != 1.0:  # played `speed` times faster: fewer samples at the same rate
                    clip = soxr.resample(clip, fe.sr * speed, fe.sr).astype(np.float32)
                q = fingerprint(clip, model, fe)
                q = q[_loud_windows(clip, len(q), fe)]
                qs.append(q)
                labels += [(si, ei)] * len(q)
        if not labels:
            evidence.append({k: np.zeros(0) for k in ("speed", "excerpt", "top", "s1", "s2")})
            continue
        lo = int(starts[i])
        params = faiss.SearchParameters(sel=faiss.IDSelectorNot(faiss.IDSelectorRange(lo, lo + len(vectors[i]))))
        sims, ids = index.search(np.concatenate(qs).astype(np.float32), NEIGHBOURS, params=params)
        other = np.where(ids >= 0, owner_all[np.maximum(ids, 0)], -1)
        sims = np.where(ids >= 0, sims, -np.inf)  # fewer vectors than neighbours (a tiny corpus)
        labels_a = np.array(labels)
        evidence.append({"speed": labels_a[:, 0], "excerpt": labels_a[:, 1], **_nearest_tracks(sims, other)})
    return evidence


def _nearest_tracks(sims: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """Per query window (rows of ``sims`` / ``other``: its neighbours' similarities and tracks, best first):
    ``top`` (the nearest track), ``s1`` (its similarity) and ``s2`` (the similarity of the third distinct
    track: two copies of the same audio beside the query's own track do not hide each other; -inf when
    there are fewer than three)."""
    rows = np.arange(len(sims))
    top = other[rows, 0]
    s1 = sims[rows, 0]
    second = np.where(other != top[:, None], other, -1)
    first2 = np.argmax(second >= 0, axis=1)  # the first neighbour of another track
    t2 = np.where((second >= 0).any(axis=1), second[rows, first2], -1)
    third = (other != top[:, None]) & (other != t2[:, None]) & (other >= 0)
    s2 = np.where(third, sims, -np.inf).max(axis=1)
    return {"top": top, "s1": s1, "s2": s2}


def decide_duplicates(music: list[dict], evidence: list[dict[str, np.ndarray]]) -> dict[str, tuple[str, float, float]]:
    """:func:`find_duplicates`' decision on :func:`duplicate_evidence`."""
    found: dict[str, tuple[str, float, float]] = {}
    for i, (r, e) in enumerate(zip(music, evidence)):
        if not len(e["top"]):
            continue
        with np.errstate(invalid="ignore"):
            votes = (e["s1"] >= DUP_SIM) & (1 - e["s1"] <= DUP_RATIO * (1 - e["s2"]))
        best = None
        for si, speed in enumerate(SPEEDS):
            hits = []
            for ei in range(len(EXCERPTS)):
                sel = (e["speed"] == si) & (e["excerpt"] == ei)
                if not (sel & votes).any():
                    continue
                cands, counts = np.unique(e["top"][sel & votes], return_counts=True)
                k = int(np.argmax(counts))
                hits.append((int(cands[k]), counts[k] / sel.sum()))
            for cand in {h[0] for h in hits}:
                agree = [h[1] for h in hits if h[0] == cand and h[1] >= DUP_SHARE]
                if len(agree) >= 2 and (best is None or np.mean(agree) > best[2]):
                    best = (cand, speed, float(np.mean(agree)))
        if best is None:
            continue
        j, speed, share = best
        # the longer track is the original; of two equally long copies, the first in order stays
        if music[j]["seconds"] > r["seconds"] + 1.0 or (abs(music[j]["seconds"] - r["seconds"]) <= 1.0 and j < i):
            found[r["key"]] = (music[j]["key"], speed, share)
    # a copy of a copy points at the track that stays
    for k, (orig, speed, share) in list(found.items()):
        seen = {k}
        while orig in found and orig not in seen:
            seen.add(orig)
            orig = found[orig][0]
        found[k] = (orig, speed, share)
    return found
