"""Audio I/O: the one module that decodes and writes audio files.

Everything is returned as float32 mono at the requested rate (8 kHz by default). Decoding is done by
soundfile (libsndfile: wav, flac, ogg vorbis, opus, mp3, aiff) and resampling by soxr. A segment of a
long file is read by seeking, without decoding the whole file.

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

from fplib.storage import atomic_path

SR = 8000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
# A segment is read with this much extra audio on each side so that the resampler's edge transients
# fall outside the samples returned (soxr's HQ filter is a few ms long).
_RESAMPLE_MARGIN_S = 0.02
# Below this peak level (dBFS) a signal is called silent.
SILENCE_DBFS = -70.0


class AudioError(ValueError):
    """A file that cannot be used as audio; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


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
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
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


def write(path: str | os.PathLike, wav: np.ndarray, sr: int = SR, subtype: str | None = None) -> None:
    """Write mono ``float32 [T]`` (or ``[T, C]``) audio atomically; the format follows the extension."""
    wav = np.asarray(wav, dtype=np.float32)
    if not np.isfinite(wav).all():
        raise ValueError(f"{path}: refusing to write NaN or infinite samples")
    fmt = "OGG" if Path(path).suffix.lower() in (".opus", ".oga") else None  # extensions libsndfile does not map
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wav, sr, subtype=subtype, format=fmt)


def list_audio(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Audio files (by extension) under ``folder``, sorted; errors if the folder is missing or has none."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(
        p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
        and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
    return files


def peak_dbfs(wav: np.ndarray) -> float:
    """Peak level in dB relative to full scale (-inf for digital silence)."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def rms_dbfs(wav: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _downmix(data: np.ndarray) -> np.ndarray:
    """``[T, C]`` -> ``[T]``: channel mean, or the loudest channel if the mean cancels out."""
    if data.shape[1] == 1:
        return data[:, 0]
    mono = data.mean(axis=1)
    energy = np.square(data, dtype=np.float64).mean(axis=0)
    if energy.max() > 0 and np.square(mono, dtype=np.float64).mean() < 1e-3 * energy.max():
        return data[:, int(np.argmax(energy))]
    return mono


def _clean(err: Exception) -> str:
    return " ".join(str(err).split())


def _decoder_reason(err: Exception) -> str:
    msg = _clean(err)
    # libsndfile says "File does not exist or is not a regular file" for any header it cannot parse
    if "does not exist or is not a regular file" in msg or "unknown format" in msg.lower():
        return "unrecognised format or corrupt header"
    return msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg
