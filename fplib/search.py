"""Recognition: a query (file or array, 1 s or longer) -> the best songs with their offsets, a score,
and a decision "in the database" or not.

Sequence matching (NAFP's method): every query window i is searched in the index; each
neighbour id, minus i, proposes a start window in some song; every proposed (song, start) is
re-scored on the uncompressed fingerprints as the mean similarity between query window i and
database window start + i over all i (a window that falls outside the song counts 0): the inner product
of unit vectors, or for binary codes 1 - 2 Hamming / D (:mod:`fplib.codes`; 0 for unrelated codes, 1 for
equal ones), so everything below works the same for both kinds. The best
candidate names the song and the offset (start x hop). Hits are only counted at the same alignment, so
dense regions or two neighbouring songs cannot add up. Majority vote (the
song most frequent among all neighbours) stays available for comparison.

The decision "in the database" compares a confidence with a threshold calibrated on queries that are
not in the database (:func:`calibrate_threshold`, for a stated false-positive rate): the best
candidate's score (``decision="score"``), or its margin over the best other song
(``decision="margin"``, a ratio test: an unknown query tends to match several songs about equally
well, a known one stands out). The "best other song" is never a recorded copy of the best one (the
same recording twice in the catalogue, album and compilation: :mod:`fplib.copies`), which would tie
with it: a song and its copies are one answer (:meth:`Recognizer.runner_up`), the copies named beside
it. Silent queries are rejected before any search.

Query phases: the database has a window every ``hop`` (0.5 s) from each song's start, but a query
starts anywhere, so its windows fall up to hop / 2 (0.25 s) away from the nearest database windows,
and off-grid windows match less well (on the real-music benchmark a clean query window's nearest
neighbour was right 90 % of the time within 0.1 s of the grid, 71 % over all positions). With
``phases=P`` the query is fingerprinted every hop / P; its windows form P interleaved sequences
(phase p starts p x hop / P into the query), each is matched as above, and the best candidate over
all phases wins, so one phase is always within hop / (2P) of the grid. The database is unchanged;
the query costs P times the network and the search.

Speed: a song played a few per cent fast or slow drifts against the grid as the query goes on; the
best candidates of a long query are also scored along drifting alignments (:data:`DRIFTS`), and the
fingerprints themselves are trained on speed changes (:mod:`fplib.augment`).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from fplib import audio, codes, pretrained, storage
from fplib import index as fpindex
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_model
from fplib.errors import BadFileError, json_type, read_json
from fplib.extraction import fingerprint
from fplib.features import n_windows
from fplib.models.registry import kind_of_model

# Playback speeds (relative) a long query is also aligned at: radio, DJ sets and turntables play songs
# a few per cent fast or slow, and over 10 s a 5 % drift moves the last window a whole hop off the grid.
DRIFTS = (-0.06, -0.04, -0.02, 0.02, 0.04, 0.06)
DRIFT_CANDIDATES = 20  # the best candidates (by the unshifted score) that are re-scored at each speed


@dataclass(frozen=True)
class Match:
    song_id: int
    name: str
    offset_s: float  # where the query starts in the song
    score: float  # mean similarity over the query's windows (sequence) or share of votes (vote)


@dataclass
class Result:
    in_database: bool
    matches: list[Match]  # best first
    reason: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)  # front end + model, search
    confidence: float | None = None  # what the threshold is compared with (see Recognizer's decision)
    threshold: float | None = None  # the threshold for this query's length (None: every query is accepted)
    query_s: float = 0.0  # the duration answered for (s): the query's, or the first MAX_QUERY_S of a longer file
    recording_s: float | None = None  # a file's whole duration, when it is longer than what was answered for
    copies: tuple[str, ...] = ()  # the best song's recorded copies among the matches (the same recording)

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None


# A query file longer than this is answered for its first MAX_QUERY_S seconds, read alone (so memory does not
# grow with the file: a 2-hour recording decoded whole took 4.7 GB); every song of a long recording, with where
# each starts and ends, is what fplib.segments finds (recognize --segments).
MAX_QUERY_S = 180.0


class Recognizer:
    """Holds the model and the index in memory; the catalogue's uncompressed fingerprints stay in its store
    file (:meth:`Catalogue.snapshot`, :class:`~fplib.catalogue.StoreRows`): start-up does not read them, and
    a query reads only the windows of the candidates it scores."""

    def __init__(
        self,
        model: torch.nn.Module,
        catalogue: Catalogue,
        index_path: str | os.PathLike,
        nprobe: int | None = None,
        k: int = 20,
        threshold: float | Threshold | None = None,
        device: str | torch.device = "cpu",
        phases: int = 1,
        decision: str = "score",
    ):
        self.model, self.catalogue, self.fe = model.to(device).eval(), catalogue, catalogue.fe
        self.kind = catalogue.kind
        if kind_of_model(model) != self.kind:
            raise ValueError(
                f"{catalogue.folder}: a catalogue of {self.kind} fingerprints; the model makes "
                f"{kind_of_model(model)} ones"
            )
        if decision not in ("score", "margin"):
            raise ValueError(f"decision must be 'score' or 'margin', got {decision!r}")
        self.decision = decision
        if phases < 1 or self.fe.hop_len % phases:
            raise ValueError(f"phases must be >= 1 and divide the hop of {self.fe.hop_len} samples, got {phases}")
        self.phases = phases
        self.query_fe = replace(self.fe, hop_s=self.fe.hop_len / phases / self.fe.sr)
        self.index = fpindex.load(index_path, catalogue, nprobe)
        self.k, self.device = k, device
        self.threshold = threshold
        self.threshold_source = "none" if threshold is None else "given"
        self.songs, self.matrix = catalogue.snapshot()  # matrix: [rows, width], song i at rows[i] ..
        if not self.songs:
            raise ValueError(f"{catalogue.folder}: the catalogue is empty")
        self.starts = np.array([s.first_vector for s in self.songs], dtype=np.int64)
        self.lengths = np.array([s.n_vectors for s in self.songs], dtype=np.int64)
        self.rows = catalogue.rows_of(self.songs)
        self.dtype = codes.stored_dtype(self.kind)  # what a float16 store is compared as
        self.position = {s.id: i for i, s in enumerate(self.songs)}  # song id -> index into self.songs
        self.group = self._copy_groups(catalogue.copies())

    def _copy_groups(self, copies) -> np.ndarray:
        """``int64 [songs]``: songs (indices) with the same value are copies of one recording, directly or
        through others (:meth:`Catalogue.copies`)."""
        group = np.arange(len(self.songs))

        def root(i: int) -> int:
            while group[i] != i:
                i = group[i]
            return i

        for c in copies:
            if c.song in self.position and c.original in self.position:
                a, b = root(self.position[c.song]), root(self.position[c.original])
                group[max(a, b)] = min(a, b)
        return np.array([root(i) for i in range(len(group))], np.int64)

    def runner_up(self, best: int, ranking) -> float:
        """The margin decision's "next song": the best score in ``ranking`` (``(score, song index)``, best
        first) of a song other than song index ``best`` and not a recorded copy of it; 0 if there is none.
        Used by :meth:`recognize` and by live recognition (:class:`fplib.listen.Matcher`)."""
        for score, si in ranking:
            if self.group[si] != self.group[best]:
                return float(score)
        return 0.0

    def copies_of(self, best: int, ranking) -> list[int]:
        """The song indices in ``ranking`` (``(score, song index)``) that are recorded copies of song ``best``."""
        return [si for _, si in ranking if si != best and self.group[si] == self.group[best]]

    def windows(self, si: int, lo: int, hi: int) -> np.ndarray:
        """Database windows ``lo .. hi - 1`` of song index ``si`` (within the song), as compared."""
        r = self.rows[si]
        return np.asarray(self.matrix[r + lo : r + hi], dtype=self.dtype)

    def aligned_windows(self, si: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Database windows ``w [C, M]`` of songs (indices) ``si [C]``, as compared ``[C, M, .]``, read in one
        go, and which of them are inside their song (``bool [C, M]``; the others are clipped to the song's
        ends, and sequence matching counts them 0)."""
        lengths = self.lengths[si][:, None]
        rows = self.rows[si][:, None] + np.clip(w, 0, lengths - 1)
        return np.asarray(self.matrix[rows], dtype=self.dtype), (w >= 0) & (w < lengths)

    def threshold_for(self, n_windows: int) -> float:
        """The threshold for a query of ``n_windows`` windows (-inf without one); a threshold that is not a
        finite number is an error, never a silent "accept all" or "reject all"."""
        t = self.threshold
        if t is None:
            return float("-inf")
        value = t(n_windows) if isinstance(t, Threshold) else float(t)
        if not np.isfinite(value):
            raise ValueError(f"the threshold for {n_windows} window(s) is {value}, not a finite number")
        return value

    def song_of(self, ids: np.ndarray) -> np.ndarray:
        """Vector ids ``int64 [...]`` -> indices into ``self.songs`` (the song with the largest first id <= id)."""
        return np.searchsorted(self.starts, ids, side="right") - 1

    def load_query(self, query: str | os.PathLike | np.ndarray) -> np.ndarray:
        """A query file or array -> checked ``float32 [T]`` at the front end's rate; of a file longer than
        :data:`MAX_QUERY_S`, its first :data:`MAX_QUERY_S` seconds (read alone: memory does not grow with the
        file)."""
        if isinstance(query, str | os.PathLike):
            long = audio.info(query).duration > MAX_QUERY_S
            wav = audio.load(
                query,
                self.fe.sr,
                duration=MAX_QUERY_S if long else None,
                min_duration=self.fe.win_s,
                allow_silent=True,
            )
            name = str(query)
        else:
            wav = np.asarray(query, dtype=np.float32)
            name = "query"
            if wav.ndim != 1 or not np.isfinite(wav).all():
                raise ValueError("a query array must be 1-D, finite float audio at the front end's rate")
        if n_windows(len(wav), self.fe) == 0:
            raise ValueError(f"{name}: too short: {len(wav) / self.fe.sr:.2f} s, at least {self.fe.win_s} s needed")
        return wav

    def recognize(self, query: str | os.PathLike | np.ndarray, method: str = "sequence", top: int = 3) -> Result:
        """Identify a query (a file, or ``float32 [T]`` at the front end's rate)."""
        if method not in ("sequence", "vote"):
            raise ValueError(f"method must be 'sequence' or 'vote', got {method!r}")
        wav = self.load_query(query)
        query_s = len(wav) / self.fe.sr
        result = self._recognize(wav, query_s, method, top)
        if isinstance(query, str | os.PathLike) and len(wav) >= round(MAX_QUERY_S * self.fe.sr):
            recording_s = audio.info(query).duration  # the header: the rest of the file is never read
            if recording_s > query_s + 1.0:
                result = replace(result, recording_s=recording_s)
        return result

    def _recognize(self, wav: np.ndarray, query_s: float, method: str, top: int) -> Result:
        thr = self.threshold_for(n_windows(len(wav), self.fe))
        thr = thr if np.isfinite(thr) else None
        if audio.peak_dbfs(wav) < audio.SILENCE_DBFS:
            return Result(False, [], reason="silent query", threshold=thr, query_s=query_s)
        t0 = time.perf_counter()
        q = fingerprint(wav, self.model, self.fe if method == "vote" else self.query_fe, device=self.device)
        t1 = time.perf_counter()
        scores, ids = self.index.search(q, self.k)
        if method == "vote":  # one phase: votes are counted on the database's grid
            matches = self._vote(ids)
        else:
            best: dict[int, tuple[float, float]] = {}  # song index -> (score, offset_s), over all phases
            for p in range(self.phases):
                for si, (score, start) in self._sequence(q[p :: self.phases], ids[p :: self.phases]).items():
                    if score > best.get(si, (-np.inf, 0.0))[0]:
                        best[si] = (score, max(0.0, start * self.fe.hop_s - p * self.query_fe.hop_s))
            matches = [
                Match(self.songs[si].id, self.songs[si].name, offset, score)
                for si, (score, offset) in sorted(best.items(), key=lambda kv: -kv[1][0])
            ]
        t2 = time.perf_counter()
        timings = {"frontend_model_ms": 1000 * (t1 - t0), "search_ms": 1000 * (t2 - t1)}
        if not matches:
            return Result(False, [], "no candidate alignment", timings, threshold=thr, query_s=query_s)
        conf = matches[0].score
        ranking = [(m.score, self.position[m.song_id]) for m in matches]
        if self.decision == "margin":
            conf -= self.runner_up(ranking[0][1], ranking[1:])
        ok = thr is None or conf >= thr
        copies = tuple(self.songs[si].name for si in self.copies_of(ranking[0][1], ranking[1:]))
        return Result(
            ok,
            matches[:top],
            "" if ok else f"{self.decision} below the threshold",
            timings,
            conf,
            thr,
            query_s,
            copies=copies,
        )

    def threshold_at(self, seconds: float) -> float:
        """The decision threshold for a query of ``seconds``."""
        return self.threshold_for(n_windows(int(round(seconds * self.fe.sr)), self.fe))

    def alignment(self, query: str | os.PathLike | np.ndarray, match: Match, context_s: float = 2.0) -> dict:
        """How a query's windows line up with a song around a found offset (to draw it):
        ``similarity [m, n]``, the similarity of each query window (every hop / phases, all phases
        interleaved) with each database window of ``match``'s song from ``context_s`` before the offset
        to ``context_s`` after the query's end; ``query_s [m]`` and ``song_s [n]``, where those windows
        start (s); ``offset_s``, the match's offset, so the chosen alignment is ``song_s = offset_s +
        query_s``."""
        wav = self.load_query(query)
        q = fingerprint(wav, self.model, self.query_fe, device=self.device)
        si = next(i for i, s in enumerate(self.songs) if s.id == match.song_id)
        hop = self.fe.hop_s
        lo = max(0, int(np.floor((match.offset_s - context_s) / hop)))
        hi = min(int(self.lengths[si]), int(np.ceil((match.offset_s + len(wav) / self.fe.sr + context_s) / hop)) + 1)
        return {
            "similarity": codes.similarity_matrix(q, self.windows(si, lo, hi), self.kind),
            "query_s": np.arange(len(q)) * self.query_fe.hop_s,
            "song_s": np.arange(lo, hi) * hop,
            "offset_s": match.offset_s,
            "song": match.name,
        }

    def _candidates(self, ids: np.ndarray) -> list[tuple[int, int]]:
        m, k = ids.shape
        valid = ids >= 0
        song_idx = self.song_of(np.where(valid, ids, 0))
        start = np.where(valid, ids - self.starts[song_idx], 0) - np.arange(m)[:, None]
        pairs = Counter(zip(song_idx[valid].tolist(), start[valid].tolist()))
        return [p for p, _ in pairs.most_common(200)]

    def _sequence(self, q: np.ndarray, ids: np.ndarray) -> dict[int, tuple[float, int]]:
        """Song index -> (score, start window) of its best candidate alignment (all candidates scored at once:
        their database windows are read in one go, see :class:`~fplib.catalogue.StoreRows`)."""
        m = len(q)
        candidates = self._candidates(ids)
        if not candidates:
            return {}
        si, start = np.array(candidates, dtype=np.int64).T
        vectors, inside = self.aligned_windows(si, start[:, None] + np.arange(m)[None, :])
        scores = np.where(inside, codes.similarity(vectors, q[None], self.kind), 0.0).sum(axis=1) / m
        scores = self._drifted(q, si, start, scores)
        best: dict[int, tuple[float, int]] = {}
        for s, st, score in zip(si.tolist(), start.tolist(), scores.tolist()):
            if score > best.get(s, (-np.inf, 0))[0]:
                best[s] = (score, st)
        return best

    def _drifted(self, q: np.ndarray, si: np.ndarray, start: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Scores of the best candidates re-scored for a song played a little fast or slow: query window i
        against database window ``start + round(i x speed)``, for each speed of :data:`DRIFTS` that moves
        the last window by at least one hop; the best speed counts. Short queries are left as they are
        (their windows stay within half a hop of the grid, which the fingerprints tolerate)."""
        m = len(q)
        drifts = [d for d in DRIFTS if round((m - 1) * abs(d)) >= 1]
        if not drifts:
            return scores
        top = np.argsort(-scores)[:DRIFT_CANDIDATES]
        i = np.arange(m)
        out = scores.copy()
        for d in drifts:
            w = start[top, None] + np.round(i * (1.0 + d)).astype(np.int64)[None, :]
            vectors, inside = self.aligned_windows(si[top], w)
            s = np.where(inside, codes.similarity(vectors, q[None], self.kind), 0.0).sum(axis=1) / m
            out[top] = np.maximum(out[top], s)
        return out

    def _vote(self, ids: np.ndarray) -> list[Match]:
        m = ids.shape[0]
        valid = ids >= 0
        song_idx = self.song_of(np.where(valid, ids, 0))
        start = np.where(valid, ids - self.starts[song_idx], 0) - np.arange(m)[:, None]
        votes = Counter(song_idx[valid].tolist())
        out = []
        for si, n in votes.most_common():
            offsets = Counter(start[valid & (song_idx == si)].tolist())
            out.append(
                Match(
                    self.songs[si].id,
                    self.songs[si].name,
                    offsets.most_common(1)[0][0] * self.fe.hop_s,
                    n / valid.sum(),
                )
            )
        return out


@dataclass(frozen=True)
class Threshold:
    """Score thresholds by query length: the score of a short query varies more, so each calibrated
    length (in fingerprint windows) gets its own; other lengths interpolate between them."""

    windows: tuple[int, ...]
    values: tuple[float, ...]

    def __call__(self, n_windows: int) -> float:
        return float(np.interp(n_windows, self.windows, self.values))

    def to_dict(self) -> dict:
        return {"windows": list(self.windows), "values": list(self.values)}


def calibrate(scores_by_windows: dict[int, list[float]], fpr: float) -> Threshold:
    """A :class:`Threshold` accepting at most a share ``fpr`` of the out-of-database queries of each length."""
    keys = sorted(k for k, v in scores_by_windows.items() if len(v))
    if not keys:
        raise ValueError("need out-of-database scores to calibrate a threshold")
    return Threshold(tuple(keys), tuple(calibrate_threshold(scores_by_windows[k], fpr) for k in keys))


def calibrate_threshold(out_of_db_scores: np.ndarray | list[float], fpr: float) -> float:
    """The score threshold that accepts at most a share ``fpr`` of out-of-database queries."""
    scores = np.asarray(out_of_db_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("need out-of-database scores to calibrate a threshold")
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    return float(np.nextafter(np.quantile(scores, 1.0 - fpr, method="higher"), np.inf))


class MissingThresholdError(ValueError):
    """No calibrated "not in the database" threshold for an index (and no default applies)."""


THRESHOLD_HINT = "calibrate_threshold --catalogue {cat} --index {index}"


def threshold_path(index_path: str | os.PathLike) -> Path:
    """Where the threshold of ``NAME.index`` lives: ``NAME.threshold.json``."""
    return Path(index_path).with_suffix(".threshold.json")


def resolve_threshold(
    index_path: str | os.PathLike,
    catalogue: Catalogue,
    no_threshold: bool = False,
    pretrained_dir: str | os.PathLike | None = None,
) -> tuple[dict | None, str]:
    """The threshold settings (``NAME.threshold.json`` format) for an index, and where they come from:
    None with ``no_threshold`` (every query accepted); else the index's own ``NAME.threshold.json``;
    else, for a catalogue made by the shipped model, that model's default threshold
    (:mod:`fplib.pretrained`); otherwise :class:`MissingThresholdError`, saying to run calibrate_threshold.

    A threshold file must have been calibrated for this index, this state of ``catalogue`` and its model
    (:func:`check_calibrated_for`); one written by an older fplib, which does not record them, is used with
    a warning in the source."""
    path = threshold_path(index_path)
    if no_threshold:
        return None, "none (--no-threshold): every query is accepted as in the database"
    if os.path.lexists(path):
        saved = load_threshold(path)
        return saved, check_calibrated_for(saved, path, index_path, catalogue)
    name = pretrained.shipped_name((catalogue.model or {}).get("sha256"), pretrained_dir)
    if name is not None:
        default = pretrained.default_threshold(pretrained_dir, name)
        if default is not None:
            card = pretrained.directory(pretrained_dir) / f"{name}.json"
            return (
                check_threshold(default, card),
                f"the shipped model's default ({name}; calibrate_threshold fits this catalogue)",
            )
    raise MissingThresholdError(
        f"{path}: no threshold for this index, so 'not in the database' cannot be decided; run "
        + THRESHOLD_HINT.format(cat=catalogue.folder, index=index_path)
        + " (or pass --no-threshold to accept every query)"
    )


def load_threshold(path: str | os.PathLike) -> dict:
    """A ``NAME.threshold.json``, checked by :func:`check_threshold` (:class:`BadFileError` names the file):
    the one reader of the file :func:`save_threshold` writes."""
    return check_threshold(read_json(path, "threshold file"), path)


def save_threshold(index_path: str | os.PathLike, settings: dict, calibrated_for: dict | None = None) -> Path:
    """Write the threshold settings of ``NAME.index`` (``NAME.threshold.json`` format: ``threshold``, ``phases``,
    ``decision``, and whatever measurements come with them, e.g. :meth:`fplib.calibrate.Calibration.to_json`)
    to its :func:`threshold_path`, atomically, and return that path: the one writer of the file. Settings
    that :func:`check_threshold` refuses are not written (:class:`BadFileError`).

    The file records what it was calibrated for (``calibrated_for``: :func:`threshold_record`, taken when
    the calibration started; default: the index's now), which :func:`resolve_threshold` checks."""
    path = threshold_path(index_path)
    record = calibrated_for if calibrated_for is not None else threshold_record(index_path)
    if record is not None and "calibrated_for" not in settings:
        settings = {**settings, "calibrated_for": record}
    storage.write_json(path, check_threshold(settings, path))
    return path


def threshold_record(index_path: str | os.PathLike) -> dict | None:
    """What a threshold calibrated for the index ``index_path`` is calibrated for, from the index's metadata
    (which loading the index checks against its catalogue): the index (``index_sha256``: its file's checksum,
    recorded when it was written, or computed for an index of an older fplib), the catalogue
    (``catalogue_state``: its songs, :meth:`Catalogue.state`; changes when songs are added or removed) and
    the model (``model_sha256``); ``index`` and ``catalogue`` name them. None if the index has no readable
    metadata."""
    try:
        meta = fpindex.read_meta(index_path)
        recorded = meta.get("file") if isinstance(meta.get("file"), dict) else {}
        sha = recorded.get("sha256") or storage.file_checksum(index_path)
    except (BadFileError, OSError):
        return None
    return {
        "index": str(Path(index_path).absolute()),
        "index_sha256": sha,
        "catalogue": meta.get("catalogue"),
        "catalogue_state": meta.get("catalogue_state"),
        "songs": meta.get("songs"),
        "model_sha256": (meta.get("model") or {}).get("sha256") if isinstance(meta.get("model"), dict) else None,
    }


def check_calibrated_for(
    saved: dict, path: str | os.PathLike, index_path: str | os.PathLike, catalogue: Catalogue
) -> str:
    """Where the threshold ``saved`` (read from ``path``) comes from, as :func:`resolve_threshold` says it, after
    checking that it was calibrated for the index ``index_path``, this state of ``catalogue`` and its model:
    :class:`BadFileError` naming what differs and the command that calibrates it again. A file without the
    record (an older fplib's) is used: the source then says it could not be checked."""
    hint = THRESHOLD_HINT.format(cat=catalogue.folder, index=index_path)
    was = saved.get("calibrated_for")
    if not isinstance(was, dict):
        return (
            f"{path} (warning: it does not record the index, catalogue and model it was calibrated for (an "
            f"older fplib wrote it), so it cannot be checked against them; {hint} records them)"
        )
    now = threshold_record(index_path) or {}
    index_differs = bool(was.get("index_sha256") and now.get("index_sha256")) and (
        was["index_sha256"] != now["index_sha256"]
    )
    state_differs = was.get("catalogue_state") != catalogue.state()
    model = (catalogue.model or {}).get("sha256")
    same_model = not (was.get("model_sha256") and model and was["model_sha256"] != model)
    if state_differs and same_model and _same_folder(was.get("catalogue"), catalogue.folder):
        # the same catalogue, grown or shrunk since (db add / remove, generate_fingerprints): its songs' scores
        # are those calibrated, only the number of songs a query is compared with moved; said, not refused
        n_was, n_now = was.get("songs"), len(catalogue.songs())
        counts = f" ({n_was} songs then, {n_now} now)" if isinstance(n_was, int) else ""
        return (
            f"{path} (warning: calibrated before songs were added to or removed from this catalogue{counts}, "
            f"so its false-positive rate may have moved; {hint} calibrates it for the catalogue as it is)"
        )
    differs = []
    if index_differs and state_differs:
        differs.append(
            f"another state of the catalogue and its index (songs were added or removed since, or it is "
            f"another catalogue's: {was.get('catalogue')}, {was.get('index')})"
        )
    elif index_differs:
        differs.append(
            f"another index ({was.get('index')}, SHA-256 {str(was['index_sha256'])[:12]}...; {index_path} is "
            f"{now['index_sha256'][:12]}...)"
        )
    elif state_differs:
        differs.append(
            f"another state of the catalogue (songs were added or removed since, or it is another "
            f"catalogue's: {was.get('catalogue')})"
        )
    if not same_model:
        differs.append(f"another model's fingerprints (SHA-256 {str(was['model_sha256'])[:12]}...)")
    if differs:
        raise BadFileError(
            path,
            f"calibrated for {' and '.join(differs)}, not for this one, so its false-positive rate does not hold "
            f"here; calibrate again: {hint} (or pass --no-threshold)",
        )
    return str(path)


def _same_folder(a: str | os.PathLike | None, b: str | os.PathLike) -> bool:
    try:
        return a is not None and os.path.samefile(a, b)
    except OSError:
        return False


def check_threshold(saved, path: str | os.PathLike) -> dict:
    """``saved`` if it is valid threshold settings (``NAME.threshold.json`` format: ``threshold``, a finite
    number or ``{"windows": [increasing counts >= 1], "values": [finite numbers]}``; optional ``phases``, an
    integer >= 1, and ``decision``, "score" or "margin"); else :class:`BadFileError` for ``path`` saying why."""
    how = "calibrate_threshold writes it"

    def bad(reason: str):
        return BadFileError(path, f"not a valid threshold file: {reason} ({how})")

    if not isinstance(saved, dict):
        raise bad(f"it holds {json_type(saved)}, not an object with a 'threshold'")
    if "threshold" not in saved:
        raise bad("no 'threshold' in it")
    t = saved["threshold"]

    def finite(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))

    if isinstance(t, dict):
        windows, values = t.get("windows"), t.get("values")
        if not isinstance(windows, list) or not isinstance(values, list) or not windows or len(windows) != len(values):
            raise bad("'threshold' needs 'windows' and 'values', two lists of the same non-zero length")
        if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in windows) or any(
            b <= a for a, b in zip(windows, windows[1:])
        ):
            raise bad(f"'threshold' 'windows' must be increasing whole numbers >= 1, got {windows}")
        if not all(finite(v) for v in values):
            raise bad(f"'threshold' 'values' must be finite numbers, got {values}")
    elif not finite(t):
        raise bad(f"'threshold' must be a finite number or {{'windows': [...], 'values': [...]}}, got {t!r}")
    phases = saved.get("phases", 1)
    if not isinstance(phases, int) or isinstance(phases, bool) or phases < 1:
        raise bad(f"'phases' must be a whole number >= 1, got {phases!r}")
    if saved.get("decision", "score") not in ("score", "margin"):
        raise bad(f"'decision' must be 'score' or 'margin', got {saved.get('decision')!r}")
    return saved


