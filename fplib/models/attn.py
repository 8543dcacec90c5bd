"""ATTN (Singh, Demuynck, Arora, ISMIR 2022): a residual CNN with spectro-temporal attention.

``attn``: the network of "Attention-Based Audio Embeddings for Query-by-Example" (ISMIR 2022,
arXiv 2210.08624), as in the authors' released code. Every size is derived from the front end's window
(``fe.n_mels x fe.n_frames``), so the same code builds for fplib's 256 x 32 windows and for the
original 64 x 96 ones (16 kHz, 0.95 s, 64 mel bands, hop 160). Shapes below are channels x frequency x
time for fplib's ``[B, 1, 256, 32]`` input; C = 32 at full width:

==========  ===========================================================  ==============
stage       what                                                         output
==========  ===========================================================  ==============
stem        conv 3x3 1 -> C, same padding, BatchNorm, ReLU               32 x 256 x 32
block 1     residual attention block C -> C, stride 1, identity shortcut  32 x 256 x 32
block 2     residual attention block, stride 2, channels doubled         64 x 128 x 16
block 3                                                                  128 x 64 x 8
block 4                                                                  256 x 32 x 4
block 5                                                                  512 x 16 x 2
block 6                                                                  1024 x 8 x 1
flatten     ``flatten(1)``                                               8192
head        128 groups, each 64 -> 32 (ELU) -> 1; L2-normalised             128
==========  ===========================================================  ==============

The head is NAFP's grouped projection (:class:`~fplib.models.nafp.DivideAndEncode`), without any
normalisation layer. At 64 x 96 block 6 gives 1024 x 2 x 3 = 6144 numbers, groups of 48. A stride-2
size follows the convolution arithmetic, ``(n - 1) // 2 + 1``, so odd sizes build too. About 0.74 G
multiply-adds per window at 256 x 32 (0.56 G at 64 x 96).

Residual attention block: conv 3x3 (stride s) -> BatchNorm -> ReLU -> attention -> conv 3x3 ->
BatchNorm -> add the shortcut -> ReLU -> attention. The shortcut is the identity in block 1 and a
1x1 convolution with stride 2 in the others. Every convolution has a bias and the shortcut
convolution has no BatchNorm: that is the one choice that gives exactly the released network's
parameter count at 64 x 96 (encoder 19,648,640, of which 61,440 attention, + head 204,928 =
19,853,568); a BatchNorm on the shortcuts would add 3,968, bias-free convolutions remove 6,048.
``shortcut_norm=True`` adds that BatchNorm (the usual ResNet projection shortcut) for experiments.

Attention (:class:`SpectroTemporalAttention`), for each example and channel with feature map X
(F x T) and two learned vectors per channel, u (length T) and v (length F), drawn from a normal
distribution:

    a = softmax over F of tanh(X u)          (spectral weights, sum 1)
    b = softmax over T of tanh(X^T v)        (temporal weights, sum 1)
    output = X * g * outer(a, b)

Since outer(a, b) sums to 1, the mask's mean value is g / (F T). The released code fixes g = 100,
which gives a mean gain of about 0.016 per bin in block 1 and about 17 in block 6 of the 64 x 96
network (0.012 and 12.5 at 256 x 32): the scale of the activations changes from block to block with
the feature map's size.
``mask_gain=None`` (the default here) takes g = F T at every attention module, so the mask averages 1
everywhere and only redistributes energy over the map; ``mask_gain=100.0`` reproduces the original.

Initialisation of u and v: the released code draws them from N(0, 1). Then X u sums T terms of order 1,
tanh saturates at +-1 from the start, the masks of the twelve attention modules multiply up, and
training stalls: measured in fplib with the small variant, NT-Xent on a fixed batch of 32 pairs went
from 4.6 to 3.1 in 16 Adam steps at lr 1e-3 (no attention: 3.8 to 0.01), and the CPU recipe's data
gave a validation top-1 of 0.0-0.02 after two short epochs where ``nafp_small`` reached 0.67. fplib
draws them with the standard deviation of a linear layer's weights, 1 / sqrt(length) (fan-in), so that
tanh starts in its linear range and the masks start near 1 (``attention_init_std=None``, the default:
the same fixed batch went to 0.02); ``attention_init_std=1.0`` reproduces the released code.
Each block has two attention modules of (F + T) x channels parameters each; all channels and examples
are computed at once with ``einsum``. At fplib's 256 x 32 windows block 6's maps are 8 x 1: with a
single frame the temporal weights are 1 whatever v is, so block 6's attention is spectral only and its
two v vectors (2 x 8 x channels numbers, 16,384 in ``attn``) get no gradient. They are kept (and
counted below) so that the structure is the same for every input shape.

Training: NT-Xent (:func:`fplib.losses.contrastive`) with temperature 0.1 (the released code; Adam,
lr 1e-4, no weight decay, which are fplib's trainer defaults), hence the ``training`` of its registry
entries (:mod:`fplib.models.registry`).

Unlike the released code, the encoder's output is flattened with ``flatten(1)`` (a ``squeeze()``
there breaks a batch of one), and in eval mode a batch of one gives the same fingerprints as inside a
larger batch.

Parameters at 256 x 32: ``attn`` 19,968,256 (encoder 19,697,792, of which 110,592 attention, + head
270,464); at 64 x 96: 19,853,568, as above. ``attn_small`` (width 0.25: 8 ... 256 channels, for CPU
training and the demo): 1,328,416 at 256 x 32, about as many as ``nafp_small`` (1,503,840). Its CPU
training step costs about 2.6 times ``nafp_small``'s (forward + backward, 64 windows, 2 threads): the
high-resolution early blocks and the attention's elementwise work do not shrink with the width as
fast as the convolutions. (Width 0.125, 4 ... 128 channels and 362,544 parameters, is about 1.3 times.)
The full ``attn`` forward pass costs about 1.8 times ``nafp``'s (16 windows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fplib.features import FrontEnd
from fplib.models.nafp import DivideAndEncode

ATTN_CHANNELS = 32  # stem and block-1 channels at full width; each further block doubles them


@dataclass(frozen=True)
class ATTNSettings:
    width: float = 1.0  # channel multiplier (0.25 -> 8 ... 256 channels)
    emb_dim: int = 128  # fingerprint dimension (groups of the head)
    head_hidden: int = 32  # hidden units per head group
    mask_gain: float | None = None  # attention gain g; None: F * T (mean mask 1), 100.0: the released code
    n_blocks: int = 6  # residual attention blocks (the first at stride 1, the others at stride 2)
    shortcut_norm: bool = False  # BatchNorm after the 1x1 shortcut convolution (not in the released code)
    attention_init_std: float | None = None  # u, v ~ N(0, std^2); None: 1 / sqrt(length); 1.0: the released code

    def channels(self) -> tuple[int, ...]:
        """Output channels of the stem and of each block."""
        c = max(4, int(round(ATTN_CHANNELS * self.width)))
        return (c,) + tuple(c * 2**i for i in range(self.n_blocks))


def _down(n: int, stride: int) -> int:
    """Output size of a 3x3 (padding 1) or 1x1 (no padding) convolution with this stride."""
    return (n - 1) // stride + 1


class SpectroTemporalAttention(nn.Module):
    """``[B, C, F, T]`` -> the same shape: each channel's map times ``g * outer(a, b)`` (module docstring)."""

    def __init__(self, channels: int, shape: tuple[int, int], gain: float | None = None, init_std: float | None = None):
        super().__init__()
        f, t = shape
        # temporal vector: X u -> one score per frequency; spectral vector: X^T v -> one score per frame
        self.u = nn.Parameter(torch.randn(channels, t) * (t**-0.5 if init_std is None else init_std))
        self.v = nn.Parameter(torch.randn(channels, f) * (f**-0.5 if init_std is None else init_std))
        self.gain = float(f * t) if gain is None else float(gain)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(torch.tanh(torch.einsum("bcft,ct->bcf", x, self.u)), dim=-1)
        b = torch.softmax(torch.tanh(torch.einsum("bcft,cf->bct", x, self.v)), dim=-1)
        return self.gain * a.unsqueeze(-1) * b.unsqueeze(-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x)


