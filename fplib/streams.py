"""Audio streams as ``float32`` mono chunks at the front end's rate, read as they arrive: a microphone
(sounddevice), standard input or a file holding any audio FFmpeg decodes (PyAV), or raw interleaved
PCM; :class:`Source` says which and opens it, :func:`paced` delivers a file no faster than real time.
:mod:`fplib.listen` recognises what they carry. Raw PCM, which has no header, is checked for signs of a
misreading as it is read (:func:`misread_signs`, :func:`other_readings`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO

import numpy as np
import soxr

from fplib import audio

PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


class ListenError(RuntimeError):
    """A stream that cannot be listened to (no microphone support, undecodable input ...)."""


def pcm_chunks(
    f: BinaryIO, fmt: str, rate: int, channels: int, sr: int = audio.SR, block_s: float = 0.25
) -> Iterator[np.ndarray]:
    """Raw interleaved PCM (``s16le`` or ``f32le``) from a binary stream -> mono chunks at ``sr``."""
    if fmt not in PCM_FORMATS:
        raise ListenError(f"unknown PCM format {fmt!r}; use one of {', '.join(PCM_FORMATS)}")
    if rate <= 0 or channels <= 0:
        raise ListenError(f"--rate and --channels must be positive, got {rate} and {channels}")
    dtype = PCM_FORMATS[fmt]
    frame = dtype.itemsize * channels
    block = max(1, int(rate * block_s)) * frame
    resampler = None if rate == sr else _soxr_stream(rate, sr)
    rest = b""
    while True:
        data = _read(f, block)
        data, eof = rest + data, not data
        usable = len(data) - len(data) % frame
        rest = data[usable:]
        x = np.frombuffer(data[:usable], dtype=dtype).astype(np.float32)
        if dtype.kind == "i":
            x /= 32768.0
        x = x.reshape(-1, channels).mean(axis=1) if channels > 1 else x
        if resampler is not None:
            x = resampler.resample_chunk(x, last=eof)
        if x.size:
            yield x.astype(np.float32, copy=False)
        if eof:
            return


def _read(f: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: what is available as soon as there is some (a live pipe), b"" at the end."""
    read1 = getattr(f, "read1", None)
    return read1(n) if read1 is not None else f.read(n)


def _soxr_stream(rate: int, sr: int):
    return soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")


def decoded_chunks(f: BinaryIO, sr: int = audio.SR) -> Iterator[np.ndarray]:
    """Any container/codec FFmpeg reads (wav, flac, ogg, mp3, ...) from a binary stream, decoded as it
    arrives (PyAV) -> mono chunks at ``sr``."""
    try:
        import av  # optional (the av extra); imported here so that a missing one is a clear error
    except ImportError:
        raise ListenError(
            "decoding audio on standard input needs PyAV (pip install av); or send raw PCM with "
            "--format s16le|f32le --rate R --channels C"
        ) from None
    try:
        container = av.open(f, mode="r")
    except av.FFmpegError as e:
        raise ListenError(f"standard input is not a stream FFmpeg can decode ({e}); raw PCM needs --format") from None
    with container:
        if not container.streams.audio:
            raise ListenError("the input has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        except av.FFmpegError as e:
            print(f"warning: decoding stopped: {e}", file=sys.stderr)
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)