def check_model(checkpoint: str | os.PathLike, catalogue: Catalogue, fe) -> None:
    """Refuse a model whose front end or weights differ from those that made ``catalogue``."""
    if catalogue.fe != fe:
        raise ValueError(
            f"{checkpoint}: its front end {fe.to_dict()} differs from the catalogue's {catalogue.fe.to_dict()}"
        )
    if catalogue.model and catalogue.model.get("sha256") != storage.file_checksum(checkpoint):
        made_by = f"{catalogue.model.get('checkpoint')}, SHA-256 {str(catalogue.model.get('sha256'))[:12]}..."
        hint = f"; pass --model {catalogue.model['checkpoint']}" if catalogue.model.get("checkpoint") else ""
        raise ValueError(
            f"{catalogue.folder}: fingerprints were made by another model ({made_by}), not {checkpoint}{hint}"
        )


def catalogue_model(
    catalogue: Catalogue, checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Path]:
    """The model that made ``catalogue``'s fingerprints: ``checkpoint`` if given, else the one the
    catalogue recorded (notebook 04 records it); checked against the catalogue either way."""
    path = Path(checkpoint) if checkpoint else Path((catalogue.model or {}).get("checkpoint", ""))
    if not checkpoint and not (catalogue.model or {}).get("checkpoint"):
        raise FileNotFoundError(f"{catalogue.folder}: the catalogue does not record its model; give the checkpoint")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the model that made {catalogue.folder} is not there; give the checkpoint")
    model, fe = load_model(path, device)
    check_model(path, catalogue, fe)
    return model, path


