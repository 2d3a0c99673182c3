"""Classifier-free guidance: condition dropout at training time, guided prediction at sampling time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    contrasts: Sequence[tuple[Any, float]] = (),
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
        contrasts: more conditions (same structure) with their scales: each (c', s) adds
            ``s · (fn(cond) − fn(c'))``, a guidance term along what alone tells ``cond`` from ``c'`` (e.g.
            the prompt with its sides swapped, or with its findings switched off); a scale of 0 runs no
            branch. All branches join one batch.
    """
    use_null = scale != 1.0
    extra = [(c, float(s)) for c, s in contrasts if s and c is not None]
    branches = [cond] + [null_cond] * use_null + [c for c, _ in extra]
    if len(branches) == 1:
        return fn(x, t, cond)
    join = concat or _concat
    joined = branches[0]
    for other in branches[1:]:
        joined = join(joined, other)
    k = len(branches)
    outs = fn(torch.cat([x] * k), torch.cat([t] * k), joined).chunk(k)
    c = outs[0]
    out = cfg_combine(c, outs[1], scale) if use_null else c
    for (_, s), o in zip(extra, outs[1 + use_null:], strict=True):
        out = out + s * (c - o)
    return out


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, dict):
        return {k: _concat(a[k], b[k]) for k in a}
    if a is None:
        return None
    raise TypeError(f"cannot batch conditions of type {type(a).__name__}")
