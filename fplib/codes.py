"""Fingerprint kinds: how a network's outputs are stored and compared.

* ``float``: unit vectors ``float32 [N, D]``; similarity = inner product (cosine), in [-1, 1].
* ``binary``: D-bit codes, the signs of the network's relaxed outputs (bit = output > 0), stored
  packed ``uint8 [N, D / 8]`` (numpy's ``packbits``, most significant bit first) and compared by Hamming
  distance h. Similarity = 1 - 2 h / D, the inner product of the +-1 codes divided by D: an affine map of
  the bit agreement 1 - h / D that puts unrelated codes at 0 and identical ones at 1, like unit vectors,
  so sequence matching (where a window outside the song counts 0) and thresholds read the same way for
  both kinds.
"""

from __future__ import annotations

import numpy as np
import torch

KINDS = ("float", "binary")
# bits set in each byte value
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"fingerprint kind must be one of {KINDS}, got {kind!r}")
    return kind


def encode(z: np.ndarray | torch.Tensor, kind: str) -> np.ndarray:
    """Network outputs ``float [N, D]`` -> stored fingerprints: ``float32 [N, D]`` or packed ``uint8 [N, D / 8]``."""
    z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
    if check_kind(kind) == "float":
        return np.ascontiguousarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] % 8:
        raise ValueError(f"binary codes need [N, D] with D a multiple of 8, got {list(z.shape)}")
    return np.packbits(z > 0, axis=1)


def dim(stored: np.ndarray, kind: str) -> int:
    """The fingerprint dimension D (bits for binary codes) of stored fingerprints ``[N, D or D / 8]``."""
    return stored.shape[1] * (8 if kind == "binary" else 1)


def stored_dtype(kind: str) -> np.dtype:
    return np.dtype(np.float32 if check_kind(kind) == "float" else np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between packed codes, element-wise over rows (``a, b: uint8 [..., D / 8]`` of the
    same shape -> ``int [...]``)."""
    return POPCOUNT[np.bitwise_xor(a, b)].sum(axis=-1, dtype=np.int64)


def similarity(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """Row-wise similarity of stored fingerprints of the same shape ``[..., D or D / 8]`` -> ``float [...]``."""
    if check_kind(kind) == "float":
        return np.einsum("...d,...d->...", a, b)
    return 1.0 - 2.0 * hamming(a, b) / (8 * a.shape[-1])


def similarity_matrix(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """All-pairs similarity of stored fingerprints ``a [M, .]`` and ``b [N, .]`` -> ``float [M, N]``."""
    if check_kind(kind) == "float":
        return a @ b.T
    return 1.0 - 2.0 * hamming(a[:, None, :], b[None, :, :]) / (8 * a.shape[-1])


def torch_similarity_matrix(za: torch.Tensor, zb: torch.Tensor, kind: str) -> torch.Tensor:
    """All-pairs similarity of network outputs ``[M, D]`` and ``[N, D]`` as they will be stored and
    compared: inner product (float), or 1 - 2 h / D of their sign codes (binary)."""
    if check_kind(kind) == "float":
        return za @ zb.T
    sa, sb = (za > 0).float() * 2 - 1, (zb > 0).float() * 2 - 1
    return sa @ sb.T / za.shape[1]


def bytes_per_fingerprint(d: int, kind: str) -> int:
    return d // 8 if check_kind(kind) == "binary" else 4 * d
