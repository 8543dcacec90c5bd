"""Long recordings for ``long_recordings.py``: songs of a few minutes (or long excerpts) one after another, as a
radio show or a DJ set plays them, with the truth of what plays when.

Between two songs: a crossfade (3-8 s), a cut, a gap of silence, or speech (Debian's ``espeak-ng`` speaking a
presenter's line to a file: :class:`Speaker`); songs from outside the catalogue among them; some catalogue
songs played a few per cent fast (pitch moving with tempo, :func:`fplib.queries.resample_to`), some through a
room (:func:`fplib.augment.convolve_ir`), some with background noise (:func:`fplib.augment.add_noise`) or
talk over them, and one song played twice. All drawn from a seed (:func:`plan`), so a recording is made
again the same.

The truth (:func:`assemble`) is a list of segments covering the recording: a catalogue song (``song``, the
file's path relative to the data folder) with ``start_s``, ``end_s`` and ``offset_s`` (where in the song
the recording is at ``start_s``), and ``speed``; or an unknown stretch (``song`` None: speech, silence,
songs outside the catalogue; consecutive ones merged). Where two songs crossfade, the boundary is the
crossfade's middle, and ``start_range`` / ``end_range`` give the span over which a boundary is right (the
crossfade; a single instant for a cut, a gap or speech).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fplib import audio
from fplib.augment import add_noise, convolve_ir
from fplib.data import item_rng
from fplib.queries import resample_to

SR = audio.SR
SONG_RMS, SPEECH_RMS = 0.1, 0.08
LINES = (
    "You are listening to the long recordings benchmark.",
    "That was a great one. Stay with us, more music after this.",
    "Good evening, and welcome back to the show.",
    "Next up, something a little different.",
    "The weather tomorrow: rain in the morning, sunny in the afternoon.",
    "Thanks for all your messages tonight. Here is another track for you.",
    "It is seven minutes past the hour. Traffic is slow on the ring road.",
    "Coming up after the break: the top tracks of the week.",
    "This one goes out to everyone listening in the kitchen.",
    "Remember to call in with your requests. The lines are open now.",
    "And now a song I have not played for a long time.",
    "Keep it right here. We have a lot of music still to come tonight.",
)


class Speaker:
    """Speech from Debian's ``espeak-ng``, run from its unpacked packages in ``cache`` (fetched with ``apt-get
    download`` once, as :mod:`fplib.corpus_render` fetches its tools; nothing installed), or from PATH. Where it
    cannot be had (no apt), ``available`` is False and :meth:`say` gives babble noise instead."""

    def __init__(self, cache: Path):
        self.env, self.cmd, self.problem = dict(os.environ), None, ""
        if shutil.which("espeak-ng"):
            self.cmd = [shutil.which("espeak-ng")]
            return
        try:
            from fplib.corpus_packages import fetch, unpack
            from fplib.corpus_render import tool_packages

            fallback = ("espeak-ng", "libespeak-ng1", "espeak-ng-data", "libpcaudio0", "libsonic0")
            roots = [
                unpack(fetch(p, cache / "debs"), cache / "unpacked" / p) for p in tool_packages("espeak-ng", fallback)
            ]
            libs = sorted({str(so.parent) for r in roots for so in r.rglob("*.so*")})
            self.env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, os.environ.get("LD_LIBRARY_PATH", "")])
            data = next(r for r in roots if r.name == "espeak-ng-data")
            voices = next(data.rglob("espeak-ng-data/phontab")).parent.parent
            self.env["ESPEAK_DATA_PATH"] = str(voices)
            self.cmd = [str(roots[0] / "usr/bin/espeak-ng"), "--path", str(voices)]
            self.say_wav("test", 0)
        except Exception as e:  # noqa: BLE001 - any failure: speech is replaced by babble, said at the top
            self.cmd, self.problem = None, f"{type(e).__name__}: {str(e)[-200:]}"

    @property
    def available(self) -> bool:
        return self.cmd is not None

    def say_wav(self, text: str, seed: int) -> np.ndarray:
        rng = item_rng(seed, "voice")
        voice = ["en", "en-us", "en+f3", "en+m3", "en-gb-x-rp"][int(rng.integers(5))]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "speech.wav"
            args = ["-v", voice, "-s", str(int(rng.integers(140, 185))), "-p", str(int(rng.integers(30, 70)))]
            r = subprocess.run([*self.cmd, *args, "-w", str(out), text], env=self.env, capture_output=True, text=True)
            if r.returncode != 0 or not out.exists():
                raise RuntimeError(f"espeak-ng failed: {r.stderr.strip()[-200:]}")
            return audio.load(out, SR)

    def say(self, text: str, seed: int) -> np.ndarray:
        if self.cmd is not None:
            return self.say_wav(text, seed)
        from fplib.synth.noise import synth_noise

        return synth_noise("babble", seed, 0.07 * len(text), SR).astype(np.float32)


@dataclass
class Block:
    """One song's stretch in the recording (a catalogue song, or ``known`` False: one from outside it)."""

    path: str  # relative to the data folder
    known: bool
    offset_s: float  # where in the song the excerpt starts
    length_s: float  # seconds of the song played (of the song's own time)
    speed: float = 1.0
    room: int | None = None  # index into the rooms
    noise: int | None = None  # index into the noises
    snr_db: float | None = None
    talk: tuple[float, float] | None = None  # talk over the song: (start in the block, s; music-to-speech dB)
    repeat: bool = False  # the second time this song plays
    before: str = "start"  # how it follows the previous block: crossfade, cut, gap, speech
    crossfade_s: float = 0.0
    gap_s: float = 0.0
    speech: str | None = None


