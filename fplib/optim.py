"""Optimisers and the learning-rate schedule.

LAMB (You et al., "Large Batch Optimization for Deep Learning", 2019) is written here (about 30
lines, tested against a NumPy transcription of the paper's update) because the packaged versions
are unmaintained or pull in torchvision, which has no CPU build on these machines.
"""

from __future__ import annotations

import math

import torch


class Lamb(torch.optim.Optimizer):
    """Adam moments with bias correction, decoupled weight decay, and a per-tensor trust ratio
    ``||w|| / ||update||`` that scales each layer's step."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ):
        if lr <= 0 or eps <= 0 or not all(0 <= b < 1 for b in betas) or weight_decay < 0:
            raise ValueError(f"bad Lamb settings lr={lr} betas={betas} eps={eps} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def make_optimizer(name: str, model: torch.nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``Adam`` or ``Lamb`` (case-insensitive). Weight decay skips biases and norms."""
    decay = [p for p in model.parameters() if p.ndim > 1 and p.requires_grad]
    other = [p for p in model.parameters() if p.ndim <= 1 and p.requires_grad]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    key = name.lower()
    if key == "adam":
        return torch.optim.AdamW(groups, lr=lr) if weight_decay else torch.optim.Adam(groups, lr=lr)
    if key == "lamb":
        return Lamb(groups, lr=lr)
    raise ValueError(f"unknown optimiser {name!r}: choose Adam or Lamb")


def warmup_cosine(total_steps: int, warmup_steps: int, min_factor: float = 0.0):
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine decay to ``min_factor`` at
    ``total_steps`` (the run's real length)."""
    if total_steps < 1:
        raise ValueError("total_steps must be >= 1")
    warmup_steps = min(warmup_steps, total_steps - 1) if total_steps > 1 else 0

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
