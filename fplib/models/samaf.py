"""SAMAF (Báez-Suárez et al., ACM TOMM 16(2) 43, 2020): a sequence-to-sequence LSTM autoencoder whose
code, binarised, is the fingerprint.

What the paper established: an LSTM encoder reads a sequence of short-time feature frames and an LSTM
decoder reconstructs it from the encoder's summary (an autoencoder trained without labels); the training
loss is the mean squared reconstruction error plus a *hash loss* (similar inputs get close codes) and a
*bitwise entropy loss* (a condition on the individual bits of the codes); the fingerprint is a binary
code of 128 or 256 bits per second of audio. It was evaluated on speech, against Dejavu, RAFS and Panako,
not against contrastive networks. What it did not pin down, and what this module decides:

* **Input frames.** ``features="mfcc"``: per frame, the first ``n_mfcc`` (13) coefficients of an
  orthonormal DCT-II of the log-mel frame (a fixed buffer, not a parameter). ``features="logmel"``:
  the ``n_mels`` log-mel values of each frame. Either way the dB values are first scaled to [-1, 1]
  by ``(dB - floor / 2) / (-floor / 2)`` (``(dB + 40) / 40`` for fplib's -80 dB floor). The network
  reads fplib's log-mel window ``[B, 1, n_mels, n_frames]`` like every family, one frame per time step;
  every size comes from the front end.
* **Encoder.** A unidirectional LSTM (``layers`` deep, ``hidden`` wide) over the frames in time order;
  its last layer's final hidden state -> linear -> ``bits`` numbers -> tanh = the relaxed code
  ``h`` in [-1, 1], which :meth:`SAMAF.forward` returns (what inference and the ONNX export run).
  fplib stores ``bit = h > 0`` (:mod:`fplib.codes`) and matches by Hamming similarity 1 - 2 d / D
  (d differing bits of D; the paper's exact matching rule is not known here, bit errors being the likely one).
* **Binarisation in training.** With ``straight_through`` (default) the losses and the decoder see the
  binary code ``b = sign(h)`` (+1 where h > 0, else -1, the same rule as the stored bits) in the forward
  pass, with the gradient of ``h`` in the backward pass (``b = h + (sign(h) - h).detach()``): the code
  that is trained is the code that is stored. With it off they see ``h`` and a quantisation term
  pushes ``|h|`` towards 1.
* **Decoder.** An LSTM of the encoder's depth and width that receives the code ``b`` as its input at
  every one of the ``n_frames`` steps (zero initial state, no teacher forcing, so everything it
  reconstructs must pass through the code), then a linear layer per step back to the frame features.
  It reconstructs the frames in reverse order (last frame first, as in the LSTM autoencoders of
  Srivastava et al., 2015: the encoder's final state holds the latest frames best).
* **Losses**, each a function below with its formula; the weights are settings (stored in checkpoints):
  reconstruction MSE of both views (``recon_weight`` 1); hash loss, the expected fraction of differing
  bits between the clean and degraded views of a window (``hash_weight`` 1); bit balance, each bit on
  for half of the batch (of each rank under torch.distributed), the batch form of a bitwise entropy term
  (the paper's own formula is not known here) (``balance_weight`` 1); bit decorrelation
  (``decorrelation_weight`` 0, off: the contrastive term's negatives already spread the codes; useful
  with ``pairs=False`` or without the contrastive term); quantisation (``quant_weight`` 0.1, only when
  ``straight_through`` is off); and NT-Xent over the L2-normalised training codes of the two views
  (``contrastive_weight`` 1, at the trainer's temperature). **The contrastive term is not in the
  paper.** It is on by default because nothing else rewards telling windows apart: a pull-together hash
  loss plus balance is minimised by codes carrying little information (e.g. every bit a copy of one
  coarse property of the window that survives degradation), and reconstruction alone does not make the
  bits robust; negatives push distinct windows' codes apart. With ``b = sign(h)`` its
  logits are exactly fplib's Hamming similarity divided by the temperature. Set ``contrastive_weight=0``
  for the paper's loss family.
* **Pairs.** ``pairs=True`` (default) trains on fplib's (clean, degraded) pairs: the hash and contrastive
  terms are what teach invariance to noise and rooms, which reconstruction alone does not. With
  ``pairs=False`` the objective is the unsupervised original: reconstruction and the bit terms of the
  clean view only; the degraded view is still encoded (for validation) but does not enter the loss.
* **Rate.** ``bits / 8`` bytes per window and fplib's windows every 0.5 s: 128 bits -> 16 bytes per
  window, 32 bytes per second of audio (the paper's 256-bit-per-second size; NAFP's 128 floats take
  1024 bytes per second, 32x more).

Variants (all 128 bits, 32 bytes/s):

* ``samaf``: log-mel frames (256 x 32 at fplib's default front end), 2-layer LSTMs of 256 units:
  2,072,960 parameters.
* ``samaf_small``: the same at 1 layer of 64 units, for CPU training and the demo: 157,056 parameters.
* ``samaf_mfcc``: the faithful input, 13 MFCCs at 100 frames per second: it needs its own front end
  (8 kHz, 32-ms frames (n_fft 256) every 10 ms (STFT hop 80), 40 mel bands -> 101 frames per 1-s window,
  where a third-party port used 25-ms frames; training data made with the default front end is refused),
  2-layer LSTMs of 256 units: 1,761,677 parameters.

fplib's default training settings apply (no family-specific ``training`` in the registry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fplib.features import FrontEnd
from fplib.losses import nt_xent

FEATURES = ("logmel", "mfcc")


@dataclass(frozen=True)
class SAMAFSettings:
    features: str = "logmel"  # per-frame input: "logmel" (n_mels values) or "mfcc" (n_mfcc DCT coefficients)
    n_mfcc: int = 13  # MFCCs per frame (features="mfcc")
    hidden: int = 256  # LSTM units, encoder and decoder
    layers: int = 2  # LSTM depth, encoder and decoder
    bits: int = 128  # code length (a multiple of 8)
    straight_through: bool = True  # train on sign(h) with h's gradient; else a quantisation term
    pairs: bool = True  # use the degraded views (hash, contrastive terms); False: unsupervised original
    recon_weight: float = 1.0  # reconstruction MSE
    hash_weight: float = 1.0  # fraction of differing bits between the two views
    balance_weight: float = 1.0  # each bit on for half the batch
    decorrelation_weight: float = 0.0  # pairwise bit correlations (off by default)
    quant_weight: float = 0.1  # (|h| - 1)^2, only without straight_through
    contrastive_weight: float = 1.0  # NT-Xent on the normalised codes (not in the paper)

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if self.bits < 8 or self.bits % 8:
            raise ValueError(f"bits must be a positive multiple of 8, got {self.bits}")
        if self.hidden < 1 or self.layers < 1 or self.n_mfcc < 1:
            raise ValueError(f"need hidden, layers, n_mfcc >= 1, got {self.hidden}, {self.layers}, {self.n_mfcc}")


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The first ``n_out`` rows of the orthonormal DCT-II of length ``n_in``, transposed: ``float32 [n_in, n_out]``,
    so that ``frames @ dct_matrix(...)`` gives each frame's coefficients c_k = s_k sum_n x_n cos(pi k (n + 1/2) / N),
    s_0 = sqrt(1 / N), s_k = sqrt(2 / N)."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)
    m = torch.cos(math.pi * k[:, None] * (n[None, :] + 0.5) / n_in) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return m.T.float().contiguous()


def straight_through_sign(h: torch.Tensor) -> torch.Tensor:
    """``b = h + (sign(h) - h).detach()``: forward value +1 where h > 0 and -1 elsewhere (the stored bit's rule,
    so 0 -> -1), gradient that of ``h``."""
    return h + (torch.where(h > 0, 1.0, -1.0).to(h.dtype) - h).detach()


# -- losses --------------------------------------------------------------------------------------------------


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements: mean (recon - target)^2."""
    return (recon.float() - target.float()).square().mean()


