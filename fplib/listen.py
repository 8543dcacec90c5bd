"""Live recognition: a stream of audio (a microphone, or any audio on standard input) -> an answer as
soon as the calibrated decision accepts one (song, where the song is now, seconds of audio it
needed, confidence), then the next answer when the music changes.

Incremental sequence matching (the same matching as :class:`fplib.search.Recognizer`, kept up to date
instead of redone): the stream is fingerprinted every ``hop / phases`` as it arrives (query phases,
:mod:`fplib.search`), and only the new windows are searched in the faiss index. Per phase, every
(song, start) alignment proposed by a window still in the rolling buffer is a candidate that keeps
one similarity per buffer window (query window i against database window start + i, on the
catalogue's uncompressed fingerprints; 0 outside the song): a new window adds one column (one dot
product per candidate), a new candidate fills its row over the buffer once, a window that leaves
the buffer clears its column, and a candidate no window in the buffer proposes any more is dropped.
A candidate's score over any recent stretch of the buffer is the mean of its columns there, so the
buffer, and its last few seconds, are scored exactly as ``Recognizer.recognize`` would score that
audio (checked by the tests), at a fraction of the cost per hop. (``Recognizer`` keeps the 200
alignments proposed most often per phase; the listener keeps them all, which can only differ when
more than 200 are proposed.)

Decision: the same as ``recognize``: the best song's score, or its margin over the next song, against
the threshold calibrated for that number of windows (``NAME.threshold.json``, interpolated between
calibrated lengths). Every hop it is taken on the whole rolling buffer (up to ``window_s``) and on its
last ``change_s`` seconds, so that a new song is found without waiting for the old one to leave the
buffer. An answer is printed once it is accepted on ``confirm`` consecutive hops with the same song
and an offset that advances with the stream; the next answer only for a different song or a jump in
offset (more than ``jump_s`` from where the current song should be). When the recent seconds name a
new song, the buffer is cut to them (the old song's windows are dropped). When the current song has
not been accepted for ``forget_s`` seconds, a "lost" event says so and the next answer starts afresh.

The matching state (buffer, fingerprints, candidates, scoring and the decision on any recent stretch)
is :class:`Matcher`; :class:`Listener` turns its decisions into answers, and
:class:`fplib.segments.Segmenter` turns the same decisions into segments with start and end.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from fplib import audio, codes, search
from fplib.extraction import fingerprint
from fplib.features import n_windows
from fplib.search import Match, Recognizer


@dataclass(frozen=True)
class Event:
    kind: str  # "match": a new answer; "lost": the current answer is no longer heard
    time_s: float  # stream time when decided (end of the audio heard so far)
    song_id: int
    name: str
    offset_s: float  # match: where the song is at time_s; lost: where it would be
    heard_s: float  # seconds of audio the accepted decision was taken on (0 for lost)
    confidence: float  # what the threshold is compared with (score or margin)
    score: float  # the best alignment's mean similarity
    threshold: float

    def to_dict(self) -> dict:
        return {
            "event": self.kind,
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items() if k != "kind"},
        }

    def __str__(self) -> str:
        if self.kind == "lost":
            return f"{self.time_s:7.1f} s: {self.name} no longer heard"
        return (
            f"{self.time_s:7.1f} s: {self.name} at {self.offset_s:.1f} s (confidence {self.confidence:.3f}, "
            f"threshold {self.threshold:.3f}, heard {self.heard_s:.1f} s)"
        )


@dataclass(frozen=True)
class Decision:
    """The recogniser's decision on a recent stretch of the stream (:meth:`Matcher.decision`)."""

    accepted: bool
    song: int  # song index into Recognizer.songs (-1: none)
    offset_now_s: float
    heard_s: float
    confidence: float
    score: float
    threshold: float
    position_s: float = 0.0  # where the song is at the decision's time, not clamped at its start (can be < 0)
    runner_up: float = 0.0  # the best other song's score, not a copy of this one's (0 when there is none)


