"""Exponential moving average of model weights, kept as a full copy of the model."""

from __future__ import annotations

import copy

import torch

__all__ = ["EMA"]


class EMA:
    """EMA weights: ``shadow = d * shadow + (1 - d) * param`` after each optimizer step.

    ``d = min(decay, (1 + n) / (10 + n))`` with warmup (n = number of updates), else ``decay``.
    Buffers (e.g. BatchNorm statistics) are copied. The shadow model is always float32 on the
    model's device and never requires grad.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).float().eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach().float() for p in model.parameters()]
        torch._foreach_mul_(ema_params, d)
        torch._foreach_add_(ema_params, params, alpha=1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
        self.num_updates += 1
