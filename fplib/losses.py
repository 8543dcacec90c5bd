"""NT-Xent (SimCLR) loss over clean anchors and their degraded replicas (temperature 0.05, as NAFP).

For N pairs the 2N embeddings form one set; each item's positive is its partner, and the other
2N - 2 items are its negatives. The loss is the mean cross-entropy over all 2N items, so it is
symmetric in the two views. Under ``torch.distributed`` the embeddings of every rank are gathered
(with gradients) so that negatives come from the global batch: the loss and its gradients then equal
those of one process holding the whole global batch (DDP averages the ranks' gradients).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.05, gather: bool = True) -> torch.Tensor:
    """``z_a, z_b: float [N, D]`` L2-normalised embeddings of the two views (row i of each is a pair)
    -> scalar loss. With ``gather`` and an initialised process group, negatives span all ranks."""
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"expected two [N, D] batches of the same shape, got {list(z_a.shape)} and {list(z_b.shape)}")
    n = z_a.shape[0]
    if gather and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_gather

        rank, world = dist.get_rank(), dist.get_world_size()
        all_a, all_b = torch.cat(all_gather(z_a)), torch.cat(all_gather(z_b))
    else:
        rank, world, all_a, all_b = 0, 1, z_a, z_b
    total = n * world
    keys = torch.cat([all_a, all_b]).float()  # [2 * total, D]
    queries = torch.cat([z_a, z_b]).float()  # this rank's 2N anchors
    logits = queries @ keys.T / temperature
    own = torch.arange(n, device=z_a.device) + rank * n
    rows = torch.arange(2 * n, device=z_a.device)
    self_idx = torch.cat([own, own + total])  # where each anchor sits among the keys
    pos_idx = torch.cat([own + total, own])  # its partner
    logits[rows, self_idx] = float("-inf")  # an item is not its own negative
    return F.cross_entropy(logits, pos_idx)


def contrastive(
    net: torch.nn.Module,
    model: torch.nn.Module,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    temperature: float,
    gather: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The objective of the contrastive families (NAFP, ATTN): NT-Xent over one forward pass of both
    views; returns ``(loss, z_a, z_b)`` (see :mod:`fplib.models.registry`)."""
    z_a, z_b = net(torch.cat([x_a, x_b])).float().chunk(2)
    return nt_xent(z_a, z_b, temperature, gather), z_a, z_b