class _Phase:
    """The candidates of one query phase: rows of (song index, start window, one similarity per buffer
    window in a ring of ``width`` columns, column = window % width)."""

    def __init__(self, width: int, dim: int, dtype: np.dtype, capacity: int = 256):
        self.width = width
        self.q = np.zeros((width, dim), dtype)  # the buffer's fingerprints of this phase, as stored
        self.keys: dict[tuple[int, int], int] = {}
        self.song = np.zeros(capacity, np.int64)
        self.start = np.zeros(capacity, np.int64)  # database window aligned with this phase's window 0
        self.count = np.zeros(capacity, np.int64)  # proposals by windows in the buffer
        self.last = np.full(capacity, -1, np.int64)  # latest window that proposed it
        self.active = np.zeros(capacity, bool)
        self.sims = np.zeros((capacity, width), np.float32)
        self.free = list(range(capacity - 1, -1, -1))
        self.proposed: dict[int, list[int]] = {}  # window -> rows it proposed (with repeats)
        self.hi = 0  # windows 0 .. hi - 1 have been added

    def row(self, song: int, start: int) -> tuple[int, bool]:
        r = self.keys.get((song, start))
        if r is not None:
            return r, False
        if not self.free:
            n = len(self.song)
            self.song, self.start, self.count = (
                np.concatenate([a, np.zeros(n, a.dtype)]) for a in (self.song, self.start, self.count)
            )
            self.last = np.concatenate([self.last, np.full(n, -1, np.int64)])
            self.active = np.concatenate([self.active, np.zeros(n, bool)])
            self.sims = np.concatenate([self.sims, np.zeros((n, self.width), np.float32)])
            self.free = list(range(2 * n - 1, n - 1, -1))
        r = self.free.pop()
        self.keys[(song, start)] = r
        self.song[r], self.start[r], self.count[r], self.last[r], self.active[r] = song, start, 0, -1, True
        self.sims[r] = 0.0
        return r, True

    def drop_window(self, i: int) -> None:
        self.sims[:, i % self.width] = 0.0
        self.forget_window(i)

    def forget_window(self, i: int) -> None:
        """Window ``i`` no longer proposes candidates: drop those that no other window proposes."""
        for r in self.proposed.pop(i, []):
            self.count[r] -= 1
            if self.count[r] == 0:
                self.active[r] = False
                del self.keys[(int(self.song[r]), int(self.start[r]))]
                self.free.append(r)