@dataclass
class Plan:
    seconds: float
    seed: int
    blocks: list[Block] = field(default_factory=list)


def plan(
    seconds: float,
    known: dict[str, float],
    unknown: dict[str, float],
    n_rooms: int,
    n_noises: int,
    seed: int,
    excerpt_s: tuple[float, float] = (60.0, 240.0),
) -> Plan:
    """Draw a recording of about ``seconds``: ``known`` / ``unknown`` map song paths to their durations.
    Catalogue songs are drawn without replacement (then again from the start when all have played), one of
    them played a second time; about one block in four is an unknown song."""
    rng = item_rng(seed, "long-recording", seconds)
    k_order = list(rng.permutation(sorted(known)))
    u_order = list(rng.permutation(sorted(unknown)))
    out, t, n, played = Plan(seconds, seed), 0.0, 0, []
    repeat_at = int(rng.integers(3, 6))  # the block that plays an earlier song again
    while t < seconds - 20.0:
        is_known = n == 0 or rng.random() >= 0.25 or not u_order
        rep = is_known and n == repeat_at and played
        if rep:
            path = played[int(rng.integers(len(played)))]
        elif is_known:
            if not k_order:
                k_order = list(rng.permutation(sorted(known)))
            path = k_order.pop()
        else:
            path = u_order.pop()
        dur = known[path] if is_known else unknown[path]
        lo, hi = excerpt_s if is_known else (30.0, 100.0)
        length = float(min(dur - 0.5, rng.uniform(lo, hi), max(20.0, seconds - t)))
        b = Block(path, is_known, float(rng.uniform(0.0, max(0.0, dur - 0.5 - length))), length, repeat=bool(rep))
        if is_known and rng.random() < 0.25:
            b.speed = float(1.0 + rng.uniform(0.02, 0.04))  # a few per cent fast
        if rng.random() < 0.35:
            b.room = int(rng.integers(n_rooms))
        if rng.random() < 0.5:
            b.noise, b.snr_db = int(rng.integers(n_noises)), float(rng.choice([20.0, 10.0, 5.0]))
        if is_known and rng.random() < 0.2 and length > 40.0:
            b.talk = (float(rng.uniform(5.0, length - 30.0)), float(rng.uniform(0.0, 6.0)))
        if n:
            how = rng.choice(["crossfade", "cut", "gap", "speech"], p=[0.4, 0.15, 0.15, 0.3])
            b.before = str(how)
            if how == "crossfade":
                b.crossfade_s = float(rng.uniform(3.0, 8.0))
            elif how == "gap":
                b.gap_s = float(rng.uniform(1.0, 5.0))
            elif how == "speech":
                b.speech = str(LINES[int(rng.integers(len(LINES)))])
        if is_known:
            played.append(path)
        out.blocks.append(b)
        t += length / b.speed - b.crossfade_s + b.gap_s + (8.0 if b.speech else 0.0)
        n += 1
    # every recording has a song played fast and one under talk (drawn apart, so the rest stays as drawn)
    firsts = [b for b in out.blocks if b.known and not b.repeat]
    forced = item_rng(seed, "long-recording forced", seconds)
    if firsts and not any(b.speed != 1.0 for b in firsts):
        firsts[min(1, len(firsts) - 1)].speed = float(1.0 + forced.uniform(0.02, 0.04))
    talkable = [b for b in firsts if b.length_s > 40.0]
    if talkable and not any(b.talk for b in firsts):
        b = talkable[-1]
        b.talk = (float(forced.uniform(5.0, b.length_s - 30.0)), float(forced.uniform(0.0, 6.0)))
    return out


def _rms(x: np.ndarray, target: float) -> np.ndarray:
    r = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x * (target / r)).astype(np.float32) if r > 0 else x


def _noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    reps = int(np.ceil(len(x) / len(noise)))
    n = np.tile(noise, reps)[: len(x)]
    return add_noise(torch.from_numpy(x)[None], torch.from_numpy(n)[None], torch.tensor([snr_db])).numpy()[0]