def microphone_chunks(
    sr: int = audio.SR, device: int | str | None = None, block_s: float = 0.25
) -> Iterator[np.ndarray]:
    """The default (or the given) input device through sounddevice (PortAudio), mono at ``sr``."""
    try:
        import sounddevice as sd  # optional, and needs the PortAudio library: only the microphone uses it
    except ImportError:
        raise ListenError(
            "listening to a microphone needs the sounddevice package (pip install sounddevice); "
            "or pipe audio in: ... | listen -"
        ) from None
    except OSError as e:  # sounddevice imports but finds no PortAudio library
        raise ListenError(
            f"listening to a microphone needs the PortAudio library ({e}): install it (e.g. "
            f"apt install libportaudio2, brew install portaudio), or pipe audio in: ... | listen -"
        ) from None
    try:
        rate = int(sd.query_devices(device, "input")["default_samplerate"])
    except (ValueError, sd.PortAudioError) as e:
        raise ListenError(f"no usable input device ({e}); list them with: python -m sounddevice") from None
    blocks: queue.Queue[np.ndarray] = queue.Queue()
    overflowed = []

    def callback(indata, frames, t, status):
        if status.input_overflow:
            overflowed.append(1)
        blocks.put(indata[:, 0].copy())

    resampler = None if rate == sr else _soxr_stream(rate, sr)
    try:
        stream = sd.InputStream(
            samplerate=rate,
            channels=1,
            dtype="float32",
            device=device,
            blocksize=int(rate * block_s),
            callback=callback,
        )
    except sd.PortAudioError as e:
        raise ListenError(f"cannot open the input device ({e})") from None
    with stream:
        while True:
            x = blocks.get()
            if overflowed:
                print("warning: audio input overflowed (processing is slower than real time)", file=sys.stderr)
                overflowed.clear()
            yield resampler.resample_chunk(x) if resampler is not None else x


# -- raw PCM read as it was written? ----------------------------------------------------------------
# Raw PCM has no header: a wrong --format, --rate or --channels gives audio that is not what was sent, and
# recognising it names nothing, or a wrong song. Two checks say so (as warnings on standard error): the
# samples of the first seconds (:func:`misread_signs`: signs that no recording shows when read as
# written), and, with a recogniser, the stream's first seconds read as other formats, rates and channel
# counts (:func:`other_readings`): a reading that names a song far more confidently than the one given.

SIGNS_S = 3.0  # seconds of raw PCM the sample checks read
READINGS_AT_S = (10.0, 40.0)  # stream seconds (as declared) after which other readings are tried
READING_S = 8.0  # seconds of each reading recognised
COMMON_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
_HEAD_MAX = 32 << 20  # bytes of the stream's start kept for the checks


def pcm_samples(data: bytes, fmt: str, channels: int) -> np.ndarray:
    """Raw interleaved PCM bytes as ``float32 [frames, channels]`` (integers scaled to [-1, 1); an
    incomplete last frame is left out)."""
    dtype = PCM_FORMATS[fmt]
    frame = dtype.itemsize * channels
    x = np.frombuffer(data[: len(data) - len(data) % frame], dtype=dtype).astype(np.float32)
    if dtype.kind == "i":
        x /= 32768.0
    return x.reshape(-1, channels)


def misread_signs(frames: np.ndarray, fmt: str) -> tuple[str | None, list[str]]:
    """``(error, warnings)``: what the first seconds of raw PCM (``float32 [frames, channels]`` as read with
    ``fmt`` and the channel count given, :func:`pcm_samples`) show of a misreading. Each sign is one that
    recordings read as they were written do not show, with a wide margin (measured on music, speech-like
    and synthetic signals at 8 to 48 kHz, mono and stereo):

    * ``f32le`` samples NaN, infinite or beyond +-1e10 (full scale is +-1; floats scaled like 32-bit
      integers reach 2e9) in more than 5 % of the samples: integers read as floats (an error: no recording
      has them; 16-bit audio read so has 25 to 55 % of them);
    * ``s16le`` samples of which every other one lies in [0.30, 0.50) or [-0.70, -0.50) of full scale:
      the upper halves (sign, exponent) of 32-bit floats;
    * one channel whose every other sample nearly repeats the one before it: two channels read as one;
    * two channels whose second sample lies between the frame's first and the next frame's first, much
      nearer to both than to the previous frame's: one channel's consecutive samples read as two.
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.size == 0:
        return None, []
    if fmt == "f32le":
        absurd = ~np.isfinite(x) | (np.abs(np.nan_to_num(x, nan=np.inf)) > 1e10)
        if absurd.mean() > 0.05:
            return (
                f"{absurd.mean():.0%} of the samples are NaN, infinite or beyond +-1e10 (full scale is +-1): "
                f"not f32le audio (s16le? check --format)"
            ), []
        return None, _channel_signs(x)
    flat = x.reshape(-1)
    for p in (0, 1):
        v = flat[p::2]
        v = v[v != 0]
        if v.size >= 1000 and np.mean(((v >= 0.30) & (v < 0.50)) | ((v >= -0.70) & (v < -0.50))) >= 0.9:
            return None, [
                "every other sample lies at 0.3-0.7 of full scale, as the upper halves of 32-bit floats do: "
                "f32le read as s16le? (check --format)"
            ]
    return None, _channel_signs(x)


def _mean_sq(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.square(a - b, dtype=np.float64)))


def _channel_signs(x: np.ndarray) -> list[str]:
    n = x.shape[0]
    if x.shape[1] == 1 and n >= 1000:  # two channels read as one: a, b, a, b ... with b_k near a_k
        s = x[:, 0]
        m = n // 2 * 2
        within, across = _mean_sq(s[1:m:2], s[0:m:2]), _mean_sq(s[2:m:2], s[1 : m - 1 : 2])
        if max(within, across) > 1e-12 and min(within, across) < 0.25 * max(within, across):
            return [
                "every other sample nearly repeats the one before it, as two interleaved channels of one "
                "recording do: 2 channels read as 1? (check --channels)"
            ]
    if x.shape[1] == 2 and n >= 1000:  # one channel read as two: R_k between L_k and L_k+1
        left, right = x[:, 0], x[:, 1]
        to_next = _mean_sq(right[1:-1], left[2:])
        to_same = _mean_sq(right[1:-1], left[1:-1])
        to_prev = _mean_sq(right[1:-1], left[:-2])
        if to_prev > 1e-12 and max(to_next, to_same) < 0.3 * to_prev and 0.5 < to_next / max(to_same, 1e-30) < 2:
            return [
                "each frame's second sample lies between its first and the next frame's, as consecutive samples "
                "of one channel do: 1 channel read as 2? (check --channels)"
            ]
    return []


@dataclass(frozen=True)
class Reading:
    """How raw PCM was read (``fmt``, ``rate``, ``channels``) and what a recogniser made of its start: the
    best song's name (None: nothing), the confidence, the threshold and whether it was accepted."""

    fmt: str
    rate: int
    channels: int
    song: str | None
    confidence: float
    threshold: float
    accepted: bool
    confirmed: bool = False  # the song also named by each half of the audio, in step (read_as's confirm)

    @property
    def flags(self) -> str:
        return f"--format {self.fmt} --rate {self.rate} --channels {self.channels}"

    @property
    def convincing(self) -> bool:
        """Accepted with at least twice the confidence the threshold asks for (a misreading is tried in up
        to 32 ways: one of them passing the threshold alone could be chance, as calibrated)."""
        return self.accepted and self.confidence >= 2 * self.threshold


def read_as(
    data: bytes, fmt: str, rate: int, channels: int, recognizer, seconds: float = READING_S, confirm: bool = False
) -> Reading | None:
    """The start of raw PCM ``data`` read as ``fmt`` / ``rate`` / ``channels``, recognised (its first
    ``seconds``); None when that reading holds under 2 s, or absurd samples. With ``confirm``, a convincing
    answer is also checked on each half of that audio (:attr:`Reading.confirmed`)."""
    x = pcm_samples(data[: int(seconds * rate) * PCM_FORMATS[fmt].itemsize * channels], fmt, channels)
    if x.shape[0] < 2 * rate or (fmt == "f32le" and misread_signs(x, fmt)[0]):
        return None
    sr = recognizer.fe.sr
    mono = x.mean(axis=1) if channels > 1 else x[:, 0]
    wav = np.ascontiguousarray(mono if rate == sr else soxr.resample(mono, rate, sr, quality="HQ"), np.float32)
    r = recognizer.recognize(wav)
    if r.threshold is None:
        return None
    best = r.matches[0] if r.matches else None
    reading = Reading(
        fmt, rate, channels, best and best.name, float(r.confidence or 0.0), float(r.threshold), bool(r.in_database)
    )
    if confirm and reading.convincing:
        reading = replace(reading, confirmed=_halves_agree(wav, sr, recognizer, best.name))
    return reading


def _halves_agree(wav: np.ndarray, sr: int, recognizer, song: str) -> bool:
    """Whether each half of ``wav`` (2 s or more) is recognised as ``song``, at offsets as far apart as the
    halves are: a misreading that names a song by chance does not name it twice, in step."""
    half = len(wav) // 2
    if half < 2 * sr:
        return False
    a, b = recognizer.recognize(wav[:half]), recognizer.recognize(wav[half:])
    if not (a.in_database and b.in_database and a.matches[0].name == song == b.matches[0].name):
        return False
    return abs(b.matches[0].offset_s - a.matches[0].offset_s - half / sr) <= 1.0


def other_readings(
    data: bytes, fmt: str, rate: int, channels: int, recognizer
) -> tuple[Reading | None, Reading | None]:
    """``(as given, better)``: the start of raw PCM ``data`` recognised as read with the flags given, and
    the reading (format, one of :data:`COMMON_RATES` or the rate given, 1 or 2 channels or the count given)
    that names a song convincingly (:attr:`Reading.convincing`), on each half of its audio too
    (:attr:`Reading.confirmed`), and with at least twice the confidence of the reading given (None: none
    does); of several, the one that changes fewest flags among those within 20 % of the most confident (raw
    PCM read as f32le at 16 kHz mono, or at 8 kHz stereo, is nearly the same audio). When the reading given
    is itself convincing, no other is tried."""
    given = read_as(data, fmt, rate, channels, recognizer)
    if given is not None and given.convincing:
        return given, None
    found = []
    for f in PCM_FORMATS:
        for c in sorted({1, 2, channels}):
            for r in sorted({*COMMON_RATES, rate}):
                if (f, r, c) == (fmt, rate, channels):
                    continue
                other = read_as(data, f, r, c, recognizer, confirm=True)
                if other is None or not other.confirmed:
                    continue
                if given is not None and given.accepted and other.confidence < 2 * given.confidence:
                    continue
                found.append(other)
    if not found:
        return given, None
    top = max(r.confidence for r in found)

    def changes(r: Reading) -> tuple[int, float]:
        return (r.fmt != fmt) + (r.rate != rate) + (r.channels != channels), -r.confidence

    return given, min((r for r in found if r.confidence >= 0.8 * top), key=changes)


class _Recorded:
    """A binary stream that keeps the first ``limit`` bytes read from it (``head``) and counts them all."""

    def __init__(self, f: BinaryIO, limit: int):
        self.f, self.limit, self.head, self.total = f, limit, bytearray(), 0

    def read1(self, n: int) -> bytes:
        data = _read(self.f, n)
        self.total += len(data)
        if len(self.head) < self.limit:
            self.head += data[: self.limit - len(self.head)]
        return data


