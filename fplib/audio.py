"""Audio I/O: the one module that decodes and writes audio files.

Everything is returned as float32 mono at the requested rate (8 kHz by default). Decoding is done by
soundfile (libsndfile: wav, flac, ogg vorbis, opus, mp3, aiff) and, for what libsndfile cannot read
(m4a/aac as phones record, mp4, webm, wma, ...), by PyAV (FFmpeg's decoders, bundled with the ``av``
wheel); resampling by soxr. A segment of a long file is read by seeking, without decoding the whole
file (PyAV formats are decoded from the start up to the segment's end).

Bad files raise :class:`AudioError`, whose message names the file and the reason; batch jobs catch it,
skip the file, and report it at the end.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from fplib.errors import BadFileError, file_problem
from fplib.storage import atomic_path

SR = 8000
SNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
# decoded by PyAV (FFmpeg): the usual phone, video and streaming containers
AV_EXTENSIONS = (
    ".m4a",
    ".aac",
    ".mp4",
    ".m4b",
    ".3gp",
    ".webm",
    ".weba",
    ".mka",
    ".mkv",
    ".wma",
    ".asf",
    ".amr",
    ".ac3",
    ".caf",
    ".mov",
)
AUDIO_EXTENSIONS = SNDFILE_EXTENSIONS + AV_EXTENSIONS
# Read by libsndfile, but decoded by FFmpeg (PyAV) when the whole file is read: FFmpeg's Opus decoder
# ran 1.9x libsndfile's (libopus) here on 44.1 kHz stereo music, with the same length and alignment.
# Segments stay with libsndfile, which seeks (PyAV decodes from the start).
_WHOLE_BY_AV = (".opus",)
# what audio.write encodes through PyAV: extension -> (container format, codec)
_AV_WRITERS = {".m4a": ("ipod", "aac"), ".mp4": ("mp4", "aac"), ".aac": ("adts", "aac"), ".webm": ("webm", "libopus")}
# A segment is read with this much extra audio on each side so that the resampler's edge transients
# fall outside the samples returned (soxr's HQ filter is a few ms long).
_RESAMPLE_MARGIN_S = 0.02
# Below this peak level (dBFS) a signal is called silent.
SILENCE_DBFS = -70.0


class AudioError(BadFileError):
    """A file that cannot be used as audio; ``str(err)`` is ``"<path>: <reason>"``."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sr: int  # Hz, the file's own rate
    channels: int
    frames: int  # at the file's own rate
    format: str

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.frames / self.sr


def info(path: str | os.PathLike) -> AudioInfo:
    """Header information of an audio file; raises :class:`AudioError` if it is not usable audio."""
    path = Path(path)
    problem = file_problem(path)  # before opening: a named pipe would block, a folder is no file
    if problem:
        raise AudioError(path, problem.replace("not a file", "not an audio file"))
    if _uses_av(path):
        return _av_info(path)
    try:
        i = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(path, f"not a decodable audio file ({_decoder_reason(e)})") from None
    if i.channels < 1:
        raise AudioError(path, "has no audio channels")
    if i.samplerate <= 0:
        raise AudioError(path, f"invalid sample rate {i.samplerate}")
    if i.frames <= 0:
        raise AudioError(path, "contains no audio samples")
    return AudioInfo(str(path), int(i.samplerate), int(i.channels), int(i.frames), str(i.format))