class Matcher:
    """The incremental sequence matching of a stream (the module's docstring says how): a rolling buffer of
    ``window_s`` seconds, its fingerprints and candidate alignments, kept up to date hop by hop and scored
    over any recent stretch as :meth:`Recognizer.recognize` scores that audio. :class:`Listener` and
    :class:`fplib.segments.Segmenter` decide on it.

    ``candidates_s``: candidates are those proposed by the windows of the buffer's last ``candidates_s``
    seconds (None: of the whole buffer), so only stretches that recent can be scored (:meth:`ranking`),
    at less cost per hop. ``lookahead_s``: when more audio than a hop is waiting, fingerprint and search
    up to this much of it in one batch (the windows are the same, only batched; 0: window by window as
    each hop completes, as live listening does). Memory: the buffer, ``4 x window_s x sr`` bytes of
    audio, plus per phase its fingerprints and, per candidate, one similarity per buffer window; at
    most ``k`` candidates per window are kept, so every size is bounded by ``window_s`` (plus
    ``lookahead_s`` of fingerprints waiting)."""

    def __init__(self, rec: Recognizer, window_s: float, lookahead_s: float = 0.0, candidates_s: float | None = None):
        self.rec, fe = rec, rec.fe
        self.sr, self.hop, self.win = fe.sr, fe.hop_len, fe.win_len
        self.phases, self.qhop = rec.phases, rec.query_fe.hop_len
        self.max_windows = n_windows(int(round(window_s * fe.sr)), fe)
        if self.max_windows < 1:
            raise ValueError(f"window_s must be at least one {fe.win_s} s window, got {window_s}")
        self.lookahead = max(0, int(round(lookahead_s * fe.sr / self.qhop)))  # query windows
        keep = self.max_windows if candidates_s is None else n_windows(int(round(candidates_s * fe.sr)), fe)
        self.keep = min(self.max_windows, max(1, keep))  # grid windows whose proposals are candidates
        self.kind = rec.kind  # float vectors or packed binary codes (fplib.codes)
        self.reset()

    def reset(self) -> None:
        """Forget the buffer and the candidates (the stream clock goes on)."""
        self.origin = getattr(self, "origin", 0) + getattr(self, "end", 0)  # stream samples before the buffer
        self.first = 0  # first hop (grid window) in the buffer, counted from origin
        self.forgotten = 0  # windows before this one propose no candidates (see candidates_s)
        self.end = 0  # samples since origin processed (windows formed up to here)
        self.buf = np.zeros(0, np.float32)  # samples from origin + first * hop
        self.pending = np.zeros(0, np.float32)  # received, not yet processed
        self.phase = [
            _Phase(self.max_windows + 1, self.rec.matrix.shape[1], self.rec.dtype) for _ in range(self.phases)
        ]
        self.ahead: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (phase, window) -> (q, ids)
        self.added: list[tuple[int, int]] = []  # the (phase, window)s the last hop added, in time order

    @property
    def time_s(self) -> float:
        """Stream time of the audio processed so far."""
        return (self.origin + self.end) / self.sr

    def buffer(self) -> np.ndarray:
        """The audio of the rolling buffer (what :meth:`matches` scores)."""
        return self.buf[: self.end - self.first * self.hop].copy()

    # -- the stream --------------------------------------------------------------------------
    def hops(self, chunk: np.ndarray) -> Iterator[tuple[float, float, float]]:
        """Add audio; for every complete hop: roll the buffer, fingerprint and search the new windows, add
        them, and yield ``(model_ms, search_ms, perf_counter())`` (the caller decides on the buffer then)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if not np.isfinite(chunk).all():
            chunk = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0)
        self.pending = np.concatenate([self.pending, chunk])
        while True:
            need = self.win if self.end == 0 else self.hop
            if len(self.pending) < need:
                return
            self.buf = np.concatenate([self.buf, self.pending[:need]])
            self.pending = self.pending[need:]
            self.end += need
            yield self._step()

    def _step(self) -> tuple[float, float, float]:
        """The buffer grew by one hop: roll it, add the new windows."""
        while n_windows(self.end - self.first * self.hop, self.rec.fe) > self.max_windows:
            self.drop_hop()
        if self.keep < self.max_windows:
            while self.forgotten <= (self.end - self.win) // self.hop - self.keep:
                for ph in self.phase:
                    ph.forget_window(self.forgotten)
                self.forgotten += 1
        t0 = time.perf_counter()
        todo = self._todo()
        missing = [w for w in todo if w not in self.ahead]
        t1 = t2 = time.perf_counter()
        if missing:
            t1, t2 = self._search(missing[0], len(missing))
        for p, i in todo:
            q, ids = self.ahead.pop((p, i))
            self._add_window(p, i, q, ids)
        self.added = todo
        return 1000 * (t1 - t0), 1000 * (t2 - t1), t2

    def drop_hop(self) -> None:
        """Drop the buffer's oldest hop (its windows and the candidates only they proposed)."""
        for ph in self.phase:
            ph.drop_window(self.first)
        self.first += 1
        self.buf = self.buf[self.hop :]
        self.ahead = {w: v for w, v in self.ahead.items() if w[1] >= self.first}

    def _phase_hi(self, p: int, end: int) -> int:
        """Windows of phase ``p`` that fit in the first ``end`` samples."""
        room = end - self.win - p * self.qhop
        return 0 if room < 0 else room // self.hop + 1

    def _todo(self) -> list[tuple[int, int]]:
        """The (phase, window)s the buffer now holds that have not been added, in time order."""
        todo = [
            (p, i)
            for p, ph in enumerate(self.phase)
            for i in range(max(ph.hi, self.first), self._phase_hi(p, self.end))
        ]
        return sorted(todo, key=lambda pi: pi[1] * self.phases + pi[0])

    def _fingerprints(self, start: tuple[int, int], n: int) -> np.ndarray:
        """The fingerprints of ``n`` consecutive query windows from ``start`` (in the buffer, then the audio
        waiting)."""
        j0 = start[1] * self.phases + start[0]
        lo = j0 * self.qhop - self.first * self.hop
        need = lo + (n - 1) * self.qhop + self.win
        audio_ = self.buf if need <= len(self.buf) else np.concatenate([self.buf, self.pending])
        q = fingerprint(audio_[lo:need], self.rec.model, self.rec.query_fe, device=self.rec.device)
        assert len(q) == n
        return q

    def _search(self, start: tuple[int, int], n: int) -> tuple[float, float]:
        """Fingerprint and search ``n`` consecutive query windows from ``start`` in one batch (with a lookahead,
        also those after them that the audio waiting holds, up to ``lookahead`` in all), into ``ahead``;
        returns when the network and the search finished."""
        j0 = start[1] * self.phases + start[0]
        available = self.end + len(self.pending)  # samples from origin
        n = max(n, min(self.lookahead, (available - self.win) // self.qhop - j0 + 1))
        q = self._fingerprints(start, n)
        t1 = time.perf_counter()
        _, ids = self.rec.index.search(q, self.rec.k)
        for j, qj, row in zip(range(j0, j0 + n), q, ids):
            self.ahead[(j % self.phases, j // self.phases)] = (qj, row)
        return t1, time.perf_counter()

    def _add_window(self, p: int, i: int, q: np.ndarray, ids: np.ndarray) -> None:
        ph = self.phase[p]
        ph.q[i % ph.width] = q
        ph.hi = i + 1
        active = np.flatnonzero(ph.active)
        if active.size:
            self._fill(ph, active, np.array([i]))
        ids = ids[ids >= 0]
        song = self.rec.song_of(ids)
        starts = ids - self.rec.starts[song] - i
        rows, fresh = [], []
        for s, st in zip(song.tolist(), starts.tolist()):
            r, is_new = ph.row(s, st)
            ph.count[r] += 1
            ph.last[r] = i
            rows.append(r)
            if is_new:
                fresh.append(r)
        ph.proposed[i] = rows
        if fresh:
            self._fill(ph, np.array(fresh), np.arange(max(self.first, self.forgotten), i + 1))

    def _fill(self, ph: _Phase, rows: np.ndarray, windows: np.ndarray) -> None:
        """Similarities of ``rows`` at ``windows``: query window i against database window start + i."""
        song = ph.song[rows]
        w = ph.start[rows][:, None] + windows[None, :]
        vectors, inside = self.rec.aligned_windows(song, w)
        cols = windows % ph.width
        sims = codes.similarity(vectors, ph.q[cols][None], self.kind)
        ph.sims[rows[:, None], cols[None, :]] = np.where(inside, sims, 0.0)

    # -- matching ----------------------------------------------------------------------------
    def ranking(self, first: int) -> list[tuple[float, int, float]]:
        """(score, song index, offset at hop ``first`` in s, not clamped at the song's start), best song
        first, from the windows from hop ``first`` on: what ``Recognizer.recognize`` finds for that audio
        (``first`` must be among the windows whose proposals are candidates, see ``candidates_s``)."""
        best: dict[int, tuple[float, float]] = {}
        for p, ph in enumerate(self.phase):
            hi = self._phase_hi(p, self.end)
            m = hi - first
            if m <= 0:
                continue
            rows = np.flatnonzero(ph.active & (ph.last >= first))
            if not rows.size:
                continue
            scores = ph.sims[rows][:, np.arange(first, hi) % ph.width].sum(axis=1) / m
            songs = ph.song[rows]
            order = np.lexsort((-scores, songs))  # by song, best score first
            keep = order[np.r_[True, songs[order][1:] != songs[order][:-1]]]
            for r, sc in zip(rows[keep].tolist(), scores[keep].tolist()):
                si = int(ph.song[r])
                if sc > best.get(si, (-np.inf, 0.0))[0]:
                    best[si] = (float(sc), ((int(ph.start[r]) + first) * self.hop - p * self.qhop) / self.sr)
        return sorted(((sc, si, off) for si, (sc, off) in best.items()), key=lambda t: -t[0])

    def matches(self, seconds: float | None = None) -> list[Match]:
        """The songs matching the whole buffer (or its last ``seconds``), best first, offsets at the start
        of that audio, as :meth:`Recognizer.recognize` returns them."""
        first = self.first_for(seconds)
        return [
            Match(self.rec.songs[si].id, self.rec.songs[si].name, max(0.0, off), sc)
            for sc, si, off in self.ranking(first)
        ]

    def first_for(self, seconds: float | None) -> int:
        """The first hop of the buffer's last ``seconds`` (None: of the whole buffer)."""
        last = (self.end - self.win) // self.hop  # the latest hop with a whole grid window
        if seconds is None:
            return self.first
        return max(self.first, last - max(1, n_windows(int(round(seconds * self.sr)), self.rec.fe)) + 1)

    def decision(self, first: int) -> Decision | None:
        """The recogniser's decision on the audio from hop ``first`` on (None: no windows, silent, or no
        candidate)."""
        lo = (first - self.first) * self.hop
        seg = self.buf[lo : self.end - self.first * self.hop]
        if n_windows(len(seg), self.rec.fe) == 0 or audio.peak_dbfs(seg) < audio.SILENCE_DBFS:
            return None
        ranking = self.ranking(first)
        if not ranking:
            return None
        score, si, off = ranking[0]
        second = self.rec.runner_up(si, ((sc, s) for sc, s, _ in ranking[1:]))  # never a copy of the best song
        conf = score - second if self.rec.decision == "margin" else score
        thr = self.rec.threshold_for(n_windows(len(seg), self.rec.fe))
        heard = len(seg) / self.sr
        accepted, conf, score, thr = bool(conf >= thr), float(conf), float(score), float(thr)
        return Decision(accepted, si, max(0.0, off) + heard, heard, conf, score, thr, off + heard, second)


class Listener:
    """Feed audio (``float32`` mono at the catalogue's rate) with :meth:`feed`; get :class:`Event` s.

    ``rec`` supplies the model, the index, the catalogue's fingerprints, the query phases, the decision
    and the threshold (as loaded by :func:`fplib.search.recognizer_from_files`). ``window_s``: the
    rolling buffer; ``change_s``: the recent stretch also decided on every hop (``None``: only the whole
    buffer); ``confirm``: consecutive accepting hops before an answer; ``jump_s``: an offset this far
    from where the current song should be is a new answer; ``forget_s``: silence about the current
    song after which it is reported lost. The matching itself is :attr:`matcher` (a :class:`Matcher`).
    """

    def __init__(
        self,
        rec: Recognizer,
        window_s: float = 10.0,
        change_s: float | None = 3.0,
        confirm: int = 4,
        jump_s: float = 1.5,
        forget_s: float = 4.0,
    ):
        self.rec, fe = rec, rec.fe
        self.matcher = Matcher(rec, window_s)
        self.change_windows = None if change_s is None else max(1, n_windows(int(round(change_s * fe.sr)), fe))
        if confirm < 1:
            raise ValueError(f"confirm must be >= 1, got {confirm}")
        self.confirm, self.jump_s, self.forget_s = confirm, jump_s, forget_s
        self.timings: list[dict[str, float]] = []  # per hop: model_ms, search_ms, match_ms
        self.reset()

    def reset(self) -> None:
        """Forget the buffer, the candidates and the current answer (the stream clock goes on)."""
        self.matcher.reset()
        self.current: Decision | None = None
        self.current_at = 0.0  # stream time of the current answer's offset
        self.last_seen = 0.0  # stream time the current song was last accepted
        self.streak: list[Decision] = []
        self.streak_at: list[float] = []

    @property
    def phase(self) -> list[_Phase]:
        """The candidates of each query phase (:class:`Matcher`)."""
        return self.matcher.phase

    @property
    def time_s(self) -> float:
        """Stream time of the audio processed so far."""
        return self.matcher.time_s

    def buffer(self) -> np.ndarray:
        """The audio of the rolling buffer (what :meth:`matches` scores)."""
        return self.matcher.buffer()

    def matches(self, seconds: float | None = None) -> list[Match]:
        """The songs matching the whole buffer (or its last ``seconds``), best first, offsets at the start
        of that audio, as :meth:`Recognizer.recognize` returns them."""
        return self.matcher.matches(seconds)

    # -- the stream --------------------------------------------------------------------------
    def feed(self, chunk: np.ndarray) -> list[Event]:
        """Add audio; process every complete hop; return the events it caused."""
        events: list[Event] = []
        for model_ms, search_ms, t2 in self.matcher.hops(chunk):
            events += self._decide()
            self.timings.append(
                {"model_ms": model_ms, "search_ms": search_ms, "match_ms": 1000 * (time.perf_counter() - t2)}
            )
        return events

    # -- answers -----------------------------------------------------------------------------
    def _decide(self) -> list[Event]:
        now = self.time_s
        whole = self.matcher.decision(self.matcher.first)
        recent_first = None
        if self.change_windows is not None:
            f = self.matcher.first_for(self.change_windows * self.rec.fe.hop_s)
            if f > self.matcher.first:
                recent_first = f
        recent = self.matcher.decision(recent_first) if recent_first is not None else None
        pick = None
        if (
            recent is not None
            and recent.accepted
            and (
                whole is None
                or not whole.accepted
                or whole.song != recent.song
                or abs(whole.offset_now_s - recent.offset_now_s) > self.jump_s
            )
        ):
            pick, from_recent = recent, True
        elif whole is not None and whole.accepted:
            pick, from_recent = whole, False
        events: list[Event] = []
        cur = self.current
        if pick is not None and cur is not None and self._same(cur, self.current_at, pick, now):
            self.last_seen = now
        if pick is None:
            self.streak, self.streak_at = [], []
        else:
            if self.streak and not self._same(self.streak[-1], self.streak_at[-1], pick, now):
                self.streak, self.streak_at = [], []
            self.streak.append(pick)
            self.streak_at.append(now)
            known = cur is not None and self._same(cur, self.current_at, pick, now)
            if len(self.streak) >= self.confirm and not known:
                if from_recent and recent_first is not None:  # the music changed: forget what came before
                    while self.matcher.first < recent_first:
                        self.matcher.drop_hop()
                self.current, self.current_at, self.last_seen = pick, now, now
                song = self.rec.songs[pick.song]
                events.append(
                    Event(
                        "match",
                        now,
                        song.id,
                        song.name,
                        pick.offset_now_s,
                        pick.heard_s,
                        pick.confidence,
                        pick.score,
                        pick.threshold,
                    )
                )
                cur = self.current
        if cur is not None and now - self.last_seen >= self.forget_s:
            song = self.rec.songs[cur.song]
            events.append(
                Event(
                    "lost",
                    now,
                    song.id,
                    song.name,
                    cur.offset_now_s + now - self.current_at,
                    0.0,
                    cur.confidence,
                    cur.score,
                    cur.threshold,
                )
            )
            self.current = None
        return events

    def _same(self, a: Decision, a_at: float, b: Decision, b_at: float) -> bool:
        """Same song, and b's offset is where a's would have moved to by b's time."""
        return a.song == b.song and abs(a.offset_now_s + (b_at - a_at) - b.offset_now_s) <= self.jump_s


def open_listener(
    model: str | os.PathLike | None,
    catalogue: str | os.PathLike,
    index: str | os.PathLike,
    *,
    device: str = "cpu",
    nprobe: int | None = None,
    phases: int | None = None,
    decision: str | None = None,
    **listener_kw,
) -> Listener:
    """A :class:`Listener` over the recogniser of a catalogue and index (:func:`fplib.search.recognizer_from_files`:
    the model, default the shipped one, its threshold, query phases and decision); ``listener_kw``:
    :class:`Listener`'s settings (``window_s``, ``change_s``, ``confirm``, ``jump_s``, ``forget_s``)."""
    rec = search.recognizer_from_files(
        model, catalogue, index, nprobe=nprobe, phases=phases, decision=decision, device=device
    )
    return Listener(rec, **listener_kw)


def listen(listener: Listener, chunks: Iterable[np.ndarray]) -> Iterator[Event]:
    """Every event of a stream, as it happens."""
    for x in chunks:
        yield from listener.feed(x)


def run(listener: Listener, chunks: Iterable[np.ndarray], out=None, as_json: bool = False) -> list[Event]:
    """Print each event as it happens (one JSON object a line with ``as_json``); returns them."""
    out = out or sys.stdout
    events = []
    for e in listen(listener, chunks):
        events.append(e)
        print(json.dumps(e.to_dict()) if as_json else str(e), file=out, flush=True)
    return events


def first_answer_s(events: list[Event], name: str, offset_at) -> float | None:
    """Stream time of the first correct ``match`` event: song ``name`` and ``offset_at(time_s)`` within 0.5 s."""
    for e in events:
        if e.kind == "match" and e.name == name and math.isclose(e.offset_s, offset_at(e.time_s), abs_tol=0.5):
            return e.time_s
    return None
