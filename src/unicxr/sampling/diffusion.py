"""DDPM-family schedulers: MONAI's DDPM, DDIM and PNDM, wrapped (not rewritten) behind one sampler call.

Training: :func:`make_scheduler` from a :class:`DiffusionScheduleConfig` (``num_train_timesteps``,
beta schedule ``linear``/``scaled_linear``/``cosine``, ``epsilon``/``v_prediction``/``sample``) gives a
MONAI scheduler whose ``add_noise``/``get_velocity`` build the training pair; :func:`diffusion_target`
picks the target for the prediction type. Sampling: :func:`diffusion_sample` swaps in any of the three
samplers at any step count (as in diffusers, the sampler of a trained model is a sampling option).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from unicxr.config import StrictModel

__all__ = [
    "DiffusionScheduleConfig",
    "DIFFUSION_SAMPLERS",
    "make_scheduler",
    "diffusion_target",
    "diffusion_sample",
    "snr_loss_weights",
]

DIFFUSION_SAMPLERS = ("ddpm", "ddim", "pndm")
_BETAS = {"linear": "linear_beta", "scaled_linear": "scaled_linear_beta", "cosine": "cosine"}


class DiffusionScheduleConfig(StrictModel):
    """The noise schedule a diffusion model is trained with (saved in its config)."""

    num_train_timesteps: int = Field(1000, gt=1)
    beta_schedule: Literal["linear", "scaled_linear", "cosine"] = "scaled_linear"
    beta_start: float = Field(0.0015, gt=0)
    beta_end: float = Field(0.0195, gt=0)
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    clip_sample: bool = Field(False, description="clip x0 predictions to [-clip_range, clip_range]")
    clip_range: float = Field(8.0, gt=0, description="latents are not in [-1, 1]: a loose clip when on")
    snr_gamma: float | None = Field(
        None, gt=0, description="Min-SNR-gamma loss weighting (Hang et al. 2023; diffusers' --snr_gamma): "
        "each sample's loss × min(SNR, gamma) / (SNR [+ 1 for v]), which stops the many nearly noise-free "
        "timesteps from dominating the gradient; null: plain mean squared error")


def make_scheduler(cfg: DiffusionScheduleConfig, sampler: str = "ddpm"):
    """A MONAI scheduler (``ddpm``, ``ddim`` or ``pndm``) for the trained schedule ``cfg``."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler

    kw: dict = {"num_train_timesteps": cfg.num_train_timesteps, "schedule": _BETAS[cfg.beta_schedule]}
    if cfg.beta_schedule != "cosine":
        kw.update(beta_start=cfg.beta_start, beta_end=cfg.beta_end)
    if sampler == "ddpm":
        return DDPMScheduler(
            **kw, prediction_type=cfg.prediction_type, clip_sample=cfg.clip_sample,
            clip_sample_min=-cfg.clip_range, clip_sample_max=cfg.clip_range,
        )
    if sampler == "ddim":
        return DDIMScheduler(
            **kw, prediction_type=cfg.prediction_type, clip_sample=cfg.clip_sample,
            clip_sample_min=-cfg.clip_range, clip_sample_max=cfg.clip_range,
        )
    if sampler == "pndm":
        if cfg.prediction_type == "sample":
            raise ValueError("the PNDM sampler supports epsilon and v_prediction models only")
        return PNDMScheduler(**kw, prediction_type=cfg.prediction_type, skip_prk_steps=True, set_alpha_to_one=True)
    raise ValueError(f"unknown diffusion sampler {sampler!r} (known: {', '.join(DIFFUSION_SAMPLERS)})")


def diffusion_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Training target for ``prediction_type``: ε, v = α·ε − σ·x0 (MONAI ``get_velocity``), or x0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    return x0


def snr_loss_weights(scheduler, t: torch.Tensor, prediction_type: str, gamma: float | None) -> torch.Tensor:
    """Per-sample loss weights (B,) for integer timesteps t (B,): ones without ``gamma``; else the
    Min-SNR-gamma weights min(SNR, γ)/SNR (ε), min(SNR, γ)/(SNR + 1) (v) or min(SNR, γ) (x0), with
    SNR = ᾱ/(1 − ᾱ); each equals the x0-space weight min(SNR, γ) in the model's own target space."""
    if gamma is None:
        return torch.ones(t.shape[0], device=t.device)
    ac = scheduler.alphas_cumprod.to(t.device)[t.long()].float()
    snr = ac / (1.0 - ac).clamp_min(1e-12)
    w = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return w / snr.clamp_min(1e-12)
    if prediction_type == "v_prediction":
        return w / (snr + 1.0)
    return w


@torch.no_grad()
def diffusion_sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: DiffusionScheduleConfig,
    noise: torch.Tensor,
    *,
    steps: int,
    sampler: str = "ddim",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, int]:
    """Run a MONAI sampler from ``noise`` (B, ...) for ``steps`` steps.

    Args:
        model: ``model(x_t (B, ...), t (B,) long) -> prediction`` (guidance folded in).
        cfg: the schedule the model was trained with.
        noise: x_T.
        steps: inference steps (≤ num_train_timesteps).
        sampler: ``ddpm`` | ``ddim`` | ``pndm``.
        eta: DDIM stochasticity (0: deterministic).
        generator: randomness of DDPM/DDIM(eta > 0) steps (seeded ⇒ reproducible).

    Returns:
        (x_0 (B, ...), number of network evaluations).
    """
    from tqdm.auto import tqdm

    sched = make_scheduler(cfg, sampler)
    if not 1 <= steps <= cfg.num_train_timesteps:
        raise ValueError(f"steps must be in [1, {cfg.num_train_timesteps}], got {steps}")
    sched.set_timesteps(steps, device=noise.device)
    x = noise
    nfe = 0
    for t in tqdm(sched.timesteps, desc=f"sample ({sampler})", unit="step", disable=not progress, leave=False):
        tb = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        out = model(x, tb)
        nfe += 1
        if sampler == "ddpm":
            x, _ = sched.step(out, int(t), x, generator=generator)
        elif sampler == "ddim":
            x, _ = sched.step(out, int(t), x, eta=eta, generator=generator)
        else:
            x, _ = sched.step(out, int(t), x)
    return x, nfe