def hash_loss(b_a: torch.Tensor, b_b: torch.Tensor) -> torch.Tensor:
    """Codes ``[N, D]`` of the two views of the same windows: mean_{i,j} (b_a[i,j] - b_b[i,j])^2 / 4. For +-1
    codes this is the fraction of differing bits (Hamming distance / D, averaged over pairs)."""
    return (b_a.float() - b_b.float()).square().mean() / 4


def balance_loss(b: torch.Tensor) -> torch.Tensor:
    """Codes ``[N, D]``: mean_j (mean_i b[i,j])^2. Zero when every bit is on for exactly half of the batch
    (the bit's entropy over the batch is then maximal), 1 when a +-1 bit is constant."""
    return b.float().mean(dim=0).square().mean()


def decorrelation_loss(b: torch.Tensor) -> torch.Tensor:
    """Codes ``[N, D]``: with C = b^T b / N, the mean of C[j,k]^2 over the D (D - 1) pairs j != k. Zero when the
    bits agree with each other on exactly half of the batch (pairwise uncorrelated +-1 bits)."""
    b = b.float()
    d = b.shape[1]
    c = b.T @ b / b.shape[0]
    return (c.square().sum() - c.diagonal().square().sum()) / (d * (d - 1))


def quantisation_loss(h: torch.Tensor) -> torch.Tensor:
    """Relaxed codes ``[N, D]``: mean (|h| - 1)^2, zero when every value is +-1."""
    return (h.float().abs() - 1).square().mean()


def contrastive_code_loss(
    b_a: torch.Tensor, b_b: torch.Tensor, temperature: float, gather: bool = True
) -> torch.Tensor:
    """NT-Xent (:func:`fplib.losses.nt_xent`) on the L2-normalised codes of the two views. For +-1 codes the
    inner product of the normalised codes is 1 - 2 Hamming / D, fplib's similarity of binary fingerprints."""
    return nt_xent(F.normalize(b_a.float(), dim=1), F.normalize(b_b.float(), dim=1), temperature, gather)


