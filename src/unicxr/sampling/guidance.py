"""Classifier-free guidance: condition dropout at training time, guided prediction at sampling time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["drop_condition", "cfg_combine", "guided"]


def drop_condition(batch_size: int, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool (B,) mask of items whose condition is replaced by the null condition (probability ``p``;
    draws from the global torch RNG, which the trainer seeds per step)."""
    if p <= 0:
        return torch.zeros(batch_size, dtype=torch.bool, device=device)
    return torch.rand(batch_size, device=device) < p


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale · (cond − uncond)`` (scale 1: the conditional prediction)."""
    return uncond + scale * (cond - uncond)


def guided(
    fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    cond: Any,
    null_cond: Any,
    scale: float,
    concat: Callable[[Any, Any], Any] | None = None,
    contrast: Any = None,
    contrast_scale: float = 0.0,
) -> torch.Tensor:
    """Guided model output ``fn(x, t, cond)`` with scale ``scale``.

    Scale 1 runs only the conditional branch (so it equals the conditional output exactly); otherwise
    the conditional and null branches run as one doubled batch.

    Args:
        fn: the network, ``fn(x (B, ...), t (B,), cond) -> (B, ...)``.
        x, t: current sample and time.
        cond, null_cond: the condition and the null condition (same structure, batch B).
        scale: guidance scale.
        concat: joins two conditions along the batch (default: ``torch.cat`` for tensors, per key for
            dicts of tensors).
        contrast, contrast_scale: a third condition (same structure) and its scale s: the output gains
            ``s · (fn(cond) − fn(contrast))``, a guidance term along what tells ``cond`` from ``contrast``
            alone (e.g. the prompt with its sides swapped); its branch joins the same batch.
    """
    join = concat or _concat
    if contrast_scale and contrast is not None:
        if scale == 1.0:
            c, m = fn(torch.cat([x, x]), torch.cat([t, t]), join(cond, contrast)).chunk(2)
            return c + contrast_scale * (c - m)
        c, u, m = fn(torch.cat([x, x, x]), torch.cat([t, t, t]), join(join(cond, null_cond), contrast)).chunk(3)
        return cfg_combine(c, u, scale) + contrast_scale * (c - m)
    if scale == 1.0:
        return fn(x, t, cond)
    out = fn(torch.cat([x, x]), torch.cat([t, t]), join(cond, null_cond))
    c, u = out.chunk(2)
    return cfg_combine(c, u, scale)


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, dict):
        return {k: _concat(a[k], b[k]) for k in a}
    if a is None:
        return None
    raise TypeError(f"cannot batch conditions of type {type(a).__name__}")
