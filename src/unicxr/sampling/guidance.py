"""Classifier-free guidance: condition dropout at training time, guided prediction at sampling time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["drop_condition", "cfg_combine", "cfg_rescale", "apg_combine", "APG_OFF", "guided", "in_interval", "parse_interval",
           "parse_apg"]


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


def apg_combine(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    eta: float,
    threshold: float = 0.0,
) -> torch.Tensor:
    """Adaptive projected guidance (Sadat et al. 2024, "Eliminating oversaturation and artifacts of high
    guidance scales in diffusion models"), for model outputs whose denoised estimate is affine in them.

    With ``D = a·x + b·out`` the denoised estimate (x0) of output ``out`` at sample ``x`` ((B, ...);
    ``a``, ``b`` broadcastable, e.g. (B, 1, 1, 1)), the guidance difference ``Δ = D(cond) − D(uncond) =
    b·(cond − uncond)`` is cut to norm ≤ ``threshold`` per item (0: no cut), split into its part along
    ``D(cond)`` (Δ∥, which raises contrast and saturation as the scale grows) and the rest (Δ⊥), and the
    guided estimate ``D(cond) + (scale − 1)·(Δ⊥ + eta·Δ∥)`` is returned as a model output. ``eta`` 1 and
    no threshold is plain guidance; the paper's default is ``eta`` 0. Items with ``b`` = 0 (no noise
    left) take plain guidance.
    """
    dims = tuple(range(1, cond.ndim))
    af, bf = (torch.as_tensor(v, dtype=torch.float32, device=cond.device) for v in (a, b))
    bf = torch.broadcast_to(bf, cond.shape)
    ok = bf.abs() > 1e-8
    diff = (cond - uncond).float()
    delta = bf * diff
    if threshold > 0:
        norm = delta.flatten(1).norm(dim=1).view(-1, *([1] * (cond.ndim - 1)))
        delta = delta * (threshold / norm.clamp_min(1e-12)).clamp(max=1.0)
    d_cond = af * x.float() + bf * cond.float()
    along = (delta * d_cond).sum(dims, keepdim=True) / (d_cond * d_cond).sum(dims, keepdim=True).clamp_min(1e-12)
    parallel = along * d_cond
    shaped = (delta - parallel) + eta * parallel
    step = torch.where(ok, shaped / torch.where(ok, bf, torch.ones_like(bf)), diff)
    return (cond.float() + (scale - 1.0) * step).to(cond.dtype)


APG_OFF: tuple[float, float] = (1.0, 0.0)
"""(eta, r) of plain guidance: what ``--apg off`` parses to, and how a caller overrides a model's ``default_apg``."""


def parse_apg(text: str | None) -> tuple[float, float] | None:
    """``"ETA"`` or ``"ETA,R"`` → (eta, r) for :func:`apg_combine` (eta ≥ 0: weight of the part of the
    guidance along the conditional estimate; r ≥ 0: norm cut, 0 none); None or "" → None (the model's
    default); "off" or "none" → (1, 0), plain guidance. Raises ValueError naming what is wrong."""
    if text is None or not str(text).strip():
        return None
    if str(text).strip().lower() in ("off", "none"):
        return APG_OFF
    parts = [x.strip() for x in str(text).split(",")]
    try:
        vals = [float(x) for x in parts]
    except ValueError:
        raise ValueError(f"APG {text!r}: expected ETA or ETA,R (e.g. 0 or 0,15)") from None
    if len(vals) not in (1, 2) or any(v < 0 or v != v for v in vals):
        raise ValueError(f"APG {text!r}: expected ETA or ETA,R with both >= 0 (e.g. 0 or 0,15)")
    return vals[0], (vals[1] if len(vals) == 2 else 0.0)


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
    apg: tuple[float, float] | None = None,
    to_x0: tuple[torch.Tensor, torch.Tensor] | None = None,
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
        apg: (eta, r) of :func:`apg_combine` for the null branch's guidance term (None: plain);
            needs ``to_x0`` = (a, b) with the denoised estimate ``a·x + b·output``.
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
    if use_null and apg is not None:
        if to_x0 is None:
            raise ValueError("APG needs to_x0: the denoised estimate's coefficients (a, b) at this step")
        out = apg_combine(c, outs[1], scale, x, *to_x0, *apg)
    else:
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
