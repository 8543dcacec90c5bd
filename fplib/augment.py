"""Degradations for contrastive training (README, 'The degradations'), batched in torch on CPU or GPU.

A batch of clean segments with some context on each side (for the time offset), a batch of noise
segments and a batch of impulse responses go in; the clean window and its degraded replica come out.
The chain follows the physical path of a recording: time offset and playback speed (a song played
a few per cent fast or slow, pitch moving with tempo) -> room impulse response (convolved, where the
data has them, with a loudspeaker's response) -> background noise at a target SNR -> microphone
colouration (a random smooth equaliser) -> band-limiting (a phone microphone) -> automatic gain ->
clipping -> a lossy codec (MP3, AAC, Opus, AMR-NB, GSM at low bitrates) -> waveform time mask; then,
on the log-mel of the degraded view only, time/frequency masks filled with silence (the floor, not
0 dB as in the seed's scripts) and drawn independently for every example.

All randomness comes from a ``torch.Generator`` passed in: the same seed gives the same output on
any device. Every per-example decision is drawn first into a :class:`Draws` record (which a notebook
may edit to force one step on or off) and then applied.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from fplib.features import FrontEnd, LogMel

STEPS = ("offset", "speed", "ir", "noise", "eq", "bandlimit", "gain", "clip", "codec", "time_mask")
# the codecs (fplib.audio.CODECS) and bitrates (kb/s) the codec step draws from: low bitrates, as streams,
# phone calls and voice messages use them at 8 kHz
TRAINING_CODECS = (
    ("mp3", 16.0),
    ("mp3", 24.0),
    ("aac", 12.0),
    ("aac", 20.0),
    ("opus", 8.0),
    ("opus", 12.0),
    ("amr_nb", 7.95),
    ("amr_nb", 12.2),
    ("gsm", 13.0),
)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of every degradation (defaults: the seed's online training and NAFP)."""

    noise_p: float = 1.0  # probability of adding background noise
    snr_mode: str = "uniform"  # "uniform": U(snr_db); "buckets": snr_buckets
    snr_db: tuple[float, float] = (0.0, 10.0)  # dB, range for "uniform"
    snr_buckets: tuple[tuple[float, float, float], ...] = ((0.5, 0.0, 5.0), (0.3, 5.0, 10.0), (0.2, 10.0, 15.0))
    ir_p: float = 1.0  # probability of convolving with a room impulse response
    ir_max_s: float = 0.5  # s, IRs are cut this long after their direct path (NAFP: 0.075)
    offset_p: float = 0.25  # probability of shifting the degraded view in time
    offset_max_s: float = 0.2  # s, maximum shift either way
    time_mask_p: float = 0.1  # probability of zeroing a short span of the waveform
    time_mask_s: tuple[float, float] = (0.06, 0.08)  # s, span length range
    bandlimit_p: float = 0.4  # probability of band-limiting (low-pass and high-pass together)
    lowpass_hz: tuple[float, float] = (2000.0, 3000.0)  # Hz, low-pass cut-off range
    highpass_hz: tuple[float, float] = (500.0, 1000.0)  # Hz, high-pass cut-off range
    bandlimit_db_oct: tuple[float, float] = (12.0, 36.0)  # filter slope range (6 dB/oct per order)
    freq_mask_p: float = 0.33  # probability of a frequency mask on the degraded log-mel
    freq_mask_max_bins: int = 128  # mel bins, maximum mask width
    spec_time_mask_p: float = 0.33  # probability of a time mask on the degraded log-mel
    spec_time_mask_max_frames: int = 2  # STFT frames, maximum mask width
    # degradations of real recordings beyond NAFP's (off by default: the seed's recipe)
    speed_p: float = 0.0  # probability of playing the degraded view faster or slower (pitch with tempo)
    speed_max: float = 0.05  # maximum relative speed change either way (0.05: 95-105 %)
    eq_p: float = 0.0  # probability of a random smooth equaliser (microphone and loudspeaker colouration)
    eq_db: float = 8.0  # dB, the equaliser's gains are drawn in +-eq_db at log-spaced control points
    gain_p: float = 0.0  # probability of a slow level change within the window (automatic gain control)
    gain_db: float = 10.0  # dB, the largest level swing
    clip_p: float = 0.0  # probability of clipping (a recording overdriven into full scale)
    clip_drive_db: tuple[float, float] = (3.0, 18.0)  # dB of gain above full scale before the clip
    codec_p: float = 0.0  # probability of a lossy codec round trip
    codecs: tuple[tuple[str, float], ...] = TRAINING_CODECS  # (codec, kb/s) drawn uniformly

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_p") and not 0.0 <= v <= 1.0:
                raise ValueError(f"{f.name} must be a probability in [0, 1], got {v}")
        for name in ("snr_db", "time_mask_s", "lowpass_hz", "highpass_hz", "bandlimit_db_oct", "clip_drive_db"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: range ({lo}, {hi}) is reversed")
        if self.snr_mode not in ("uniform", "buckets"):
            raise ValueError(f"snr_mode must be 'uniform' or 'buckets', got {self.snr_mode!r}")
        if self.snr_mode == "buckets":
            total = sum(b[0] for b in self.snr_buckets)
            if not self.snr_buckets or abs(total - 1.0) > 1e-6 or any(b[1] > b[2] for b in self.snr_buckets):
                raise ValueError(f"snr_buckets must be (p, lo, hi) rows with p summing to 1, got {self.snr_buckets}")
        if self.offset_max_s < 0 or self.ir_max_s <= 0:
            raise ValueError("offset_max_s must be >= 0 and ir_max_s > 0")
        if not 0.0 <= self.speed_max < 0.5 or self.eq_db < 0 or self.gain_db < 0:
            raise ValueError("need 0 <= speed_max < 0.5, eq_db >= 0 and gain_db >= 0")
        from fplib.audio import CODECS

        object.__setattr__(self, "codecs", tuple((str(c), float(k)) for c, k in self.codecs))
        bad = [c for c, _ in self.codecs if c not in CODECS]
        if bad or (self.codec_p > 0 and not self.codecs):
            raise ValueError(f"codecs: (name, kb/s) pairs with names from {', '.join(CODECS)}, got {self.codecs}")


@dataclass
class Draws:
    """Every random decision for a batch of B examples (tensors of shape [B])."""

    offset: torch.Tensor  # int64, samples (+ = degraded view starts later)
    ir_on: torch.Tensor  # bool
    noise_on: torch.Tensor  # bool
    snr_db: torch.Tensor  # float32, dB
    band_on: torch.Tensor  # bool
    lowpass_hz: torch.Tensor  # float32
    highpass_hz: torch.Tensor  # float32
    band_order: torch.Tensor  # int64, Butterworth order (slope = 6 dB/oct x order)
    tmask_on: torch.Tensor  # bool
    tmask_start: torch.Tensor  # int64, samples
    tmask_len: torch.Tensor  # int64, samples
    fmask_on: torch.Tensor  # bool
    fmask_start: torch.Tensor  # int64, mel bins
    fmask_width: torch.Tensor  # int64, mel bins
    smask_on: torch.Tensor  # bool
    smask_start: torch.Tensor  # int64, frames
    smask_width: torch.Tensor  # int64, frames
    # the steps beyond NAFP's; None where the config's probability is 0 (nothing drawn for them)
    speed: torch.Tensor | None = None  # float32, playback speed (1: unchanged)
    eq_on: torch.Tensor | None = None  # bool
    eq_gains_db: torch.Tensor | None = None  # float32 [B, EQ_POINTS]
    gain_on: torch.Tensor | None = None  # bool
    gain_start_db: torch.Tensor | None = None  # float32, level at the window's start (ramp to -this)
    clip_on: torch.Tensor | None = None  # bool
    clip_drive_db: torch.Tensor | None = None  # float32
    codec_on: torch.Tensor | None = None  # bool
    codec_id: torch.Tensor | None = None  # int64, index into the config's codecs

    def to(self, device: torch.device | str) -> Draws:
        return Draws(
            **{
                f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                for f in dataclasses.fields(self)
            }
        )

    def disable(self, *steps: str) -> Draws:
        """A copy with the named steps (of STEPS, plus "spec_mask") switched off for every example."""
        d = dataclasses.replace(self)
        for step in steps:
            if step == "offset":
                d.offset = torch.zeros_like(d.offset)
            elif step == "speed":
                d.speed = None
            elif step in ("ir", "noise", "time_mask", "bandlimit", "eq", "gain", "clip", "codec"):
                attr = {
                    "ir": "ir_on",
                    "noise": "noise_on",
                    "time_mask": "tmask_on",
                    "bandlimit": "band_on",
                    "eq": "eq_on",
                    "gain": "gain_on",
                    "clip": "clip_on",
                    "codec": "codec_on",
                }[step]
                if getattr(d, attr) is not None:
                    setattr(d, attr, torch.zeros_like(getattr(d, attr)))
            elif step == "spec_mask":
                d.fmask_on = torch.zeros_like(d.fmask_on)
                d.smask_on = torch.zeros_like(d.smask_on)
            else:
                raise ValueError(f"unknown augmentation step {step!r}; steps are {STEPS + ('spec_mask',)}")
        return d


class Augmenter:
    """Makes (clean, degraded) pairs. ``context`` samples of extra audio are needed on each side."""

    def __init__(self, cfg: AugmentConfig = AugmentConfig(), fe: FrontEnd = FrontEnd()):
        self.cfg = cfg
        self.fe = fe
        # a speed change reads up to T x speed_max / 2 samples beyond the window on each side, besides the offset
        speed_extra = int(math.ceil(fe.win_len * cfg.speed_max / 2)) + 1 if cfg.speed_p > 0 else 0
        self.offset_max = int(round(cfg.offset_max_s * fe.sr))
        self.context = self.offset_max + speed_extra
        self.ir_max_len = int(round(cfg.ir_max_s * fe.sr))
        self._logmel: dict[str, LogMel] = {}

    # -- drawing -------------------------------------------------------------------------------
    def draw(self, batch: int, g: torch.Generator) -> Draws:
        """Draw every decision for ``batch`` examples from ``g`` (on CPU, so results match across devices)."""
        c, fe, T = self.cfg, self.fe, self.fe.win_len

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(batch, generator=g)

        def coin(p: float) -> torch.Tensor:
            return torch.rand(batch, generator=g) < p

        def randint(lo: torch.Tensor | int, hi: torch.Tensor | int) -> torch.Tensor:  # inclusive range
            lo_t, hi_t = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
            r = torch.rand(batch, generator=g, dtype=torch.float64)
            return (lo_t + torch.floor(r * (hi_t - lo_t + 1))).long()

        offset = torch.where(coin(c.offset_p), randint(-self.offset_max, self.offset_max), 0)
        if c.snr_mode == "uniform":
            snr = u(*c.snr_db)
        else:
            probs = torch.tensor([b[0] for b in c.snr_buckets], dtype=torch.float64)
            k = torch.multinomial(probs, batch, replacement=True, generator=g)
            lo = torch.tensor([b[1] for b in c.snr_buckets])[k]
            hi = torch.tensor([b[2] for b in c.snr_buckets])[k]
            snr = lo + (hi - lo) * torch.rand(batch, generator=g)
        order_lo = max(1, math.ceil(c.bandlimit_db_oct[0] / 6 - 1e-9))
        order_hi = max(order_lo, math.floor(c.bandlimit_db_oct[1] / 6 + 1e-9))
        tmask_len = torch.round(u(*c.time_mask_s) * fe.sr).long().clamp(1, T)
        fmask_width = randint(0, min(c.freq_mask_max_bins, fe.n_mels))
        smask_width = randint(0, min(c.spec_time_mask_max_frames, fe.n_frames))
        base = dict(
            offset=offset,
            ir_on=coin(c.ir_p),
            noise_on=coin(c.noise_p),
            snr_db=snr.float(),
            band_on=coin(c.bandlimit_p),
            lowpass_hz=u(*c.lowpass_hz).float(),
            highpass_hz=u(*c.highpass_hz).float(),
            band_order=randint(order_lo, order_hi),
            tmask_on=coin(c.time_mask_p),
            tmask_start=randint(0, T - tmask_len),
            tmask_len=tmask_len,
            fmask_on=coin(c.freq_mask_p),
            fmask_start=randint(0, fe.n_mels - fmask_width),
            fmask_width=fmask_width,
            smask_on=coin(c.spec_time_mask_p),
            smask_start=randint(0, fe.n_frames - smask_width),
            smask_width=smask_width,
        )
        extra = {}  # drawn after NAFP's draws, and only when switched on: older recipes draw as before
        if c.speed_p > 0:
            extra["speed"] = torch.where(coin(c.speed_p), u(1.0 - c.speed_max, 1.0 + c.speed_max), 1.0).float()
        if c.eq_p > 0:
            extra["eq_on"] = coin(c.eq_p)
            extra["eq_gains_db"] = (c.eq_db * (2 * torch.rand(batch, EQ_POINTS, generator=g) - 1)).float()
        if c.gain_p > 0:
            extra["gain_on"] = coin(c.gain_p)
            extra["gain_start_db"] = u(-c.gain_db / 2, c.gain_db / 2).float()
        if c.clip_p > 0:
            extra["clip_on"] = coin(c.clip_p)
            extra["clip_drive_db"] = u(*c.clip_drive_db).float()
        if c.codec_p > 0:
            extra["codec_on"] = coin(c.codec_p)
            extra["codec_id"] = randint(0, len(c.codecs) - 1)
        return Draws(**base, **extra)

    # -- applying ------------------------------------------------------------------------------
    def degrade(
        self,
        seg: torch.Tensor,
        noise: torch.Tensor | None,
        ir: torch.Tensor | None,
        draws: Draws,
        return_steps: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Waveforms: ``seg float32 [B, T + 2*context]``, ``noise [B, T]`` or None, ``ir [B, L]`` or None
        (zero-padded, any peak position) -> ``(clean [B, T], degraded [B, T])``.

        With ``return_steps``, also a dict of the degraded signal after each step (for display).
        """
        T, M = self.fe.win_len, self.context
        B = seg.shape[0]
        if seg.ndim != 2 or seg.shape[1] != T + 2 * M:
            raise ValueError(f"expected segments [B, {T + 2 * M}] (window + 2 x {M} context), got {list(seg.shape)}")
        draws = draws.to(seg.device)
        seg = seg.float()
        clean = seg[:, M : M + T]
        steps: dict[str, torch.Tensor] = {"clean": clean}

        x = seg
        if ir is not None and bool(draws.ir_on.any()):
            sel = draws.ir_on.nonzero()[:, 0]
            x = x.index_copy(0, sel, convolve_ir(x[sel], ir.to(x.device).float()[sel], self.ir_max_len))
        # the offset (and speed) is applied after the IR so the shifted view keeps its reverberant lead-in
        idx = (M + draws.offset)[:, None] + torch.arange(T, device=x.device)[None, :]
        if return_steps:
            steps["offset"] = torch.gather(seg, 1, idx)
        if draws.speed is None:
            x = torch.gather(x, 1, idx)
            steps["speed"] = steps.get("offset")
        else:
            if return_steps:
                steps["speed"] = resample_window(seg, draws.offset, draws.speed, T)
            x = resample_window(x, draws.offset, draws.speed, T)
        steps["ir"] = x
        if noise is not None and bool(draws.noise_on.any()):
            x = add_noise(x, noise.to(x.device).float()[:, :T], draws.snr_db, draws.noise_on)
        steps["noise"] = x
        if draws.eq_on is not None and bool(draws.eq_on.any()):
            sel = draws.eq_on.nonzero()[:, 0]
            x = x.index_copy(0, sel, equalise(x[sel], self.fe.sr, draws.eq_gains_db[sel]))
        steps["eq"] = x
        if bool(draws.band_on.any()):  # filter only the examples drawn for it
            sel = draws.band_on.nonzero()[:, 0]
            x = x.index_copy(
                0,
                sel,
                bandlimit(x[sel], self.fe.sr, draws.lowpass_hz[sel], draws.highpass_hz[sel], draws.band_order[sel]),
            )
        steps["bandlimit"] = x
        if draws.gain_on is not None and bool(draws.gain_on.any()):
            ramp = torch.linspace(1.0, -1.0, T, device=x.device)[None, :] * draws.gain_start_db[:, None]
            x = torch.where(draws.gain_on[:, None], x * 10.0 ** (ramp / 20.0), x)
        steps["gain"] = x
        if draws.clip_on is not None and bool(draws.clip_on.any()):
            x = torch.where(draws.clip_on[:, None], clip(x, draws.clip_drive_db), x)
        steps["clip"] = x
        if draws.codec_on is not None and bool(draws.codec_on.any()):
            x = apply_codecs(x, self.fe.sr, draws.codec_on, draws.codec_id, self.cfg.codecs)
        steps["codec"] = x
        if bool(draws.tmask_on.any()):
            t = torch.arange(T, device=x.device)[None, :]
            span = (t >= draws.tmask_start[:, None]) & (t < (draws.tmask_start + draws.tmask_len)[:, None])
            x = x.masked_fill(span & draws.tmask_on[:, None], 0.0)
        steps["time_mask"] = x
        # keep the degraded view in [-1, 1] (a gain, so the SNR is unchanged)
        peak = x.abs().amax(dim=1, keepdim=True)
        x = x / peak.clamp_min(1.0)
        assert x.shape == (B, T)
        return (clean, x, steps) if return_steps else (clean, x)

    def spec_mask(self, feats: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Frequency and time masks on log-mels ``[B, 1, F, T]``, filled with the floor (silence)."""
        draws = draws.to(feats.device)
        F, T = feats.shape[-2:]
        f = torch.arange(F, device=feats.device)[None, :, None]
        t = torch.arange(T, device=feats.device)[None, None, :]
        fs, fw = draws.fmask_start[:, None, None], draws.fmask_width[:, None, None]
        ts, tw = draws.smask_start[:, None, None], draws.smask_width[:, None, None]
        fmask = (f >= fs) & (f < fs + fw) & draws.fmask_on[:, None, None]
        tmask = (t >= ts) & (t < ts + tw) & draws.smask_on[:, None, None]
        return feats.masked_fill((fmask | tmask)[:, None], self.fe.floor_db)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` windows -> log-mel ``[B, 1, F, frames]`` on the same device."""
        key = str(wav.device)
        if key not in self._logmel:
            self._logmel[key] = LogMel(self.fe).to(wav.device)
        return self._logmel[key](wav)

    def pairs(
        self, seg: torch.Tensor, noise: torch.Tensor | None, ir: torch.Tensor | None, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw, degrade and featurise: -> ``(clean, degraded)`` log-mels ``float32 [B, 1, F, frames]``."""
        draws = self.draw(seg.shape[0], g)
        clean, aug = self.degrade(seg, noise, ir, draws)
        return self.features(clean), self.spec_mask(self.features(aug), draws)


def add_noise(
    x: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor, on: torch.Tensor | None = None
) -> torch.Tensor:
    """Mix ``noise [B, T]`` into ``x [B, T]`` at ``snr_db [B]`` (signal power / noise power over the window).

    Examples whose signal or noise is digitally silent are returned unchanged (the SNR is undefined).
    """
    ps = x.double().square().mean(dim=1)
    pn = noise.double().square().mean(dim=1)
    ok = (ps > 0) & (pn > 0)
    if on is not None:
        ok &= on
    gain = torch.sqrt(ps / (pn.clamp_min(1e-30) * 10.0 ** (snr_db.double() / 10.0)))
    gain = torch.where(ok, gain, torch.zeros_like(gain)).to(x.dtype)
    return x + gain[:, None] * noise


EQ_POINTS = 8  # control points of the random equaliser, log-spaced from 100 Hz to the Nyquist frequency


def resample_window(x: torch.Tensor, offset: torch.Tensor, speed: torch.Tensor, T: int) -> torch.Tensor:
    """``T`` samples of each row of ``x [B, T + 2M]`` around its centre shifted by ``offset`` samples, read
    at ``speed`` samples per sample (linear interpolation; > 1: played faster, pitch up). Reads past
    the context are clamped to its ends."""
    B, L = x.shape
    M = (L - T) // 2
    t = torch.arange(T, device=x.device, dtype=torch.float64)[None, :] - (T - 1) / 2
    pos = M + (T - 1) / 2 + offset.double()[:, None] + t * speed.double()[:, None]
    pos = pos.clamp(0, L - 1)
    i0 = pos.floor().long().clamp(max=L - 2)
    frac = (pos - i0).float()
    return torch.gather(x, 1, i0) * (1 - frac) + torch.gather(x, 1, i0 + 1) * frac


def equalise(x: torch.Tensor, sr: int, gains_db: torch.Tensor) -> torch.Tensor:
    """A smooth random colouration: gains (dB) at :data:`EQ_POINTS` log-spaced frequencies, interpolated
    in log-frequency, applied in the frequency domain; the RMS is kept."""
    B, T = x.shape
    n = _fast_len(T + 256)
    f = torch.fft.rfftfreq(n, 1.0 / sr, device=x.device).clamp_min(1.0)
    pts = torch.logspace(math.log10(100.0), math.log10(sr / 2), gains_db.shape[1], device=x.device)
    lf, lp = torch.log(f), torch.log(pts)
    k = torch.searchsorted(lp, lf).clamp(1, len(lp) - 1)
    w = ((lf - lp[k - 1]) / (lp[k] - lp[k - 1])).clamp(0, 1)
    g = gains_db.to(x.device)
    curve = g[:, k - 1] * (1 - w)[None] + g[:, k] * w[None]  # [B, F]
    y = torch.fft.irfft(torch.fft.rfft(x, n) * 10.0 ** (curve / 20.0), n)[:, :T]
    rms_in = x.square().mean(dim=1, keepdim=True).sqrt()
    rms_out = y.square().mean(dim=1, keepdim=True).sqrt()
    return y * torch.where(rms_out > 0, rms_in / rms_out.clamp_min(1e-12), torch.zeros_like(rms_out))


def clip(x: torch.Tensor, drive_db: torch.Tensor) -> torch.Tensor:
    """Each row scaled so that its peak is ``drive_db`` above full scale, clipped at +-1, scaled back."""
    peak = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-9)
    gain = 10.0 ** (drive_db.to(x.device)[:, None] / 20.0) / peak
    return (x * gain).clamp(-1.0, 1.0) / gain


def apply_codecs(
    x: torch.Tensor,
    sr: int,
    on: torch.Tensor,
    codec_id: torch.Tensor,
    codecs: tuple[tuple[str, float], ...],
    gap_s: float = 0.1,
) -> torch.Tensor:
    """The rows of ``x [B, T]`` with ``on`` through their codec (:func:`fplib.audio.codec_roundtrip`): the
    rows sharing a codec go through it as one signal, separated by ``gap_s`` of silence (one encoder
    run per codec per batch)."""
    from fplib.audio import codec_roundtrip

    B, T = x.shape
    gap = int(gap_s * sr)
    out = x.detach().cpu().numpy().copy()
    on, codec_id = on.cpu(), codec_id.cpu()
    for c in sorted(set(codec_id[on].tolist())):
        rows = (on & (codec_id == c)).nonzero()[:, 0].tolist()
        chain = np.zeros(len(rows) * (T + gap) + gap, dtype=np.float32)
        peak = np.abs(out[rows]).max(axis=1).clip(1e-9)
        scale = np.minimum(1.0, 0.9 / peak)  # the encoders take full scale at most
        for j, r in enumerate(rows):
            chain[gap + j * (T + gap) : gap + j * (T + gap) + T] = out[r] * scale[j]
        name, kbps = codecs[c]
        y = codec_roundtrip(chain, sr, name, kbps)
        for j, r in enumerate(rows):
            out[r] = y[gap + j * (T + gap) : gap + j * (T + gap) + T] / scale[j]
    return torch.from_numpy(out).to(x.device)


def ir_onset(ir: torch.Tensor) -> torch.Tensor:
    """Index of the direct path of each IR ``[B, L]``: the first tap within 6 dB of the peak (the
    peak itself can be a pair of coinciding reflections arriving later)."""
    mag = ir.abs()
    loud = mag >= 0.5 * mag.amax(dim=1, keepdim=True)
    return loud.float().argmax(dim=1)


def convolve_ir(x: torch.Tensor, ir: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Reverberate ``x [B, T]`` with ``ir [B, L]``; same length, aligned on each IR's direct path
    (:func:`ir_onset`).

    The IR is cut ``max_len`` samples after its onset, and the output is scaled to the input's RMS
    (a room changes the timbre, not the level). FFT convolution, batched.
    """
    B, T = x.shape
    peak = ir_onset(ir)  # [B]
    L = ir.shape[1]
    if max_len is not None:
        keep = torch.arange(L, device=ir.device)[None, :] <= (peak + max_len)[:, None]
        ir = ir * keep
        L = min(L, int(peak.max()) + max_len + 1)
        ir = ir[:, :L]
    n = _fast_len(T + L - 1)
    y = torch.fft.irfft(torch.fft.rfft(x, n) * torch.fft.rfft(ir, n), n)
    idx = peak[:, None] + torch.arange(T, device=x.device)[None, :]
    y = torch.gather(y, 1, idx)
    rms_in = x.square().mean(dim=1, keepdim=True).sqrt()
    rms_out = y.square().mean(dim=1, keepdim=True).sqrt()
    return y * torch.where(rms_out > 0, rms_in / rms_out.clamp_min(1e-12), torch.zeros_like(rms_out))


def bandlimit(
    x: torch.Tensor,
    sr: int,
    lowpass_hz: torch.Tensor,
    highpass_hz: torch.Tensor,
    order: torch.Tensor,
    on: torch.Tensor | None = None,
) -> torch.Tensor:
    """Zero-phase Butterworth-magnitude band-pass (high-pass ``highpass_hz`` + low-pass ``lowpass_hz``,
    slope 6 dB/oct x ``order``) of ``x [B, T]``, per example; examples with ``on`` False pass unchanged."""
    B, T = x.shape
    # zero padding keeps the circular wrap-around out of the window: these filters' impulse responses
    # fall below -60 dB within a few milliseconds, far less than the 1024 samples (128 ms) added
    n = _fast_len(T + 1024)
    f = torch.fft.rfftfreq(n, 1.0 / sr, device=x.device)[None, :]
    o2 = 2 * order.to(x.device, torch.float32)[:, None]
    lp = 1.0 / torch.sqrt(1.0 + (f / lowpass_hz.to(x.device)[:, None]) ** o2)
    hp = 1.0 / torch.sqrt(1.0 + (highpass_hz.to(x.device)[:, None] / f.clamp_min(1e-3)) ** o2)
    h = lp * hp
    if on is not None:
        h = torch.where(on.to(x.device)[:, None], h, torch.ones_like(h))
    return torch.fft.irfft(torch.fft.rfft(x, n) * h, n)[:, :T]


def _fast_len(n: int) -> int:
    """Smallest 2^a * 3^b * 5^c >= n (fast FFT sizes)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best