def recognizer_from_files(
    checkpoint: str | os.PathLike | None,
    catalogue_dir: str | os.PathLike,
    index_path: str | os.PathLike,
    no_threshold: bool = False,
    pretrained_dir: str | os.PathLike | None = None,
    **kw,
) -> Recognizer:
    """Convenience: load the model (default, ``checkpoint`` None: the shipped one), open the catalogue
    (checking they belong together, by the checkpoint's checksum) and the index, with the threshold
    (and the query phases and decision it was calibrated with) from :func:`resolve_threshold`; its
    source is ``recognizer.threshold_source``. ``checkpoint`` may also name a shipped model
    (``fplib-small-v1``)."""
    if checkpoint is None or (str(checkpoint) in pretrained.NAMES and not os.path.exists(checkpoint)):
        checkpoint = pretrained.default_model(pretrained_dir, None if checkpoint is None else str(checkpoint))
    model, fe = load_model(checkpoint)
    cat = Catalogue(catalogue_dir)
    try:
        check_model(checkpoint, cat, fe)
        kw = {k: v for k, v in kw.items() if v is not None}
        source = "given"
        if "threshold" not in kw:
            saved, source = resolve_threshold(index_path, cat, no_threshold, pretrained_dir)
            if saved is not None:
                t = saved["threshold"]
                for key, default in (("phases", 1), ("decision", "score")):
                    value = saved.get(key, default)
                    if kw.setdefault(key, value) != value:
                        raise ValueError(
                            f"{source}: the threshold was calibrated with {key} {value}, not "
                            f"{kw[key]}; use {value} or calibrate again"
                        )
                kw["threshold"] = Threshold(tuple(t["windows"]), tuple(t["values"])) if isinstance(t, dict) else t
        rec = Recognizer(model, cat, index_path, **kw)
    except BaseException:
        cat.close()
        raise
    rec.threshold_source = source
    return rec


@dataclass
class Answer:
    """One query file's answer (:class:`Recognitions`): its :class:`Result`, or why it could not be read."""

    query: str
    result: Result | None
    error: str | None = None  # the file could not be used (not audio, too short ...)
    decision: str = "score"  # what the threshold was compared with

    def to_json(self) -> dict:
        """One JSON object: ``file`` and ``error``, or ``file``, ``in_database``, ``song``, ``song_id``,
        ``offset_s``, ``score``, ``confidence``, ``threshold``, ``decision``, ``reason``, ``query_start_s``,
        ``query_end_s``, ``timings_ms``, ``matches`` and ``copies`` (the song's recorded copies among them)."""
        r = self.result
        if r is None:
            return {"file": self.query, "error": self.error}
        best = r.best if r.in_database else None
        return {
            "file": self.query,
            "in_database": r.in_database,
            "song": best.name if best else None,
            "song_id": best.song_id if best else None,
            "offset_s": round(best.offset_s, 4) if best else None,
            "score": r.best.score if r.best else None,
            "confidence": r.confidence,
            "threshold": r.threshold,
            "decision": self.decision,
            "reason": r.reason or None,
            "query_start_s": 0.0,
            "query_end_s": round(r.query_s, 4),
            "recording_s": None if r.recording_s is None else round(r.recording_s, 3),
            "copies": list(r.copies) if best else [],
            "timings_ms": {k: round(v, 3) for k, v in r.timings_ms.items()},
            "matches": [
                {"song": m.name, "song_id": m.song_id, "offset_s": round(m.offset_s, 4), "score": m.score}
                for m in r.matches
            ],
        }

    def lines(self) -> list[str]:
        """The answer as text: the best song, offset, score and confidence against the threshold, then the
        other matches, or "not in the database" with the reason and the best guess; for an unreadable file,
        the error."""
        q, r = self.query, self.result
        if r is None:
            return [f"error: {self.error}" if str(self.error).startswith(q) else f"{q}: error: {self.error}"]
        span = f"[0.0-{r.query_s:.1f} s]"
        conf = "" if r.confidence is None else f"confidence {r.confidence:.3f}"
        if r.threshold is not None and conf:
            conf += f" {'>=' if r.in_database else '<'} threshold {r.threshold:.3f}"
        elif conf:
            conf += ", no threshold"
        note = (
            []
            if r.recording_s is None
            else [
                f"{q}: a {r.recording_s / 60:.0f}-min recording, answered for its first {r.query_s:.0f} s; "
                f"`recognize --segments` lists every song in it, with where each starts and ends"
            ]
        )
        if not r.in_database:
            best = f"; best guess {r.best.name} at {r.best.offset_s:.1f} s" if r.best else ""
            return [f"{q} {span}: not in the database ({r.reason}{', ' + conf if conf else ''}{best})", *note]
        also = f" (also in the catalogue as {', '.join(map(repr, r.copies))}: the same recording)" if r.copies else ""
        return [
            f"{q} {span}: {m.name} at {m.offset_s:.1f} s (score {m.score:.3f}, {conf}){also}"
            if rank == 0
            else f"{q}   {rank + 1}. {m.name} at {m.offset_s:.1f} s (score {m.score:.3f})"
            for rank, m in enumerate(r.matches)
        ] + note