class ResidualAttentionBlock(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        in_shape: tuple[int, int],
        gain: float | None,
        shortcut_norm: bool = False,
        init_std: float | None = None,
    ):
        super().__init__()
        self.out_shape = (_down(in_shape[0], stride), _down(in_shape[1], stride))
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.att1 = SpectroTemporalAttention(c_out, self.out_shape, gain, init_std)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.att2 = SpectroTemporalAttention(c_out, self.out_shape, gain, init_std)
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        else:
            conv = nn.Conv2d(c_in, c_out, 1, stride=stride)
            self.shortcut = nn.Sequential(conv, nn.BatchNorm2d(c_out)) if shortcut_norm else conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.att1(F.relu(self.bn1(self.conv1(x))))
        h = self.bn2(self.conv2(h))
        return self.att2(F.relu(h + self.shortcut(x)))


class ATTN(nn.Module):
    """Log-mel ``float32 [B, 1, n_mels, n_frames]`` -> fingerprints ``float32 [B, emb_dim]``, L2-normalised."""

    # CPU inference runtime (fplib.engine): OpenVINO ran this family at 0.6-0.8x ONNX Runtime's speed
    # (20-256 windows per batch; benchmarks/bench_query.py shows it end to end)
    cpu_runtime = "onnxruntime"

    def __init__(self, settings: ATTNSettings = ATTNSettings(), fe: FrontEnd = FrontEnd()):
        super().__init__()
        if settings.n_blocks < 1:
            raise ValueError(f"n_blocks must be at least 1, got {settings.n_blocks}")
        self.settings, self.fe = settings, fe
        chans = settings.channels()
        self.stem = nn.Sequential(nn.Conv2d(1, chans[0], 3, padding=1), nn.BatchNorm2d(chans[0]), nn.ReLU())
        blocks, c_in, shape = [], chans[0], (fe.n_mels, fe.n_frames)
        for i, c in enumerate(chans[1:]):
            blocks.append(
                ResidualAttentionBlock(
                    c_in,
                    c,
                    1 if i == 0 else 2,
                    shape,
                    settings.mask_gain,
                    settings.shortcut_norm,
                    settings.attention_init_std,
                )
            )
            c_in, shape = c, blocks[-1].out_shape
        self.blocks = nn.Sequential(*blocks)
        self.out_shape = (c_in, *shape)
        self.head = DivideAndEncode(c_in * shape[0] * shape[1], settings.emb_dim, settings.head_hidden)

    def encoder(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, n_mels, n_frames]`` -> the last block's maps ``[B, C, F, T]``."""
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x).flatten(1)
        return F.normalize(self.head(z).float(), dim=1)


def build(fe: FrontEnd = FrontEnd(), **settings) -> ATTN:
    """The registry's factory of ``attn`` and ``attn_small`` (:mod:`fplib.models.registry`)."""
    return ATTN(ATTNSettings(**settings), fe)
