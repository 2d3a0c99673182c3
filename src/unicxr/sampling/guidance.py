"""Classifier-free guidance: condition dropout at training time, guided prediction at sampling time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["drop_condition", "cfg_combine", "cfg_rescale", "guided", "in_interval", "parse_interval"]


def drop_condition(batch_size: int, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool (B,) mask of items whose condition is replaced by the null condition (probability ``p``;
    draws from the global torch RNG, which the trainer seeds per step)."""
    if p <= 0:
        return torch.zeros(batch_size, dtype=torch.bool, device=device)
    return torch.rand(batch_size, device=device) < p


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale · (cond − uncond)`` (scale 1: the conditional prediction)."""
    return uncond + scale * (cond - uncond)


def cfg_rescale(out: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed"):
    scale the guided output ``out`` (B, ...) so each item's standard deviation (over all non-batch
    dims) matches the conditional output ``cond``, then mix ``phi · rescaled + (1 − phi) · out``.

    A large guidance scale inflates the prediction's spread, which shows as over-saturated, blown-out
    images; the rescale keeps the guided direction and removes the inflation. ``phi`` 0 returns
    ``out`` unchanged, 1 the fully rescaled output.
    """
    if not phi:
        return out
    dims = tuple(range(1, out.ndim))
    ratio = cond.float().std(dim=dims, keepdim=True) / out.float().std(dim=dims, keepdim=True).clamp_min(1e-8)
    return (phi * out * ratio.to(out.dtype) + (1.0 - phi) * out).to(out.dtype)


def parse_interval(text: str | None) -> tuple[float, float] | None:
    """``"LO,HI"`` → (lo, hi) with 0 ≤ lo < hi ≤ 1 (noise levels: 1 pure noise, 0 clean); None or an
    empty string → None. Raises ValueError naming what is wrong."""
    if text is None or not str(text).strip():
        return None
    parts = [x.strip() for x in str(text).split(",")]
    try:
        lo, hi = (float(x) for x in parts)
    except ValueError:
        raise ValueError(f"guidance interval {text!r}: expected two numbers LO,HI (e.g. 0.1,0.8)") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"guidance interval {text!r}: need 0 <= LO < HI <= 1 (noise levels, 1 = pure noise)")
    return lo, hi


def in_interval(level: float, interval: tuple[float, float] | None) -> bool:
    """Whether guidance applies at noise level ``level`` (0 clean … 1 pure noise): always without an
    interval, else for ``lo <= level <= hi`` (so "0,1" is every step). After Kynkäänniemi et al. 2024,
    "Applying guidance in a limited interval": guidance at the noisiest steps mostly costs diversity,
    at the last ones it does little."""
    return interval is None or interval[0] <= level <= interval[1]


def guided(
    fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    cond: Any,
    null_cond: Any,
    scale: float,
    concat: Callable[[Any, Any], Any] | None = None,
    contrasts: Sequence[tuple[Any, float]] = (),
    rescale: float = 0.0,
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
        rescale: guidance rescale ``phi`` of :func:`cfg_rescale`, applied to the combined output
            (0: off).
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
    return cfg_rescale(out, c, rescale)


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, dict):
        return {k: _concat(a[k], b[k]) for k in a}
    if a is None:
        return None
    raise TypeError(f"cannot batch conditions of type {type(a).__name__}")