def assemble(
    p: Plan, data: Path, rooms: list[np.ndarray], noises: list[np.ndarray], speaker: Speaker
) -> tuple[np.ndarray, list[dict], list[dict]]:
    """The recording (mono at :data:`SR`), its truth (the module's docstring) and the blocks as played."""
    pieces, events = [], []  # (start sample, audio); events: (start, end, block index / None, kind)
    prev_end = 0.0
    for i, b in enumerate(p.blocks):
        wav = audio.load(data / b.path, SR, offset=b.offset_s, duration=b.length_s)
        if b.speed != 1.0:
            wav = resample_to(wav, int(round(len(wav) / b.speed)))
        wav = _rms(wav, SONG_RMS)
        if b.talk is not None:
            words = speaker.say(" ".join(LINES[(i + k) % len(LINES)] for k in range(3)), p.seed * 1000 + i)
            at = int(b.talk[0] * SR)
            words = words[: max(0, len(wav) - at)]
            wav[at : at + len(words)] += _rms(words, SONG_RMS * 10 ** (-b.talk[1] / 20))
        if b.room is not None:
            wav = convolve_ir(torch.from_numpy(wav)[None], torch.from_numpy(rooms[b.room])[None]).numpy()[0]
        if b.noise is not None:
            wav = _noise(wav, noises[b.noise], b.snr_db)
        start = prev_end
        if b.before == "crossfade":
            start = prev_end - b.crossfade_s
            n = int(round(b.crossfade_s * SR))
            pieces[-1][1][-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
            wav[:n] *= np.linspace(0.0, 1.0, n, dtype=np.float32)
        elif b.before == "gap":
            start = prev_end + b.gap_s
            events.append((prev_end, start, None, "silence"))
        elif b.before == "speech":
            words = _rms(speaker.say(b.speech, p.seed * 1000 + i), SPEECH_RMS)
            s0 = prev_end + 0.5
            pieces.append((int(round(s0 * SR)), words))
            start = s0 + len(words) / SR + 0.5
            events.append((prev_end, start, None, "speech"))
        start = round(start * SR) / SR
        pieces.append((int(round(start * SR)), wav.astype(np.float32)))
        end = start + len(wav) / SR
        events.append((start, end, i, "song" if b.known else "unknown song"))
        prev_end = end
    total = max(s + len(x) for s, x in pieces)
    out = np.zeros(total, np.float32)
    for s, x in pieces:
        out[s : s + len(x)] += x
    np.clip(out, -1.0, 1.0, out=out)
    return out, truth_of(p, events, total / SR), [asdict(b) for b in p.blocks]


def truth_of(p: Plan, events: list, total_s: float) -> list[dict]:
    """Truth segments covering ``[0, total_s]`` (the module's docstring)."""
    songs = []
    for k, (s, e, i, kind) in enumerate(events):
        if kind != "song":
            continue
        b = p.blocks[i]
        start, start_range = s, (s, s)
        nxt = next((ev for ev in events[k + 1 :] if ev[2] is not None), None)
        end, end_range = e, (e, e)
        if b.before == "crossfade":
            start, start_range = s + b.crossfade_s / 2, (s, s + b.crossfade_s)
        if nxt is not None and p.blocks[nxt[2]].before == "crossfade" and nxt[0] < e:
            end, end_range = (nxt[0] + e) / 2, (nxt[0], e)
        songs.append(
            {
                "song": b.path,
                "start_s": round(start, 3),
                "end_s": round(end, 3),
                "offset_s": round(b.offset_s + b.speed * (start - s), 3),
                "speed": round(b.speed, 4),
                "start_range": [round(x, 3) for x in start_range],
                "end_range": [round(x, 3) for x in end_range],
                "tags": tags(b),
            }
        )
    out, t = [], 0.0
    for seg in songs:
        if seg["start_s"] - t > 1e-3:
            out.append(_unknown(t, seg["start_s"], events))
        out.append(seg)
        t = seg["end_s"]
    if total_s - t > 1e-3:
        out.append(_unknown(t, total_s, events))
    return out


def _unknown(s: float, e: float, events: list) -> dict:
    kinds = sorted({kind for a, b, _, kind in events if kind != "song" and a < e and b > s}) or ["silence"]
    return {"song": None, "start_s": round(s, 3), "end_s": round(e, 3), "offset_s": None, "what": kinds}


def tags(b: Block) -> list[str]:
    """What makes a block hard, for recall per kind of segment."""
    out = []
    if b.speed != 1.0:
        out.append("fast")
    if b.talk is not None:
        out.append("talk over")
    if b.room is not None:
        out.append("room")
    if b.snr_db is not None and b.snr_db <= 5.0:
        out.append("noise 5 dB")
    if b.before == "crossfade":
        out.append("crossfade in")
    if b.repeat:
        out.append("played twice")
    return out or ["plain"]
