"""Front end: 1-s windows every 0.5 s -> log-mel spectrograms ``float32 [B, 1, 256, 32]``.

The front end shared by NAFP and the seed's scripts: 8 kHz mono, STFT n_fft 1024 / hop 256 / Hann /
centred with zero padding (32 frames per 1-s window), 256 mel bands (HTK mel scale, no area normalisation, as NAFP's
``linear_to_mel_weight_matrix``) between ``f_min`` (default 300 Hz) and 4000 Hz, log power in dB
relative to the window's own maximum, floored at -80 dB. A window of digital silence maps to the
floor everywhere (not to 0 dB, the loudest value, as in the seed's scripts).

Everything is batched torch, so it runs on CPU or GPU alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FrontEnd:
    """Front-end settings; stored in datasets and checkpoints so mismatches can be refused."""

    sr: int = 8000  # Hz
    win_s: float = 1.0  # fingerprint window, s
    hop_s: float = 0.5  # hop between fingerprint windows, s
    n_fft: int = 1024
    stft_hop: int = 256  # samples
    n_mels: int = 256
    f_min: float = 300.0  # Hz
    f_max: float = 4000.0  # Hz
    floor_db: float = -80.0  # dB below the window's maximum

    def __post_init__(self) -> None:
        if not 0 <= self.f_min < self.f_max <= self.sr / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sr/2, got f_min={self.f_min} f_max={self.f_max}")
        if self.floor_db >= 0:
            raise ValueError(f"floor_db must be negative, got {self.floor_db}")

    @property
    def win_len(self) -> int:
        """Samples per fingerprint window."""
        return int(round(self.win_s * self.sr))

    @property
    def hop_len(self) -> int:
        """Samples between fingerprint windows."""
        return int(round(self.hop_s * self.sr))

    @property
    def n_frames(self) -> int:
        """STFT frames per window (centred STFT)."""
        return self.win_len // self.stft_hop + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.n_mels, self.n_frames)

    def to_dict(self) -> dict:
        return asdict(self)


def n_windows(n_samples: int, fe: FrontEnd = FrontEnd()) -> int:
    """Fingerprint windows in a signal of ``n_samples``: floor((N - win) / hop) + 1, or 0 if too short."""
    if n_samples < fe.win_len:
        return 0
    return (n_samples - fe.win_len) // fe.hop_len + 1


def frame_windows(wav: torch.Tensor, fe: FrontEnd = FrontEnd()) -> torch.Tensor:
    """``[..., T]`` -> ``[..., N, win_len]`` fingerprint windows (a view, no copy)."""
    if wav.shape[-1] < fe.win_len:
        raise ValueError(f"signal of {wav.shape[-1] / fe.sr:.2f} s is shorter than one {fe.win_s} s window")
    return wav.unfold(-1, fe.win_len, fe.hop_len)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(fe: FrontEnd = FrontEnd()) -> np.ndarray:
    """Triangular HTK mel filters, ``float32 [n_fft // 2 + 1, n_mels]``, peak 1, no area normalisation."""
    freqs = np.linspace(0.0, fe.sr / 2, fe.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fe.f_min), hz_to_mel(fe.f_max), fe.n_mels + 2))
    lo, centre, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lo[None, :]) / (centre - lo)[None, :]
    down = (hi[None, :] - freqs[:, None]) / (hi - centre)[None, :]
    return np.clip(np.minimum(up, down), 0.0, None).astype(np.float32)


class LogMel(torch.nn.Module):
    """Waveform windows ``float32 [B, win_len]`` -> log-mel ``float32 [B, 1, n_mels, n_frames]`` in dB.

    Each window is normalised to its own maximum (0 dB) and floored at ``fe.floor_db``; an all-zero
    window is all ``floor_db``. Only the FFT bins that some mel filter uses are kept, which makes the
    mel projection a smaller matrix product.
    """

    # Power below this (about -150 dB re a full-scale sine) counts as digital silence.
    AMIN = 1e-10

    def __init__(self, fe: FrontEnd = FrontEnd()):
        super().__init__()
        self.fe = fe
        fb = mel_filterbank(fe)
        used = np.flatnonzero(fb.any(axis=1))
        self.bin_lo, self.bin_hi = int(used[0]), int(used[-1]) + 1
        self.register_buffer("fb", torch.from_numpy(fb[self.bin_lo : self.bin_hi]).contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(fe.n_fft, periodic=True), persistent=False)

    # On CPU, batches of this many windows keep the STFT and mel product in cache (fastest on 2 cores).
    CPU_CHUNK = 64

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim != 2 or wav.shape[-1] != self.fe.win_len:
            raise ValueError(f"expected [B, {self.fe.win_len}] windows, got {list(wav.shape)}")
        if wav.device.type == "cpu" and wav.shape[0] > self.CPU_CHUNK:
            return torch.cat([self._forward(c) for c in wav.split(self.CPU_CHUNK)])
        return self._forward(wav)

    def _forward(self, wav: torch.Tensor) -> torch.Tensor:
        wav = wav.float()
        spec = torch.stft(
            wav,
            self.fe.n_fft,
            self.fe.stft_hop,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # [B, F, T]
        spec = spec[:, self.bin_lo : self.bin_hi]
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power.transpose(1, 2), self.fb)  # [B, T, M]
        return power_to_db(mel, self.fe.floor_db, self.AMIN).transpose(1, 2).unsqueeze(1)


def power_to_db(power: torch.Tensor, floor_db: float, amin: float = LogMel.AMIN) -> torch.Tensor:
    """``[B, ...]`` power -> dB relative to each item's maximum, floored; silent items -> floor."""
    flat = power.flatten(1)
    ref = flat.amax(dim=1).clamp_min(amin)
    db = 10.0 * torch.log10(flat.clamp_min(amin) / ref[:, None])
    db = db.clamp_min(floor_db)
    db = torch.where((ref > amin)[:, None], db, torch.full_like(db, floor_db))
    return db.view_as(power)


def logmel(
    wav: torch.Tensor | np.ndarray,
    fe: FrontEnd = FrontEnd(),
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """A whole signal ``[T]`` -> its fingerprint windows' log-mels ``float32 [N, 1, n_mels, n_frames]``.

    Windows are taken every ``fe.hop_s``; see :func:`n_windows`. Processed in batches of
    ``batch_size`` windows (64 is fastest on a 2-core CPU) on ``device`` (default: the input's
    device); returned on that device.
    """
    wav = torch.as_tensor(wav)
    if device is not None:
        wav = wav.to(device)
    frames = frame_windows(wav, fe)
    module = _cached_logmel(fe, wav.device)
    out = [module(frames[i : i + batch_size]) for i in range(0, frames.shape[0], batch_size)]
    return torch.cat(out)


_CACHE: dict[tuple, LogMel] = {}


def _cached_logmel(fe: FrontEnd, device: torch.device) -> LogMel:
    key = (fe, str(device))
    if key not in _CACHE:
        _CACHE[key] = LogMel(fe).to(device)
    return _CACHE[key]