class Source:
    """Where :func:`run` reads a stream: ``"mic"`` (the input device ``input_device``, a number or a name;
    default: the system's), ``"-"`` (standard input) or a file (a named pipe too). Standard input and
    files hold any audio FFmpeg decodes, or raw interleaved PCM of sample format ``fmt`` (``s16le``,
    ``f32le``) at ``rate`` Hz with ``channels`` channels; with ``realtime`` they are delivered no faster
    than real time, as if live. Checked when made, before anything is opened (``ValueError``); opened by
    :meth:`open`."""

    def __init__(
        self,
        source: str | os.PathLike = "mic",
        fmt: str | None = None,
        rate: int | None = None,
        channels: int = 1,
        input_device: int | str | None = None,
        realtime: bool = True,
    ):
        if fmt and not rate:
            raise ValueError("--format needs --rate (raw PCM has no header to read it from)")
        self.source, self.fmt, self.rate, self.channels, self.realtime = str(source), fmt, rate, channels, realtime
        self.input_device = int(input_device) if str(input_device).isdigit() else input_device

    @contextlib.contextmanager
    def open(self, sr: int = audio.SR, recognizer=None, warn=None) -> Iterator[Iterator[np.ndarray]]:
        """The stream as ``float32`` mono chunks at ``sr``, closed on leaving the block; a file that cannot be
        opened or read (``OSError``) is a :class:`ListenError` with the same message, and so is a stream that
        holds no audio at all ("no audio on standard input").

        Raw PCM is checked as it is read: its first seconds for signs of a misreading
        (:func:`misread_signs`), and with ``recognizer`` (a :class:`fplib.search.Recognizer`) its start read
        as other formats, rates and channel counts (:func:`other_readings`) once :data:`READINGS_AT_S` seconds
        have come without a convincing answer. What they find is given to ``warn`` (default: printed on
        standard error as ``warning: ...``); samples that no recording has are a :class:`ListenError`."""
        stream = None
        where = "standard input" if self.source == "-" else self.source
        try:
            if self.source == "mic":
                yield microphone_chunks(sr, device=self.input_device)
                return
            stream = sys.stdin.buffer if self.source == "-" else open(self.source, "rb")
            if self.fmt:
                limit = min(
                    _HEAD_MAX, int(max(READINGS_AT_S) * self.rate) * PCM_FORMATS[self.fmt].itemsize * self.channels
                )
                recorded = _Recorded(stream, limit)
                chunks = self._checked(
                    pcm_chunks(recorded, self.fmt, self.rate, self.channels, sr), recorded, where, recognizer, warn
                )
            else:
                peek = getattr(stream, "peek", None)
                if peek is not None and not peek(1):
                    raise ListenError(f"no audio on {where}")
                chunks = _not_empty(decoded_chunks(stream, sr), where)
            yield paced(chunks, sr) if self.realtime else chunks
        except OSError as e:
            raise ListenError(str(e)) from e
        finally:
            if stream is not None and stream is not sys.stdin.buffer:
                stream.close()

    def _checked(self, chunks: Iterator[np.ndarray], recorded: _Recorded, where: str, recognizer, warn):
        """``chunks`` of raw PCM passed on, with the checks of :meth:`open` made as the bytes arrive."""
        warn = warn or _warn
        fmt, rate, channels = self.fmt, self.rate, self.channels
        frame = PCM_FORMATS[fmt].itemsize * channels
        signs_at = int(SIGNS_S * rate) * frame
        pending = [int(s * rate) * frame for s in READINGS_AT_S] if recognizer is not None else []
        state = {"signs": False, "tried": 0}

        def signs() -> None:
            state["signs"] = True
            error, warnings = misread_signs(pcm_samples(bytes(recorded.head[:signs_at]), fmt, channels), fmt)
            if error:
                raise ListenError(f"{where}: {error}")
            for w in warnings:
                warn(f"{where} may be misread ({fmt}, {rate} Hz, {channels} channel(s) given): {w}")

        def readings() -> bool:
            """Whether it is settled: the reading given is convincing, or another one was found."""
            state["tried"] = len(recorded.head)
            given, better = other_readings(bytes(recorded.head), fmt, rate, channels, recognizer)
            if better is not None:
                said = (
                    f"it is {given.song} with confidence {given.confidence:.2f}"
                    if given is not None and given.accepted
                    else "nothing is recognised"
                )
                warn(
                    f"{where} may be misread: read as {better.flags} it is {better.song} (confidence "
                    f"{better.confidence:.2f}, threshold {better.threshold:.2f}); as given "
                    f"(--format {fmt} --rate {rate} --channels {channels}) {said}. Check --format, --rate and "
                    f"--channels"
                )
                return True
            return given is not None and given.convincing

        for x in chunks:
            if not state["signs"] and recorded.total >= signs_at:
                signs()
            while pending and recorded.total >= pending[0]:
                pending.pop(0)
                if readings():
                    pending = []
            yield x
        if recorded.total < frame:
            raise ListenError(f"no audio on {where}")
        if not state["signs"]:
            signs()
        if pending and len(recorded.head) > state["tried"] and recorded.total >= 2 * rate * frame:
            readings()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _not_empty(chunks: Iterator[np.ndarray], where: str) -> Iterator[np.ndarray]:
    """``chunks`` passed on; :class:`ListenError` at their end if there were no samples at all."""
    n = 0
    for x in chunks:
        n += len(x)
        yield x
    if n == 0:
        raise ListenError(f"no audio on {where}")


def paced(chunks: Iterable[np.ndarray], sr: int) -> Iterator[np.ndarray]:
    """Deliver chunks no faster than real time (a file streamed as if it were live)."""
    t0, n = time.monotonic(), 0
    for x in chunks:
        ahead = n / sr - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
        n += len(x)
        yield x
