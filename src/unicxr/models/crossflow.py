"""CrossFlow: flow straight from a text latent to the image latent (no noise source).

A text variational encoder (learned patch queries cross-attending to the condition tokens) gives
μ, log σ² shaped like the image latent; the source z_text = μ + σ·ε. A plain DiT velocity network
(no cross-attention: it sees only x_t, the time and a binary *indicator*) learns the straight flow
x_t = (1 − t)·x0 + t·z_text (in a low-resolution training phase z_text is average-pooled to the smaller
image latent). Loss: flow matching + λ_nce · InfoNCE(text latent, image features) + λ_kl · KL(q(z_text) ‖ N(0, I)).
The image side of InfoNCE is a linear map of the image latent, or (``nce_feature_dim`` set; the task fills it
from ``data.nce_features``) of a frozen image network's pooled features, as the paper contrasts the text
latent with CLIP image features. Classifier-free guidance: the indicator is set to 0 (null)
with probability ``indicator_drop`` in training, and those rows flow to another item's image latent of
the batch (``null_target: shuffled``, as in the paper), so v(·, 0) learns where an arbitrary text latent
goes on average and v(·, 1) − v(·, 0) is the text's own pull; sampling combines v(·, 1) and v(·, 0).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unicxr.models.base import register_model
from unicxr.models.dit import AdaLNBlock, FinalLayer, PatchEmbed, unpatchify
from unicxr.models.generator_base import FlowGeneratorConfig, GeneratorBase
from unicxr.models.layers import TransformerBlock
from unicxr.sampling import (
    FLOW_SAMPLERS,
    TimestepEmbedder,
    flow_interpolate,
    flow_sample,
    flow_target,
    guided,
    sample_flow_t,
)

__all__ = ["CrossFlowConfig", "CrossFlow"]


class CrossFlowConfig(FlowGeneratorConfig):
    """Config of :class:`CrossFlow`."""

    patch: int = Field(2, ge=1)
    dim: int = Field(192, ge=8)
    depth: int = Field(6, ge=1)
    heads: int = Field(6, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    ve_depth: int = Field(2, ge=1, description="blocks of the text variational encoder")
    lambda_nce: float = Field(0.1, ge=0)
    lambda_kl: float = Field(1e-3, ge=0)
    min_std: float = Field(
        0.5, ge=0,
        description=(
            "floor on the text latent's σ (training and sampling). Without it the source collapses to a point "
            "(σ 0.01 after 850 steps): from a fixed source x_t determines the velocity exactly for every t < 1, "
            "so the flow loss goes to ~0 while sampling from t = 1 yields one mean image for every prompt"
        ),
    )
    nce_temperature: float = Field(0.1, gt=0)
    nce_dim: int = Field(128, ge=8)
    nce_feature_dim: int | None = Field(
        None, ge=1,
        description=(
            "width of the frozen image features InfoNCE contrasts the text latent with (set by the task from "
            "data.nce_features); null: a linear map of the flattened image latent"
        ),
    )
    nce_source: Literal["mean", "sample"] = Field(
        "mean",
        description=(
            "text side of InfoNCE: 'mean' (μ) or 'sample' (the drawn z_text = μ + σ·ε the flow starts from). "
            "On μ the term is blind to scale (the head's output is normalised), so μ can identify its image along "
            "directions far smaller than σ and the source the flow sees stays mostly noise; on the sample the "
            "identifying part has to stand above σ"
        ),
    )
    indicator_drop: float = Field(0.1, ge=0, lt=1, description="probability of the null indicator in training")
    null_target: Literal["shuffled", "paired"] = Field(
        "shuffled",
        description=(
            "image latent the null-indicator rows flow to: 'shuffled' (another item's of the batch, drawn at random: "
            "the unconditional flow the paper trains) or 'paired' (their own image: the null indicator then learns "
            "the same conditional flow as the other). Guidance can only follow a text latent that says something "
            "about its image (see the InfoNCE term)"
        ),
    )
    positions: Literal["learned", "sincos"] = Field(
        "learned", description="patch positions: a learned table, or 2D sin-cos (any latent size: low-res phases)"
    )
    t_sampling: Literal["logit_normal", "uniform"] = "uniform"
    shift: float = Field(
        1.0, ge=1.0,
        description=(
            "time shift of training times and the sampling grid toward the text latent (t = 1), where the source "
            "alone must tell the image; 1: none"
        ),
    )
    default_steps: int = 25
    default_sampler: str = "euler"


@register_model
class CrossFlow(GeneratorBase):
    """Text variational encoder + velocity network from text latent to image latent."""

    model_type = "crossflow"
    config_class = CrossFlowConfig
    default_samplers = FLOW_SAMPLERS

    def __init__(self, config: CrossFlowConfig, components: dict[str, Any] | None = None) -> None:
        super().__init__(config, components)
        cfg = self.config
        c, s, d, p = cfg.latent_channels, cfg.latent_size, cfg.dim, cfg.patch
        n = (s // p) ** 2
        cd = cfg.condition.dim
        # text variational encoder
        self.queries = nn.Parameter(torch.randn(1, n, cd) * 0.02)
        self.ve_blocks = nn.ModuleList(TransformerBlock(cd, cfg.condition.text_heads, cross_dim=cd)
                                       for _ in range(cfg.ve_depth))
        self.ve_out = nn.Linear(cd, 2 * c * p * p)
        # velocity network
        self.embed = PatchEmbed(c, s, p, d, positions=cfg.positions)
        self.t_embed = TimestepEmbedder(d)
        self.indicator = nn.Embedding(2, d)
        self.blocks = nn.ModuleList(AdaLNBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = FinalLayer(d, c * p * p)
        # contrastive heads
        self.nce_text = nn.Linear(c * s * s, cfg.nce_dim)
        self.nce_image = nn.Linear(cfg.nce_feature_dim or c * s * s, cfg.nce_dim)

    def text_latent(self, cond: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """μ, log σ² (B, C, h, w) of the text latent."""
        cfg = self.config
        tokens, mask, _ = self.encode_condition(cond, None)
        q = self.queries.expand(tokens.shape[0], -1, -1)
        for blk in self.ve_blocks:
            q, _ = blk(q, tokens, context_mask=mask[:, None, None, :])
        out = unpatchify(self.ve_out(q), cfg.patch, 2 * cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        mu, logvar = out.chunk(2, dim=1)
        low = max(-10.0, 2.0 * math.log(cfg.min_std)) if cfg.min_std > 0 else -10.0
        return mu, logvar.clamp(low, 4)

    def net(self, x: torch.Tensor, t: torch.Tensor, indicator: torch.Tensor) -> torch.Tensor:
        """Velocity (B, C, h, w) at x (B, C, h, w), time t (B,), indicator (B,) long in {0, 1}."""
        cfg = self.config
        h = self.embed(x)
        c = self.t_embed(t) + self.indicator(indicator.long())
        for blk in self.blocks:
            h = blk(h, c)
        return unpatchify(self.final(h, c), cfg.patch, cfg.latent_channels, x.shape[-2], x.shape[-1])

    def forward(
        self, z0: torch.Tensor, cond: dict[str, Any], image_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of image latents z0 (B, C, h, w) under conditions ``cond``. ``image_features`` (B, F): the
        frozen image features of the batch when ``nce_feature_dim`` is set; without them (validation) the
        contrastive term is left out."""
        cfg = self.config
        b = z0.shape[0]
        mu, logvar = self.text_latent(cond)
        z_text = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        nce_text = mu if cfg.nce_source == "mean" else z_text  # full-size, before any pooling below
        low = z0.shape[-2:] != mu.shape[-2:]
        if low:  # a low-resolution phase: the text latent averaged down to the image latent's grid
            z_text = F.adaptive_avg_pool2d(z_text, z0.shape[-2:])
        t = sample_flow_t(b, mode=cfg.t_sampling, mean=cfg.t_mean, std=cfg.t_std, shift=cfg.shift, device=z0.device)
        null = self.drop_mask(b, z0.device, cfg.indicator_drop)
        ind = (~null).long()  # 0: the null indicator
        target = z0
        if cfg.null_target == "shuffled" and b > 1 and self._forced_drop is None:
            # null rows flow to another item's image (unpaired); a forced drop (diagnostics) keeps the pairs
            other = torch.randperm(b, device=z0.device)
            target = torch.where(null[:, None, None, None], z0[other], z0)
        xt = flow_interpolate(target, z_text, t)
        v = self.net(xt, t, ind)
        fm = F.mse_loss(v.float(), flow_target(target, z_text).float())
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()
        loss = fm + cfg.lambda_kl * kl
        logs = {"flow": float(fm.detach()), "kl": float(kl.detach())}
        if cfg.lambda_nce > 0 and b > 1 and (cfg.nce_feature_dim is None or image_features is not None):
            a = F.normalize(self.nce_text(nce_text.flatten(1).float()), dim=-1)
            if cfg.nce_feature_dim is not None:
                i = F.normalize(self.nce_image(image_features.float()), dim=-1)
            else:
                zi = F.interpolate(z0, size=mu.shape[-2:], mode="nearest") if low else z0
                i = F.normalize(self.nce_image(zi.flatten(1).float()), dim=-1)
            logits = a @ i.t() / cfg.nce_temperature
            target = torch.arange(b, device=z0.device)
            nce = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
            loss = loss + cfg.lambda_nce * nce
            logs["nce"] = float(nce.detach())
        return loss, logs

    @torch.no_grad()
    def sample_latents(self, cond, *, steps, sampler, guidance, generator, seeds, negative=None, progress=False):
        mu, logvar = self.text_latent(cond)
        b = mu.shape[0]
        x1 = mu + torch.exp(0.5 * logvar) * self.initial_noise(seeds, tuple(mu.shape[1:]))
        on = torch.ones(b, dtype=torch.long, device=x1.device)

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return guided(lambda xx, tt, ii: self.net(xx, tt, ii), x, t, on, on * 0, guidance)

        return flow_sample(fn, x1, steps=steps, sampler=sampler, shift=self.config.shift, progress=progress)
