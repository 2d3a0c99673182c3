"""Latent transformer trained with rectified flow (UniX's generation branch, SD3/DiT style).

Patchified latents go through adaLN-Zero DiT blocks conditioned on the flow time and the pooled
condition; text/findings tokens enter by **joint** attention (prepended to the patch sequence, masked
where padding) or **cross** attention. Training: x_t = (1 − t)·x0 + t·ε, velocity target ε − x0,
logit-normal t with a resolution shift. Sampling: Euler/Heun (or MONAI's RFlow step) from t = 1 to 0
with classifier-free guidance (:mod:`unicxr.sampling`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unicxr.labels import NUM_FINDINGS
from unicxr.models.base import register_model
from unicxr.models.dit import AdaLNBlock, FinalLayer, PatchEmbed, patchify, unpatchify
from unicxr.models.generator_base import FlowGeneratorConfig, GeneratorBase, SideMapConfig
from unicxr.sampling import (
    FLOW_SAMPLERS,
    TimestepEmbedder,
    flow_interpolate,
    flow_sample,
    flow_target,
    sample_flow_t,
)

__all__ = ["LatentDiTConfig", "LatentDiT", "resolution_shift"]


def resolution_shift(numel: int, base_numel: int = 4 * 16 * 16) -> float:
    """SD3-style shift √(numel / base): larger latents get noisier training and sampling times."""
    return max(1.0, math.sqrt(numel / base_numel))


class LatentDiTConfig(FlowGeneratorConfig, SideMapConfig):
    """Config of :class:`LatentDiT`."""

    patch: int = Field(2, ge=1)
    dim: int = Field(192, ge=8)
    depth: int = Field(6, ge=1)
    heads: int = Field(6, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    text_mode: Literal["joint", "cross"] = "joint"
    shift: float | None = Field(None, ge=1.0, description="time shift (null: resolution_shift of the latent)")
    positions: Literal["learned", "sincos"] = Field(
        "learned", description="patch positions: a learned table, or 2D sin-cos (any latent size: low-res phases)"
    )
    default_steps: int = 25
    default_sampler: str = "euler"


@register_model
class LatentDiT(GeneratorBase):
    """Velocity network v(x_t, t, condition) over latents (B, C, h, w)."""

    model_type = "latent_dit"
    config_class = LatentDiTConfig
    contrast_guidance_ok = True
    default_samplers = FLOW_SAMPLERS

    def __init__(self, config: LatentDiTConfig, components: dict[str, Any] | None = None) -> None:
        super().__init__(config, components)
        cfg = self.config
        c, s, d = cfg.latent_channels, cfg.latent_size, cfg.dim
        self.embed = PatchEmbed(c, s, cfg.patch, d, positions=cfg.positions)
        self.t_embed = TimestepEmbedder(d)
        self.pool_proj = nn.Linear(cfg.condition.dim, d)
        self.tok_proj = nn.Linear(cfg.condition.dim, d) if cfg.text_mode == "joint" else None
        cross = cfg.condition.dim if cfg.text_mode == "cross" else None
        self.blocks = nn.ModuleList(AdaLNBlock(d, cfg.heads, cfg.mlp_ratio, cross_dim=cross) for _ in range(cfg.depth))
        self.final = FinalLayer(d, c * cfg.patch * cfg.patch)
        self.side_embed: nn.Linear | None = None
        if cfg.side_map:
            # per-patch embedding of the side map, zero-initialised: the model starts as without it
            self.side_embed = nn.Linear(2 * NUM_FINDINGS * cfg.patch * cfg.patch, d)
            nn.init.zeros_(self.side_embed.weight)
            nn.init.zeros_(self.side_embed.bias)

    @property
    def shift(self) -> float:
        return self.shift_for(math.prod(self.latent_shape))

    def shift_for(self, numel: int) -> float:
        """Time shift for latents of ``numel`` values (the configured one, else by resolution)."""
        cfg = self.config
        return cfg.shift if cfg.shift is not None else resolution_shift(numel)

    def net(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
            pooled: torch.Tensor, sides: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity (B, C, h, w) at x (B, C, h, w), flow time t (B,) in [0, 1], condition tokens
        (B, S, Dc) with mask (B, S), pooled (B, Dc) and, with ``side_map``, the finding sides (B, 2, 14)
        (:meth:`finding_sides`), embedded per patch and added to the patch tokens."""
        cfg = self.config
        h = self.embed(x)
        if self.side_embed is not None:
            if sides is None:
                raise ValueError("side_map: the network needs the condition's sides")
            planes = self.side_planes(sides.to(x.dtype), x.shape[-2], x.shape[-1])  # (B, 28, h, w)
            h = h + self.side_embed(patchify(planes, cfg.patch))
        n = h.shape[1]
        c = self.t_embed(t) + self.pool_proj(pooled)
        if cfg.text_mode == "joint":
            seq = torch.cat([self.tok_proj(tokens), h], dim=1)
            keys = torch.cat([mask, torch.ones(h.shape[0], n, dtype=torch.bool, device=h.device)], dim=1)
            for blk in self.blocks:
                seq = blk(seq, c, mask=keys[:, None, None, :])
            h = seq[:, -n:]
        else:
            cmask = mask[:, None, None, :]
            for blk in self.blocks:
                h = blk(h, c, context=tokens, context_mask=cmask)
        out = self.final(h, c)
        return unpatchify(out, cfg.patch, cfg.latent_channels, x.shape[-2], x.shape[-1])

    def forward(self, z0: torch.Tensor, cond: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        b = z0.shape[0]
        noise = torch.randn_like(z0)
        t = sample_flow_t(b, mode=cfg.t_sampling, mean=cfg.t_mean, std=cfg.t_std, shift=self.shift_for(z0[0].numel()),
                          device=z0.device)
        xt = flow_interpolate(z0, noise, t)
        pred = self.net(xt, t, *self.encode_condition(cond, self.drop_mask(b, z0.device)))
        loss = F.mse_loss(pred.float(), flow_target(z0, noise).float())
        return loss, {"mse": float(loss.detach())}

    def noise_level(self, t: torch.Tensor) -> float:
        """Flow time t (B,) is the noise share already (x_t = (1 − t)·x0 + t·ε)."""
        return float(t.flatten()[0])

    def x0_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity v = ε − x0 at x_t = (1 − t)·x0 + t·ε gives x0 = x_t − t·v."""
        tt = t.float().view(-1, *([1] * len(self.latent_shape)))
        return torch.ones_like(tt), -tt

    @torch.no_grad()
    def sample_latents(self, cond, *, steps, sampler, guidance, generator, seeds, negative=None, progress=False,
                       contrasts=(), rescale=0.0, interval=None, apg=None):
        fn = self.guided_fn(self.net, cond, negative, guidance, contrasts, rescale, interval, apg)
        x1 = self.initial_noise(seeds)
        return flow_sample(fn, x1, steps=steps, sampler=sampler, shift=self.shift, progress=progress)