class Recognitions:
    """Query files recognised one by one as this is iterated (an :class:`Answer` each, in order), and
    counted: ``identified``, ``not_in_database`` and ``failed`` (a file that could not be used: a
    ``ValueError``, :class:`fplib.audio.AudioError` included, is its answer's ``error``; the rest go on)."""

    def __init__(
        self, recognizer: Recognizer, queries: list[str | os.PathLike], method: str = "sequence", top: int = 3
    ):
        self.recognizer, self.queries, self.method, self.top = recognizer, [str(q) for q in queries], method, top
        self.identified = self.not_in_database = self.failed = 0

    def __iter__(self) -> Iterator[Answer]:
        for q in self.queries:
            try:
                r = self.recognizer.recognize(q, method=self.method, top=self.top)
            except ValueError as e:  # AudioError included
                self.failed += 1
                yield Answer(q, None, str(e), self.recognizer.decision)
                continue
            self.identified += r.in_database
            self.not_in_database += not r.in_database
            yield Answer(q, r, None, self.recognizer.decision)

    def summary(self) -> str:
        """``N queries: I identified, O not in the database, F failed``."""
        return (
            f"{len(self.queries)} queries: {self.identified} identified, {self.not_in_database} not in the "
            f"database, {self.failed} failed"
        )
