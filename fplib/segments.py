"""Segments of a long recording: every catalogue song it holds, where it starts and ends, where in the song
it starts, and the unknown stretches between, in one pass over a stream, in memory that does not grow
with the recording's length.

The matching is live listening's (:class:`fplib.listen.Matcher`): the stream is fingerprinted every
``hop / phases`` as it arrives, each new window is searched in the index, and every (song, start)
alignment proposed by a window of the rolling buffer is scored on the catalogue's own fingerprints.
Every hop (0.5 s) the recogniser's decision is taken on the buffer's last ``decide_s`` seconds: the best
song's score, or its margin over the next song, against the threshold calibrated for that many windows
(:meth:`fplib.search.Recognizer.threshold_for`), so audio from outside the catalogue is not named.

A song is confirmed when ``confirm`` consecutive decisions accept it on the same *line* (the song's
position against stream time: position = offset + speed x time); at the default 8, the first and the
last of them share less than half their audio, so one stretch of unknown music that happens to pass
the threshold is not enough. Its segment is then followed on that line: each new query window's
*support* is its similarity with the song at the line's position (the better of the two catalogue
windows around it), and each later decision that accepts the song on the line moves the line (a song
played a few per cent fast drifts against the stream; the speed is measured between the first and the
latest of those decisions). The segment stays open while decisions keep accepting it; it closes when
none has for ``forget_s`` seconds (talk, a pause or a drop-out shorter than that stays inside it),
when another song is confirmed, or when the stream ends. The open song confirmed again elsewhere (after a
pause, or on another line through music it repeats, a bar or a chorus) continues its segment on the new
line; a song played again after another song or an unknown stretch is a new segment.

Boundaries are back-dated to where the support changes, not to when the decision was taken (a decision
needs seconds of audio). With a support level ``tau`` between "the song" and "not the song", a new
segment starts at the window from which the support's excess over ``tau`` sums highest to the
present, and a segment ends at the window up to which its excess sums highest; when one song follows
another (a crossfade, a cut), the end of the first and the start of the second are chosen together,
as the split of the buffer's windows into "first song | unknown | second song" that sums the most.
``tau`` starts halfway between the song's median support over the confirming decision's audio and the
best other song's score, and each split is fitted twice: the second time with ``tau`` halfway between
the support's medians on either side of the first fit's boundary. A window's time is its centre (a
window covers ``win_s``). A song playing since before the buffer (more than ``window_s`` before its
confirmation) starts at the buffer's start.

Memory, all bounded by the settings, none by the recording's length: audio, ``4 x sr x (window_s +
block_s)`` bytes (the rolling buffer and the audio gathered before it is processed); the buffer's query
fingerprints, ``phases x window_s / hop_s`` of them; the candidate alignments, at most ``k x phases x
decide_s / hop_s`` (those proposed by the windows decided on), each with one similarity per buffer
window; the open segment's support over the buffer's windows. At the defaults with the shipped model,
about 1 MB (:meth:`Segmenter.nbytes`), beside the model, the index and the cache of catalogue rows
(16 MiB at most, :class:`fplib.catalogue.StoreRows`). Closed segments are yielded, never kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from fplib import audio, codes, streams
from fplib.listen import Decision, Matcher
from fplib.search import Recognizer


@dataclass(frozen=True)
class Segment:
    """A stretch of the recording: a catalogue song (``song``, its name, and ``song_id``) or an unknown
    stretch (``song`` None)."""

    start_s: float  # in the recording
    end_s: float
    song: str | None = None
    song_id: int | None = None
    offset_s: float | None = None  # where the song is at start_s
    confidence: float | None = None  # the best confidence among the decisions that named it
    threshold: float | None = None  # what that confidence was compared with

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_json(self) -> dict:
        """One JSON object: ``song`` (None for an unknown stretch), ``song_id``, ``start_s``, ``end_s``,
        ``offset_s``, ``confidence``, ``threshold``."""

        def r(x, n=3):
            return None if x is None else round(float(x), n)

        return {
            "song": self.song,
            "song_id": self.song_id,
            "start_s": r(self.start_s),
            "end_s": r(self.end_s),
            "offset_s": r(self.offset_s),
            "confidence": r(self.confidence, 4),
            "threshold": r(self.threshold, 4),
        }

    def __str__(self) -> str:
        span = f"{_clock(self.start_s)} - {_clock(self.end_s)}"
        if self.song is None:
            return f"{span}  unknown"
        return (
            f"{span}  {self.song} from {self.offset_s:.1f} s (confidence {self.confidence:.3f}, "
            f"threshold {self.threshold:.3f})"
        )


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m:2d}:{s:04.1f}"


class _Track:
    """A song followed on its line (position = ``pos_ref + speed x (t - t_ref)``), with its support over the
    buffer's query windows (a ring, window j at ``j % len(support)``)."""

    def __init__(self, song: int, t_ref: float, pos_ref: float, ring: int):
        self.song, self.t_ref, self.pos_ref, self.speed = song, t_ref, pos_ref, 1.0
        self.t0, self.pos0 = t_ref, pos_ref  # the first anchor: the speed is measured from it
        self.support = np.zeros(ring, np.float32)
        self.tau = 0.0  # the support level between "the song" and "not the song"
        self.start_j = 0  # the segment's first query window
        self.offset_s = 0.0  # the song's position at the segment's start
        self.start_s = 0.0
        self.confidence, self.threshold = -np.inf, 0.0
        self.last_accept = t_ref  # stream time of the latest decision that accepted the song on the line

    def position(self, t):
        return self.pos_ref + self.speed * (np.asarray(t, dtype=np.float64) - self.t_ref)

    def anchor(self, t: float, pos: float, min_baseline_s: float) -> None:
        """A decision put the song at ``pos`` at time ``t``: move the line there, and measure the speed
        from the first anchor once they are ``min_baseline_s`` apart (clipped to +-10 %)."""
        self.t_ref, self.pos_ref = t, pos
        if t - self.t0 >= min_baseline_s:
            self.speed = float(np.clip((pos - self.pos0) / (t - self.t0), 0.9, 1.1))


class Segmenter:
    """Feed a stream's audio (``float32`` mono at the catalogue's rate) with :meth:`feed`, then call
    :meth:`finish`; both return the :class:`Segment` s that closed, in order (or iterate
    :meth:`segments` over the chunks). The module's docstring says how segments are found, and the
    memory bound.

    ``rec``: the recogniser (model, index, catalogue, phases, decision and threshold, as
    :func:`fplib.search.recognizer_from_files` loads them). ``decide_s``: the recent audio each decision is
    taken on; ``window_s``: the rolling buffer (how far back a boundary can be placed); ``confirm``:
    consecutive accepting decisions (one a hop) that confirm a song; ``jump_s``: how far from a line a decision may
    put the song and still be on it; ``forget_s``: seconds without an accepting decision that close a
    segment; ``min_unknown_s``: shorter gaps between two songs are split between them, not reported;
    ``block_s``: audio gathered before it is processed (fingerprinted and searched in one batch; 0 for
    a live stream, to decide as soon as each hop arrives). The segments do not depend on it; at 4 query
    phases, 16 s (128 windows a network call) segmented a 10-minute recording 1.09x faster than 4 s
    (113x against 104x real time), 32 s no faster; the network's activations for 128 windows raise the
    process's peak memory (the long-recordings benchmark: 690 MB at 16 s, 538 MB at 8 s, both lengths).
    """

    def __init__(
        self,
        rec: Recognizer,
        decide_s: float = 6.0,
        window_s: float = 20.0,
        confirm: int = 8,
        jump_s: float = 1.5,
        forget_s: float = 6.0,
        min_unknown_s: float = 1.0,
        block_s: float = 16.0,
    ):
        if confirm < 1:
            raise ValueError(f"confirm must be >= 1, got {confirm}")
        if window_s < decide_s + confirm * rec.fe.hop_s + rec.fe.win_s:
            raise ValueError(f"window_s ({window_s}) must hold decide_s ({decide_s}) and confirm ({confirm}) hops")
        self.rec = rec
        self.matcher = Matcher(rec, window_s, lookahead_s=block_s, candidates_s=decide_s)
        self.decide_s, self.confirm, self.jump_s, self.forget_s = decide_s, confirm, jump_s, forget_s
        self.min_unknown_s = min_unknown_s
        self.block = int(round(block_s * rec.fe.sr))
        self.qhop_s = rec.query_fe.hop_s  # seconds between query windows
        self.ring = (self.matcher.max_windows + 2) * rec.phases  # query windows the buffer can hold, and more
        self.held: list[np.ndarray] = []  # audio gathered, not yet given to the matcher
        self.samples = self.held_n = 0  # samples received, and held
        self.open: _Track | None = None
        self.last: _Track | None = None  # the last closed song, where it ended (s, query window)
        self.last_end_s, self.last_end_j = 0.0, -1
        self.linger_s = decide_s + confirm * rec.fe.hop_s  # how long a song that ended stays in the decisions
        self.done_s = 0.0  # where the segments yielded so far end
        self.streak: list[tuple[Decision, float]] = []  # consecutive accepting decisions of a new song

    # -- the stream --------------------------------------------------------------------------
    def segments(self, chunks: Iterable[np.ndarray]) -> Iterator[Segment]:
        """Every segment of a stream, as it closes (the last ones when the stream ends)."""
        for x in chunks:
            yield from self.feed(x)
        yield from self.finish()

    def feed(self, chunk: np.ndarray) -> list[Segment]:
        """Add audio; returns the segments that closed."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self.held.append(chunk)
        self.samples += len(chunk)
        self.held_n += len(chunk)
        return self._process() if self.held_n >= self.block else []

    def finish(self) -> list[Segment]:
        """The stream ended: process what is held, close the open segment, and report the unknown end."""
        out = self._process()
        end_s = self.samples / self.rec.fe.sr
        if self.open is not None:
            js = self._buffer_windows()
            k1, _ = self._boundaries(js, self.open, None)
            last = int(js[0]) + k1 - 1
            close_s = self._end_time(last)
            if last == int(js[-1]) or end_s - close_s < self.min_unknown_s:
                close_s = end_s  # the song plays to the end (or too little is left to report)
            out += self._close(last, close_s)
        if end_s - self.done_s > 1e-6:
            out.append(Segment(self.done_s, end_s))
            self.done_s = end_s
        return out

    def _process(self) -> list[Segment]:
        x = np.concatenate(self.held) if self.held else np.zeros(0, np.float32)
        self.held, self.held_n = [], 0
        out: list[Segment] = []
        for _ in self.matcher.hops(x):
            out += self._hop()
        return out

    def nbytes(self) -> int:
        """Bytes held now in arrays: audio (buffer, waiting, gathered), the buffer's fingerprints, the
        candidates' similarities, the fingerprints searched ahead, the open and the last segment's support."""
        m = self.matcher
        n = m.buf.nbytes + m.pending.nbytes + sum(x.nbytes for x in self.held)
        for ph in m.phase:
            n += sum(a.nbytes for a in (ph.q, ph.song, ph.start, ph.count, ph.last, ph.active, ph.sims))
        n += sum(q.nbytes + ids.nbytes for q, ids in m.ahead.values())
        return n + sum(t.support.nbytes for t in (self.open, self.last) if t is not None)

    # -- deciding ----------------------------------------------------------------------------
    def _hop(self) -> list[Segment]:
        """The matcher added a hop: follow the open song, decide, confirm, close."""
        m, out = self.matcher, []
        now, a = m.time_s, self.open
        if a is not None and m.added:
            js = np.array([self._j(p, i) for p, i in m.added])
            a.support[js % self.ring] = self._support(a, js)
        dec = m.decision(m.first_for(self.decide_s))
        if dec is None or not dec.accepted:
            self.streak = []
        elif a is not None and self._on(a, dec, now):  # the open song goes on (and drifts)
            a.anchor(now - dec.heard_s / 2, dec.position_s - dec.heard_s / 2, 2 * self.decide_s)
            a.last_accept = now
            if dec.confidence > a.confidence:
                a.confidence, a.threshold = dec.confidence, dec.threshold
            self.streak = []
        elif self.last is not None and self._on(self.last, dec, now) and now - self.last_end_s < self.linger_s:
            self.streak = []  # the song that just ended, still in the decision's audio: not a new one
        else:
            if self.streak and not self._same(*self.streak[-1], dec, now):
                self.streak = []
            self.streak.append((dec, now))
            if len(self.streak) >= self.confirm:
                out += self._confirm(dec, now)
                self.streak = []
        if self.open is not None and now - self.open.last_accept >= self.forget_s:
            js = self._buffer_windows()
            k1, _ = self._boundaries(js, self.open, None)
            out += self._close(int(js[0]) + k1 - 1)
        return out

    def _on(self, tr: _Track, dec: Decision, now: float) -> bool:
        """The decision puts the track's song on its line."""
        return dec.song == tr.song and abs(dec.position_s - float(tr.position(now))) <= self.jump_s

    def _same(self, a: Decision, a_at: float, b: Decision, b_at: float) -> bool:
        """Same song, and b's position is where a's would have moved to by b's time."""
        return a.song == b.song and abs(a.position_s + (b_at - a_at) - b.position_s) <= self.jump_s

    def _confirm(self, dec: Decision, now: float) -> list[Segment]:
        """A new song (or the same song elsewhere) is confirmed: place its start, and the end of the open one."""
        m, P = self.matcher, self.rec.phases
        js = self._buffer_windows()
        j0 = int(js[0])
        b = _Track(dec.song, now - dec.heard_s / 2, dec.position_s - dec.heard_s / 2, self.ring)
        sb = self._support(b, js)
        fg = float(np.median(sb[js >= m.first_for(self.decide_s) * P]))  # the song, over the decision's audio
        b.tau = 0.5 * (fg + max(0.0, dec.runner_up))  # halfway to the best other song's score
        b.support[js % self.ring] = sb
        b.confidence, b.threshold, b.last_accept = dec.confidence, dec.threshold, now
        a = self.open
        if a is None:
            _, k2 = self._boundaries(js, None, b, min(max(0, self.last_end_j + 1 - j0), len(js) - 1))
            return self._open(b, j0 + k2)
        if a.song == b.song:
            # the open song confirmed elsewhere: resumed after a pause, or on another line through music it repeats
            # (a bar, a chorus: both lines are the song); either way it goes on, on the new line. A song played
            # again straight after itself is therefore one segment; played again after anything else, two.
            k1, _ = self._boundaries(js, a, None)
            _, k2 = self._boundaries(js, None, b, min(k1, len(js) - 1))
            a.support[js[k2:] % self.ring] = sb[k2:]
            a.t_ref, a.pos_ref, a.t0, a.pos0, a.last_accept = b.t_ref, b.pos_ref, b.t_ref, b.pos_ref, now
            if b.confidence > a.confidence:
                a.confidence, a.threshold = b.confidence, b.threshold
            return []
        k1, k2 = self._boundaries(js, a, b)
        end_s, start_s = self._end_time(j0 + k1 - 1), self._start_time(j0 + k2)
        if start_s - end_s < self.min_unknown_s:  # too short to report: split between them
            end_s = start_s = 0.5 * (end_s + start_s)
        return self._close(j0 + k1 - 1, end_s) + self._open(b, j0 + k2, start_s)

    # -- segments ----------------------------------------------------------------------------
    def _start_time(self, j: int) -> float:
        """Where a segment whose first query window is ``j`` starts: the window's centre, less half a query hop."""
        return 0.0 if j <= 0 else j * self.qhop_s + 0.5 * (self.rec.fe.win_s - self.qhop_s)

    def _end_time(self, j: int) -> float:
        """Where a segment whose last query window is ``j`` ends: the window's centre, plus half a query hop."""
        return max(0.0, j * self.qhop_s + 0.5 * (self.rec.fe.win_s + self.qhop_s))

    def _open(self, tr: _Track, j: int, start_s: float | None = None) -> list[Segment]:
        """Open ``tr``'s segment from query window ``j``; returns the unknown stretch before it, if any."""
        start_s = self._start_time(j) if start_s is None else start_s
        out = []
        if start_s - self.done_s >= self.min_unknown_s:
            out.append(Segment(self.done_s, start_s))
        else:
            start_s = self.done_s  # a gap too short to report belongs to the song
        length = self.rec.lengths[tr.song] * self.rec.fe.hop_s
        tr.start_j, tr.start_s = j, start_s
        tr.offset_s = float(np.clip(tr.position(start_s), 0.0, length))
        self.open, self.done_s = tr, start_s
        return out

    def _close(self, j: int, end_s: float | None = None) -> list[Segment]:
        """Close the open segment at query window ``j`` (or at ``end_s``)."""
        tr = self.open
        end_s = max(tr.start_s, self._end_time(j) if end_s is None else end_s)
        song = self.rec.songs[tr.song]
        seg = Segment(tr.start_s, end_s, song.name, song.id, tr.offset_s, float(tr.confidence), float(tr.threshold))
        self.open, self.last, self.last_end_s, self.last_end_j, self.done_s = None, tr, end_s, j, end_s
        return [seg]

    # -- windows and support -----------------------------------------------------------------
    def _j(self, p: int, i: int) -> int:
        return i * self.rec.phases + p

    def _buffer_windows(self) -> np.ndarray:
        """The query windows in the buffer, in time order (window j starts at ``j x qhop_s``)."""
        m = self.matcher
        last = max((self._j(p, ph.hi - 1) for p, ph in enumerate(m.phase) if ph.hi > m.first), default=-1)
        return np.arange(m.first * self.rec.phases, last + 1)

    def _support(self, tr: _Track, js: np.ndarray) -> np.ndarray:
        """Similarity of query windows ``js`` (in the buffer) with song ``tr.song`` at the line's position (the
        better of the two catalogue windows around it; 0 outside the song)."""
        if not len(js):
            return np.zeros(0, np.float32)
        m, P = self.matcher, self.rec.phases
        width = m.phase[0].width
        q = np.stack([m.phase[j % P].q[(j // P) % width] for j in js.tolist()])
        x = tr.position(js * self.qhop_s) / self.rec.fe.hop_s
        w = np.floor(x).astype(np.int64)[None, :] + np.arange(2)[:, None]
        vectors, inside = self.rec.aligned_windows(np.full(2, tr.song), w)
        sims = np.where(inside, codes.similarity(vectors, q[None], self.rec.kind), 0.0)
        return sims.max(axis=0).astype(np.float32)

    def _boundaries(self, js: np.ndarray, a: _Track | None, b: _Track | None, lo: int = 0) -> tuple[int, int]:
        """Where song A (open) ends and song B (confirmed) starts among the buffer's windows ``js``: ``(k1,
        k2)`` as :meth:`_split` finds them, B not before index ``lo`` without A. Fitted twice: the second
        time each song's level is re-placed halfway between its support's median inside its segment and
        outside it, as the first fit divides the buffer (where each side holds a second of windows)."""
        sa = None if a is None else a.support[js % self.ring]
        sb = None if b is None else b.support[js % self.ring]
        a_start = lo if a is None else int(a.start_j - js[0]) if a.start_j >= js[0] else -1  # -1: before js

        def split() -> tuple[int, int]:
            return self._split(None if a is None else sa - a.tau, a_start, None if b is None else sb - b.tau)

        k1, k2 = split()
        n = int(round(1.0 / self.qhop_s))
        if a is not None:
            a.tau = _level(a.tau, sa[max(0, a_start) : k1], sa[k1:], n)
        if b is not None:
            b.tau = _level(b.tau, sb[k2:], sb[max(0, a_start) : k2], n)
        return split()

    @staticmethod
    def _split(e_a: np.ndarray | None, a_start: int, e_b: np.ndarray | None) -> tuple[int, int]:
        """The best split of the buffer's windows into "A | unknown | B": ``(k1, k2)`` (indices, ``k1 <=
        k2``), A's windows before k1, B's from k2 on, maximising the sum of A's excess over its windows plus
        B's over its. A's segment starts at index ``a_start`` (-1: before the buffer) and keeps at least
        one window; without A (``e_a`` None) B starts at ``a_start`` or later; without B (``e_b`` None)
        k2 is past the end. B has at least one window."""
        n = len(e_a) if e_a is not None else len(e_b)
        prefix = np.full(n + 1, -np.inf)  # A's excess summed over its windows, if it ends before k1
        if e_a is None:
            prefix[max(0, a_start)] = 0.0
        else:
            lo = max(0, a_start)
            prefix[lo + 1 :] = np.cumsum(e_a[lo:])
            if a_start < 0:
                prefix[0] = 0.0  # A may end before the buffer
        if e_b is None:
            return int(np.argmax(prefix)), n
        suffix = np.full(n + 1, -np.inf)  # B's excess summed over its windows, if it starts at k2
        suffix[:n] = np.cumsum(e_b[::-1])[::-1]
        k2 = int(np.argmax(np.maximum.accumulate(prefix) + suffix))
        return int(np.argmax(prefix[: k2 + 1])), k2


def _level(tau: float, inside: np.ndarray, outside: np.ndarray, n: int) -> float:
    """Halfway between the median support inside a segment and outside it, when both have ``n`` windows
    (else ``tau``)."""
    if len(inside) < n or len(outside) < n:
        return tau
    return 0.5 * (float(np.median(inside)) + float(np.median(outside)))


def segment_file(
    recognizer: Recognizer, path: str | os.PathLike, progress: bool = False, **settings
) -> Iterator[Segment]:
    """The segments of an audio file of any length and any format FFmpeg decodes, streamed through a
    :class:`Segmenter` (``settings``: its own) as it is decoded, so memory does not grow with the file's
    length; with ``progress``, a progress bar with a time estimate (on standard error). An unusable file
    is an :class:`fplib.audio.AudioError` naming it, before anything is decoded."""
    from tqdm.auto import tqdm

    total = audio.info(path).duration
    seg = Segmenter(recognizer, **settings)
    sr = recognizer.fe.sr
    with (
        open(path, "rb") as f,
        tqdm(total=round(total, 1), unit="s", desc="segments", disable=not progress, bar_format=_BAR) as bar,
    ):
        for x in streams.decoded_chunks(f, sr):
            yield from seg.feed(x)
            bar.update(min(len(x) / sr, bar.total - bar.n))
        yield from seg.finish()


_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}, {rate_fmt}]"
