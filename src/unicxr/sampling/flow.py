"""Rectified flow: x_t = (1 − t)·x0 + t·x1 with velocity x1 − x0; ODE samplers from t = 1 to t = 0.

``x1`` is Gaussian noise (latent DiT, unified model) or a source latent (CrossFlow: the text latent).
Training times follow a logit-normal law with an optional resolution shift (as in SD3/UniX):
``shift_t(t, s) = s·t / (1 + (s − 1)·t)`` moves mass toward the noisy end for larger latents.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "flow_interpolate",
    "flow_target",
    "sample_flow_t",
    "shift_t",
    "time_grid",
    "flow_sample",
    "FLOW_SAMPLERS",
]

FLOW_SAMPLERS = ("euler", "heun", "monai_rflow")


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def flow_interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − t)·x0 + t·x1; x0, x1 (B, ...), t (B,) in [0, 1]."""
    tt = _bcast(t, x0)
    return (1 - tt) * x0 + tt * x1


def flow_target(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The velocity d x_t / d t = x1 − x0."""
    return x1 - x0


def shift_t(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Resolution shift of flow times in [0, 1] (shift 1: identity; > 1: noisier)."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def sample_flow_t(
    batch_size: int,
    *,
    mode: str = "logit_normal",
    mean: float = 0.0,
    std: float = 1.0,
    shift: float = 1.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training times (B,) in (0, 1): ``logit_normal`` (sigmoid of N(mean, std²)) or ``uniform``,
    then the resolution shift."""
    if mode == "uniform":
        t = torch.rand(batch_size, generator=generator)
    elif mode == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(batch_size, generator=generator))
    else:
        raise ValueError(f"unknown flow time sampling {mode!r} (uniform, logit_normal)")
    return shift_t(t, shift).to(device)


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Sampling times 1 = t_0 > t_1 > … > t_steps = 0 (steps + 1 values), uniform then shifted."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_t(torch.linspace(1.0, 0.0, steps + 1), shift)


@torch.no_grad()
def flow_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    *,
    steps: int,
    sampler: str = "euler",
    shift: float = 1.0,
    progress: bool = False,
) -> tuple[torch.Tensor, int]:
    """Integrate dx/dt = v(x, t) from t = 1 (``x1``) to t = 0.

    Args:
        velocity: ``v(x (B, ...), t (B,)) -> (B, ...)`` (guidance already folded in).
        x1: start (B, ...): noise, or a source latent for CrossFlow.
        steps: number of intervals.
        sampler: ``euler`` (1 evaluation per step), ``heun`` (2 per step, Euler on the last), or
            ``monai_rflow`` (MONAI ``RFlowScheduler.step``, Euler with MONAI's time convention).
        shift: resolution shift of the time grid.

    Returns:
        (x0 estimate (B, ...), number of network evaluations).
    """
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"unknown flow sampler {sampler!r} (known: {', '.join(FLOW_SAMPLERS)})")
    if sampler == "monai_rflow":
        return _monai_rflow(velocity, x1, steps=steps, shift=shift, progress=progress)
    ts = time_grid(steps, shift).to(x1.device)
    x = x1
    nfe = 0
    from tqdm.auto import tqdm

    for i in tqdm(range(steps), desc=f"sample ({sampler})", unit="step", disable=not progress, leave=False):
        t, t_next = ts[i], ts[i + 1]
        tb = t.expand(x.shape[0])
        v = velocity(x, tb)
        nfe += 1
        dt = t_next - t  # negative
        x_euler = x + dt * v
        if sampler == "heun" and float(t_next) > 0:
            v2 = velocity(x_euler, t_next.expand(x.shape[0]))
            nfe += 1
            x = x + dt * 0.5 * (v + v2)
        else:
            x = x_euler
    return x, nfe


def _monai_rflow(velocity, x1, *, steps, shift, progress):
    """Euler through MONAI's RFlowScheduler: its timesteps run T → 0 with x = (t/T)·noise + (1 − t/T)·x0
    and its velocity is x0 − noise, i.e. minus ours."""
    from monai.networks.schedulers import RFlowScheduler

    T = 1000
    sched = RFlowScheduler(num_train_timesteps=T, use_discrete_timesteps=False)
    sched.set_timesteps(steps, device=x1.device)
    grid = (time_grid(steps, shift) * T).round().to(x1.device)  # MONAI casts the next step to int
    x = x1
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        v = velocity(x, (t / T).expand(x.shape[0]))
        x, _ = sched.step(-v, float(t), x, float(t_next))
    return x, steps