# -- network -------------------------------------------------------------------------------------------------


class SAMAF(nn.Module):
    """Log-mel ``float32 [B, 1, n_mels, n_frames]`` -> relaxed codes ``float32 [B, bits]`` in [-1, 1]."""

    # CPU inference runtime (fplib.engine): torch itself. Neither runtime ran these LSTMs faster end to
    # end (benchmarks/bench_query.py: ONNX Runtime 0.6-1.0x torch at 3 and 10 s, OpenVINO slower still)
    cpu_runtime = "torch"

    def __init__(self, settings: SAMAFSettings = SAMAFSettings(), fe: FrontEnd = FrontEnd()):
        super().__init__()
        self.settings, self.fe = settings, fe
        s = settings
        if s.features == "mfcc":
            if s.n_mfcc > fe.n_mels:
                raise ValueError(f"n_mfcc {s.n_mfcc} exceeds the front end's {fe.n_mels} mel bands")
            self.register_buffer("dct", dct_matrix(fe.n_mels, s.n_mfcc), persistent=False)
            self.n_features = s.n_mfcc
        else:
            self.dct = None
            self.n_features = fe.n_mels
        self.n_frames = fe.n_frames
        self.encoder = nn.LSTM(self.n_features, s.hidden, s.layers, batch_first=True)
        self.to_code = nn.Linear(s.hidden, s.bits)
        self.decoder = nn.LSTM(s.bits, s.hidden, s.layers, batch_first=True)
        self.to_frame = nn.Linear(s.hidden, self.n_features)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, n_mels, n_frames]`` dB -> the encoder's input ``[B, n_frames, n_features]``."""
        half = -self.fe.floor_db / 2
        f = (x[:, 0].transpose(1, 2).float() + half) / half
        return f @ self.dct if self.dct is not None else f

    def encode(self, f: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, T, n_features]`` -> relaxed codes ``[B, bits]``."""
        _, (h_n, _) = self.encoder(f)
        return torch.tanh(self.to_code(h_n[-1]))

    def decode(self, b: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, bits]`` -> the reconstructed frames in reverse order ``[B, n_frames, n_features]``."""
        out, _ = self.decoder(b[:, None, :].expand(-1, self.n_frames, -1))
        return self.to_frame(out)

    def forward(self, x: torch.Tensor, decode: bool = False):
        """``decode=False``: the relaxed codes ``h``. ``decode=True``: ``(h, b, recon, target)``, ``b`` the codes
        the losses use (straight-through signs or ``h``), ``recon`` the decoder's output and ``target`` the
        frames reversed in time, both ``[B, n_frames, n_features]``."""
        f = self.frames(x)
        h = self.encode(f).float()
        if not decode:
            return h
        b = straight_through_sign(h) if self.settings.straight_through else h
        return h, b, self.decode(b), f.flip(1)


def samaf_objective(
    net: nn.Module, model: SAMAF, x_a: torch.Tensor, x_b: torch.Tensor, temperature: float, gather: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAMAF's training objective on ``N`` (clean, degraded) pairs; one call of ``net`` on both views.

    pairs=True:  recon_w * MSE(both views) + hash_w * hash(b_a, b_b) + contrastive_w * NT-Xent(b_a, b_b)
                 + bit terms over all 2N codes;
    pairs=False: recon_w * MSE(clean view) + bit terms over the N clean codes (x_b does not enter the loss);
    bit terms:   balance_w * balance(b) + decorrelation_w * decorrelation(b)
                 + quant_w * quantisation(h) (without straight_through only).

    Returns ``(loss, z_a, z_b)``, the relaxed codes ``float [N, bits]`` of the two views.
    """
    s = model.settings
    n = x_a.shape[0]
    h, b, recon, target = net(torch.cat([x_a, x_b]), decode=True)
    z_a, z_b = h[:n], h[n:]
    if not s.pairs:  # the unsupervised original: the clean view only
        h, b, recon, target = h[:n], b[:n], recon[:n], target[:n]
    loss = s.recon_weight * reconstruction_loss(recon, target)
    if s.balance_weight:
        loss = loss + s.balance_weight * balance_loss(b)
    if s.decorrelation_weight:
        loss = loss + s.decorrelation_weight * decorrelation_loss(b)
    if s.quant_weight and not s.straight_through:
        loss = loss + s.quant_weight * quantisation_loss(h)
    if s.pairs:
        b_a, b_b = b[:n], b[n:]
        if s.hash_weight:
            loss = loss + s.hash_weight * hash_loss(b_a, b_b)
        if s.contrastive_weight:
            loss = loss + s.contrastive_weight * contrastive_code_loss(b_a, b_b, temperature, gather)
    return loss, z_a, z_b


def build(fe: FrontEnd = FrontEnd(), **settings) -> SAMAF:
    """The registry's factory of ``samaf``, ``samaf_small`` and ``samaf_mfcc`` (:mod:`fplib.models.registry`,
    which holds ``samaf_mfcc``'s front end)."""
    return SAMAF(SAMAFSettings(**settings), fe)
