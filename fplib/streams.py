"""Audio streams as ``float32`` mono chunks at the front end's rate, read as they arrive: a microphone
(sounddevice), standard input or a file holding any audio FFmpeg decodes (PyAV), or raw interleaved
PCM; :class:`Source` says which and opens it, :func:`paced` delivers a file no faster than real time.
:mod:`fplib.listen` recognises what they carry.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import time
from collections.abc import Iterable, Iterator
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
    def open(self, sr: int = audio.SR) -> Iterator[Iterator[np.ndarray]]:
        """The stream as ``float32`` mono chunks at ``sr``, closed on leaving the block; a file that cannot be
        opened or read (``OSError``) is a :class:`ListenError` with the same message."""
        stream = None
        try:
            if self.source == "mic":
                yield microphone_chunks(sr, device=self.input_device)
                return
            stream = sys.stdin.buffer if self.source == "-" else open(self.source, "rb")
            chunks = (
                pcm_chunks(stream, self.fmt, self.rate, self.channels, sr) if self.fmt else decoded_chunks(stream, sr)
            )
            yield paced(chunks, sr) if self.realtime else chunks
        except OSError as e:
            raise ListenError(str(e)) from e
        finally:
            if stream is not None and stream is not sys.stdin.buffer:
                stream.close()


def paced(chunks: Iterable[np.ndarray], sr: int) -> Iterator[np.ndarray]:
    """Deliver chunks no faster than real time (a file streamed as if it were live)."""
    t0, n = time.monotonic(), 0
    for x in chunks:
        ahead = n / sr - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
        n += len(x)
        yield x