def load(
    path: str | os.PathLike,
    sr: int = SR,
    offset: float = 0.0,
    duration: float | None = None,
    min_duration: float = 0.0,
    allow_silent: bool = False,
) -> np.ndarray:
    """Decode ``path`` to ``float32 [T]`` mono at ``sr`` Hz.

    ``offset``/``duration`` (seconds) select a segment, read by seeking; the result then has exactly
    ``round(duration * sr)`` samples, and a segment reaching past the end of the file is an error.
    Multi-channel audio is averaged to mono (if the channels cancel out, the loudest one is used).
    Raises :class:`AudioError` for missing, empty, undecodable, too-short, NaN-bearing or (unless
    ``allow_silent``) silent audio.
    """
    meta = info(path)
    if meta.duration < min_duration:
        raise AudioError(path, f"too short: {meta.duration:.2f} s, at least {min_duration:.2f} s needed")
    if offset < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"{path}: bad segment offset={offset} duration={duration}")
    n_out = None if duration is None else int(round(duration * sr))
    end = meta.duration if duration is None else offset + duration
    if end > meta.duration + 1e-6:
        raise AudioError(
            path, f"segment {offset:.2f}-{end:.2f} s reaches past the end of the file ({meta.duration:.2f} s)"
        )

    resample = meta.sr != sr
    margin = _RESAMPLE_MARGIN_S if resample and duration is not None else 0.0
    start_s = max(0.0, offset - margin)
    start = int(math.floor(start_s * meta.sr))
    stop = meta.frames if duration is None else min(meta.frames, int(math.ceil((end + margin) * meta.sr)))
    if _uses_av(path) or (Path(path).suffix.lower() in _WHOLE_BY_AV and duration is None and start == 0):
        data = _av_decode(path, start, None if duration is None else stop)
    else:
        try:
            with sf.SoundFile(str(path)) as f:
                if start:
                    f.seek(start)
                data = f.read(stop - start, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(path, f"decoding failed ({_clean(e)})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "decoded to no samples")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")

    wav = _downmix(data)
    if resample:
        wav = soxr.resample(wav, meta.sr, sr, quality="HQ").astype(np.float32, copy=False)
    if n_out is not None:
        skip = int(round((offset - start / meta.sr) * sr))
        wav = wav[skip : skip + n_out]
        if wav.shape[0] < n_out:  # the decoder returned slightly fewer frames than the header said
            wav = np.pad(wav, (0, n_out - wav.shape[0]))
    if not allow_silent and peak_dbfs(wav) < SILENCE_DBFS:
        raise AudioError(path, f"silent (peak {peak_dbfs(wav):.1f} dBFS, below {SILENCE_DBFS:.0f} dBFS)")
    return np.ascontiguousarray(wav, dtype=np.float32)


def silent_reason(path: str | os.PathLike, meta: AudioInfo | None = None, wav: np.ndarray | None = None) -> str | None:
    """Why the file ``path`` is unusable as music because it is silent (its peak below
    :data:`SILENCE_DBFS`, as :func:`load` words it), or None when it is not. Half a second at a few places
    is decoded first (at the file's own rate, no resampling: a few ms a song), the whole file only when
    all of those are silent; undecodable audio raises :class:`AudioError`. ``meta``: its :func:`info`;
    ``wav``: its whole audio, already decoded (then nothing is decoded)."""
    if wav is not None:
        peak = peak_dbfs(wav)
        return None if peak >= SILENCE_DBFS else f"silent (peak {peak:.1f} dBFS, below {SILENCE_DBFS:.0f} dBFS)"
    meta = meta or info(path)
    probe = min(0.5, meta.duration)
    for where in (0.1, 0.5, 0.9, 0.3, 0.7):  # the first probe early: PyAV formats decode from the start
        offset = min(where * meta.duration, meta.duration - probe)
        if peak_dbfs(load(path, meta.sr, offset=offset, duration=probe, allow_silent=True)) >= SILENCE_DBFS:
            return None
    return silent_reason(path, meta, load(path, meta.sr, allow_silent=True))


WRITE_BLOCK = 1 << 16  # frames handed to libsndfile at a time (see write)


def write(path: str | os.PathLike, wav: np.ndarray, sr: int = SR, subtype: str | None = None) -> None:
    """Write mono ``float32 [T]`` (or ``[T, C]``) audio atomically; the format follows the extension
    (``.m4a``/``.mp4``/``.aac`` are AAC and ``.webm`` Opus, encoded by PyAV; ``subtype`` is then ignored)."""
    wav = np.asarray(wav, dtype=np.float32)
    if not np.isfinite(wav).all():
        raise ValueError(f"{path}: refusing to write NaN or infinite samples")
    suffix = Path(path).suffix.lower()
    if suffix in AV_EXTENSIONS:
        if suffix not in _AV_WRITERS:
            raise ValueError(f"{path}: fplib writes {', '.join(_AV_WRITERS)} through PyAV, not {suffix}")
        with atomic_path(path) as tmp:
            _av_write(tmp, wav, sr, *_AV_WRITERS[suffix])
        return
    fmt = "OGG" if Path(path).suffix.lower() in (".opus", ".oga") else None  # extensions libsndfile does not map
    channels = 1 if wav.ndim == 1 else wav.shape[1]
    with atomic_path(path) as tmp, sf.SoundFile(str(tmp), "w", sr, channels, subtype=subtype, format=fmt) as f:
        # in blocks: libsndfile 1.2.2's Ogg Vorbis encoder crashes the process (SIGSEGV) when handed a minute or
        # more of audio in one call
        for i in range(0, len(wav), WRITE_BLOCK):
            f.write(wav[i : i + WRITE_BLOCK])


def list_audio(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Audio files (by extension) under ``folder``, sorted; errors if the folder is missing or has none."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    found = files_under(folder)[0] if recursive else sorted(folder.glob("*"))
    files = [p for p in found if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")]
    if not files:
        raise ValueError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
    return files


def collect_audio(
    paths: list[str | os.PathLike],
) -> tuple[list[tuple[str, str | None]], list[tuple[str, str]], list[str]]:
    """Files and folders -> ([(audio file, root folder for its name or None)], [(path, problem)],
    [ignored non-audio files]); folders are scanned recursively. Whatever is named like audio and is not
    a folder is listed, even a named pipe or a broken link, so that reading it reports why it is skipped.
    Links to folders are followed (:func:`files_under`); one that is not (a loop) is among the ignored, with
    its reason in brackets."""
    files, problems, ignored = [], [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found, not_followed = files_under(path)
            found = [f for f in found if not f.name.startswith(".")]
            songs = [f for f in found if f.suffix.lower() in AUDIO_EXTENSIONS]
            ignored += [f"{link} ({reason})" for link, reason in not_followed]
            ignored += [str(f) for f in found if f.suffix.lower() not in AUDIO_EXTENSIONS and f.is_file()]
            if not songs:
                problems.append((p, f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder"))
            files += [(str(f), str(path)) for f in songs]
        elif os.path.lexists(path):  # a file, or a named pipe, a link... that reading it will report
            files.append((str(path), None))
        else:
            problems.append((p, "no such file or folder"))
    return files, problems, ignored


def files_under(folder: str | os.PathLike) -> tuple[list[Path], list[tuple[str, str]]]:
    """Everything under ``folder`` that is not a folder (files, and named pipes, broken links ... that reading
    reports), recursively and sorted, named by its path through ``folder``; and the links to folders that
    were not followed, with the reason. Links to folders are followed (a music folder often links to
    another disk), each real folder once: a link to a folder that holds it (it would loop forever), or to one
    already scanned (its songs would be listed twice), is not."""
    files: list[Path] = []
    not_followed: list[tuple[str, str]] = []
    seen = {os.path.realpath(folder)}  # every folder scanned, or to be scanned without a link
    for d, subfolders, _ in os.walk(folder):
        seen.update(os.path.realpath(os.path.join(d, s)) for s in subfolders if not os.path.islink(os.path.join(d, s)))

    def scan(d: Path, above: tuple[str, ...]) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            not_followed.append((str(d), f"cannot be read ({e.strerror or e})"))
            return
        for entry in entries:
            path = d / entry.name
            if not entry.is_dir():  # follows links: a link to a folder is a folder
                files.append(path)
                continue
            real = os.path.realpath(path)
            if entry.is_symlink() and real in above:
                not_followed.append((str(path), f"a link to {real}, a folder that holds it: not followed (a loop)"))
            elif entry.is_symlink() and real in seen:
                not_followed.append((str(path), f"a link to {real}, which is scanned anyway: not followed"))
            else:
                seen.add(real)
                scan(path, (*above, real))

    scan(Path(folder), (os.path.realpath(folder),))
    return sorted(files), not_followed


def _uses_av(path: Path) -> bool:
    return Path(path).suffix.lower() in AV_EXTENSIONS


def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise RuntimeError("decoding m4a/aac/mp4/webm/wma needs PyAV: pip install av") from None
    av.logging.set_level(av.logging.PANIC)  # errors are raised, not printed
    return av


def _av_stream(container, path: Path):
    streams = container.streams.audio
    if not streams:
        raise AudioError(path, "has no audio stream")
    return streams[0]


def _av_info(path: Path) -> AudioInfo:
    av = _av()
    try:
        with av.open(str(path)) as c:
            st = _av_stream(c, path)
            sr, channels = int(st.codec_context.sample_rate or 0), int(st.codec_context.channels or 0)
            if st.duration is not None and st.time_base is not None:
                seconds = float(st.duration * st.time_base)
            elif c.duration is not None:
                seconds = c.duration / 1e6  # microseconds
            else:  # no duration in the header: decode to count
                seconds = _av_decode(path, 0, None).shape[0] / sr if sr > 0 else 0.0
            name = f"{c.format.name}/{st.codec_context.name}"
    except AudioError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise AudioError(path, f"not a decodable audio file ({_clean(e)})") from None
    if channels < 1:
        raise AudioError(path, "has no audio channels")
    if sr <= 0:
        raise AudioError(path, f"invalid sample rate {sr}")
    frames = int(round(seconds * sr))
    if frames <= 0:
        raise AudioError(path, "contains no audio samples")
    return AudioInfo(str(path), sr, channels, frames, name)


def _av_decode(path: Path, start: int, stop: int | None) -> np.ndarray:
    """Frames ``start:stop`` (at the file's own rate; ``stop`` None: to the end) as ``float32 [T, C]``,
    decoded from the start of the file by FFmpeg."""
    av = _av()
    chunks, have = [], 0
    try:
        with av.open(str(path)) as c:
            st = _av_stream(c, path)
            resampler = av.AudioResampler(format="fltp")  # planar float, same rate and channels
            for frame in c.decode(st):
                for f in resampler.resample(frame):
                    chunks.append(f.to_ndarray())
                    have += chunks[-1].shape[1]
                if stop is not None and have >= stop:
                    break
            else:
                for f in resampler.resample(None):
                    chunks.append(f.to_ndarray())
    except AudioError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise AudioError(path, f"decoding failed ({_clean(e)})") from None
    if not chunks:
        raise AudioError(path, "decoded to no samples")
    data = np.concatenate(chunks, axis=1).T
    return np.ascontiguousarray(data[start:stop], dtype=np.float32)


def _av_write(path: Path, wav: np.ndarray, sr: int, fmt: str, codec: str) -> None:
    av = _av()
    data = wav[:, None] if wav.ndim == 1 else wav
    planar = np.ascontiguousarray(data.T, dtype=np.float32)  # [C, T]
    layout = {1: "mono", 2: "stereo"}.get(planar.shape[0])
    if layout is None:
        raise ValueError(f"{path}: PyAV formats are written mono or stereo, not {planar.shape[0]} channels")
    rate = sr if codec != "libopus" else 48000
    if rate != sr:
        planar = np.stack([soxr.resample(ch, sr, rate, quality="HQ") for ch in planar]).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as c:
        st = c.add_stream(codec, rate=rate)
        st.layout = layout
        size = 960 if codec == "libopus" else 1024
        for i in range(0, planar.shape[1], size):
            chunk = np.ascontiguousarray(planar[:, i : i + size])
            if chunk.shape[1] < size and codec == "libopus":
                chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[1])))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for packet in st.encode(frame):
                c.mux(packet)
        for packet in st.encode(None):
            c.mux(packet)


def peak_dbfs(wav: np.ndarray) -> float:
    """Peak level in dB relative to full scale (-inf for digital silence)."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def rms_dbfs(wav: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _downmix(data: np.ndarray) -> np.ndarray:
    """``[T, C]`` -> ``[T]``: channel mean, or the loudest channel if the mean cancels out. Two matrix
    products (one pass over the audio each) instead of numpy reductions along the short channel axis,
    which took as long as decoding the file."""
    if data.shape[1] == 1:
        return data[:, 0]
    c = data.shape[1]
    gram = (data.T @ data).astype(np.float64)  # [C, C]: channel energies on the diagonal
    energy, mono_energy = np.diag(gram), gram.sum() / c**2
    if energy.max() > 0 and mono_energy < 1e-3 * energy.max():
        return data[:, int(np.argmax(energy))]
    return data @ np.full(c, 1 / c, dtype=data.dtype)


def _clean(err: Exception) -> str:
    return " ".join(str(err).split())


def _decoder_reason(err: Exception) -> str:
    msg = _clean(err)
    # libsndfile says "File does not exist or is not a regular file" for any header it cannot parse
    if "does not exist or is not a regular file" in msg or "unknown format" in msg.lower():
        return "unrecognised format or corrupt header"
    return msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg


# -- lossy codecs: what a stream, a phone call or a compressed file does to the audio -----------------

# name -> (container, encoder, sample rates the encoder takes): encoded in memory by PyAV (FFmpeg), except
# GSM 06.10 (the GSM full-rate phone codec), which libsndfile encodes
CODECS = {
    "mp3": ("mp3", "libmp3lame", (8000, 16000, 22050, 44100)),
    "aac": ("adts", "aac", (8000, 16000, 44100)),
    "opus": ("ogg", "libopus", (8000, 16000, 48000)),
    "amr_nb": ("amr", "libopencore_amrnb", (8000,)),
    "gsm": ("wav", "gsm610", (8000,)),
}
AMR_NB_KBPS = (4.75, 5.15, 5.9, 6.7, 7.4, 7.95, 10.2, 12.2)


def codec_roundtrip(wav: np.ndarray, sr: int, codec: str, kbps: float, codec_sr: int | None = None) -> np.ndarray:
    """``wav`` ``float32 [T]`` at ``sr`` encoded with ``codec`` (:data:`CODECS`) at ``kbps`` and decoded again:
    ``float32 [T]`` at ``sr``, aligned with the input (the codec's delay removed by cross-correlation).
    ``codec_sr``: the rate the codec runs at (default ``sr`` when the encoder takes it, else its lowest
    rate above); GSM and AMR-NB always run at 8 kHz; ``kbps`` is ignored for GSM (13 kb/s)."""
    import io

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; one of {', '.join(CODECS)}")
    fmt, encoder, rates = CODECS[codec]
    rate = codec_sr or next((r for r in rates if r >= sr), rates[-1])
    if rate not in rates:
        raise ValueError(f"{codec} runs at {', '.join(map(str, rates))} Hz, not {rate}")
    x = np.asarray(wav, dtype=np.float32)
    n = x.shape[0]
    if rate != sr:
        x = soxr.resample(x, sr, rate, quality="HQ").astype(np.float32)
    x = np.clip(x, -1.0, 1.0)
    if codec == "gsm":
        buf = io.BytesIO()
        sf.write(buf, x, rate, format="WAV", subtype="GSM610")
        buf.seek(0)
        y = sf.read(buf, dtype="float32")[0]
    else:
        y = _av_roundtrip(x, rate, fmt, encoder, kbps)
    if rate != sr:
        y = soxr.resample(y, rate, sr, quality="HQ").astype(np.float32)
    return _aligned(y, np.asarray(wav, dtype=np.float32), n)


def _av_roundtrip(x: np.ndarray, rate: int, fmt: str, encoder: str, kbps: float) -> np.ndarray:
    import io

    av = _av()
    buf = io.BytesIO()
    pcm = np.round(x * 32767.0).astype(np.int16)[None]
    with av.open(buf, "w", format=fmt) as c:
        st = c.add_stream(encoder, rate=rate)
        st.layout = "mono"
        st.bit_rate = int(kbps * 1000)
        fmt_in = st.codec_context.codec.audio_formats[0].name
        size = st.codec_context.frame_size or 1024
        resampler = av.AudioResampler(format=fmt_in, layout="mono", rate=rate)
        size = max(size, 160)
        for i in range(0, pcm.shape[1], size):
            chunk = np.ascontiguousarray(pcm[:, i : i + size])
            if chunk.shape[1] < size:
                chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[1])))
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i
            for f in resampler.resample(frame):
                for packet in st.encode(f):
                    c.mux(packet)
        for packet in st.encode(None):
            c.mux(packet)
    buf.seek(0)
    chunks = []
    with av.open(buf, "r") as c:
        back = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in c.decode(audio=0):
            for f in back.resample(frame):
                chunks.append(f.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _aligned(y: np.ndarray, ref: np.ndarray, n: int, max_lag: int = 4096) -> np.ndarray:
    """``y`` shifted to line up with ``ref`` (the lag of the cross-correlation peak, within ``max_lag``
    samples of delay), cut or zero-padded to ``n`` samples."""
    if y.shape[0] == 0:
        return np.zeros(n, np.float32)
    m = 1 << int(np.ceil(np.log2(len(y) + len(ref))))
    cc = np.fft.irfft(np.fft.rfft(y, m) * np.conj(np.fft.rfft(ref, m)), m)
    lag = int(np.argmax(cc[: max_lag + 1]))  # y delayed by `lag` samples
    out = y[lag : lag + n]
    return np.pad(out, (0, n - out.shape[0])).astype(np.float32) if out.shape[0] < n else out.astype(np.float32)
