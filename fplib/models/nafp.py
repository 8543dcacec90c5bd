"""NAFP (Chang et al., ICASSP 2021): the neural audio fingerprinter fplib started from.

``nafp``: the NAFP fingerprinter (Chang et al., ICASSP 2021, arXiv 2010.11910). Eight blocks of
[conv 1x3 (stride 2 along time) -> ELU -> LayerNorm -> conv 3x1 (stride 2 along frequency) -> ELU ->
LayerNorm] with 128, 128, 256, 256, 512, 512, 1024, 1024 channels turn a ``[B, 1, 256, 32]`` log-mel
into 1024 numbers; the "divide and encode" head splits them into 128 groups of 8, maps each group
8 -> 32 (ELU) -> 1, and L2-normalises the 128 outputs. The head is two batched matrix products, not
128 small modules in a Python loop. LayerNorm normalises over (channels, frequency, time) with an
element-wise affine, as NAFP's ``layer_norm2d``: 16,939,008 parameters.

``nafp_small``: the same network at a quarter of the width (32 ... 256 channels), for CPU training
and the demo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fplib.features import FrontEnd

NAFP_CHANNELS = (128, 128, 256, 256, 512, 512, 1024, 1024)
# time strides of the eight blocks in NAFP's code (the frequency stride is always 2)
NAFP_TIME_STRIDES = (2, 2, 2, 2, 1, 2, 1, 2)


@dataclass(frozen=True)
class NAFPSettings:
    width: float = 1.0  # channel multiplier (0.25 -> 32 ... 256 channels)
    emb_dim: int = 128  # fingerprint dimension
    head_hidden: int = 32  # hidden units per divide-and-encode group
    n_blocks: int = 8  # encoder blocks (8 reduce 256 x 32 to 1 x 1)

    def channels(self) -> tuple[int, ...]:
        return tuple(max(8, int(round(c * self.width))) for c in NAFP_CHANNELS[: self.n_blocks])


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_stride: int, in_shape: tuple[int, int]):
        super().__init__()
        f, t = in_shape
        t1 = (t - 1) // t_stride + 1
        f1 = (f - 1) // 2 + 1
        self.conv_t = nn.Conv2d(c_in, c_out, (1, 3), stride=(1, t_stride), padding=(0, 1))
        self.norm_t = nn.LayerNorm([c_out, f, t1])
        self.conv_f = nn.Conv2d(c_out, c_out, (3, 1), stride=(2, 1), padding=(1, 0))
        self.norm_f = nn.LayerNorm([c_out, f1, t1])
        self.out_shape = (f1, t1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_t(F.elu(self.conv_t(x)))
        return self.norm_f(F.elu(self.conv_f(x)))


class DivideAndEncode(nn.Module):
    """``[B, D]`` -> ``[B, emb_dim]``: D split into emb_dim groups, each group -> hidden (ELU) -> 1,
    all groups at once as two batched matrix products (one weight tensor per layer, not emb_dim
    separate modules; on CPU this is also faster than a grouped convolution)."""

    def __init__(self, d_in: int, emb_dim: int, hidden: int):
        super().__init__()
        if d_in % emb_dim:
            raise ValueError(f"encoder output {d_in} is not divisible into {emb_dim} groups")
        self.groups, self.size = emb_dim, d_in // emb_dim
        # initialised like nn.Linear(size, hidden) and nn.Linear(hidden, 1) in every group
        b1, b2 = 1 / math.sqrt(self.size), 1 / math.sqrt(hidden)
        self.w1 = nn.Parameter(torch.empty(emb_dim, self.size, hidden).uniform_(-b1, b1))
        self.b1 = nn.Parameter(torch.empty(emb_dim, hidden).uniform_(-b1, b1))
        self.w2 = nn.Parameter(torch.empty(emb_dim, hidden).uniform_(-b2, b2))
        self.b2 = nn.Parameter(torch.empty(emb_dim).uniform_(-b2, b2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.elu(torch.einsum("bgi,gio->bgo", x.view(-1, self.groups, self.size), self.w1) + self.b1)
        return torch.einsum("bgo,go->bg", h, self.w2) + self.b2


class NAFP(nn.Module):
    """Log-mel ``float32 [B, 1, n_mels, n_frames]`` -> fingerprints ``float32 [B, emb_dim]``, L2-normalised."""

    # CPU inference runtime (fplib.engine): OpenVINO fuses each convolution with its ELU; 1.2-1.6x ONNX
    # Runtime for this family at 1-256 windows per batch (benchmarks/bench_train.py, bench_query.py)
    cpu_runtime = "openvino"

    def __init__(self, settings: NAFPSettings = NAFPSettings(), fe: FrontEnd = FrontEnd()):
        super().__init__()
        self.settings, self.fe = settings, fe
        blocks, c_in, shape = [], 1, (fe.n_mels, fe.n_frames)
        for c, ts in zip(settings.channels(), NAFP_TIME_STRIDES):
            blocks.append(_Block(c_in, c, ts, shape))
            c_in, shape = c, blocks[-1].out_shape
        self.encoder = nn.Sequential(*blocks)
        d = c_in * shape[0] * shape[1]
        self.head = DivideAndEncode(d, settings.emb_dim, settings.head_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x).flatten(1)
        return F.normalize(self.head(z).float(), dim=1)


def build(fe: FrontEnd = FrontEnd(), **settings) -> NAFP:
    """The registry's factory of ``nafp`` and ``nafp_small`` (:mod:`fplib.models.registry`)."""
    return NAFP(NAFPSettings(**settings), fe)
