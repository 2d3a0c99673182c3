"""LDM-UNet: MONAI ``DiffusionModelUNet`` on latents with cross-attention to condition tokens.

The MONAI Generative Models / RoentGen recipe: a UNet denoiser trained with a MONAI DDPM schedule
(linear, scaled-linear or cosine betas; epsilon, v or sample prediction), sampled with any of MONAI's
DDPM, DDIM or PNDM samplers (:mod:`unicxr.sampling.diffusion`) and classifier-free guidance. The
``ddpm_baseline_phantom`` recipe keeps the tutorial plain (DDPM, 1000 steps, epsilon) as the baseline.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from unicxr.labels import NUM_FINDINGS
from unicxr.models.base import register_model
from unicxr.models.generator_base import GeneratorBase, GeneratorConfig, SideMapConfig
from unicxr.models.layers import sinusoidal_positions_2d
from unicxr.sampling.diffusion import (
    DIFFUSION_SAMPLERS,
    DiffusionScheduleConfig,
    diffusion_sample,
    diffusion_target,
    make_scheduler,
    snr_loss_weights,
)

__all__ = ["LDMUNetConfig", "LDMUNet"]


class LDMUNetConfig(GeneratorConfig, SideMapConfig):
    """Config of :class:`LDMUNet`."""

    channels: tuple[int, ...] = Field((64, 128, 128), min_length=1)
    attention_levels: tuple[bool, ...] = Field((False, True, True), min_length=1)
    num_res_blocks: int = Field(1, ge=1)
    num_head_channels: int = Field(32, ge=1)
    norm_num_groups: int = Field(32, ge=1)
    transformer_num_layers: int = Field(1, ge=1)
    global_condition: bool = Field(
        False, description="also add a linear map of the pooled condition to the timestep embedding of every "
        "ResBlock (MONAI's class-embedding slot), beside cross-attention to the condition tokens (the recipes "
        "turn it on; off by default so that models saved before it load unchanged)")
    position_channels: int = Field(
        0, ge=0, multiple_of=4, description="add a fixed 2D sin/cos map of the latent grid (this many "
        "channels: half for rows, half for columns), through a zero-initialised 1x1 convolution, to the "
        "UNet's input; MONAI's UNet has no position code (its attention is content-only), so without it the "
        "side of a finding (left/right) has to be told from the image borders alone. A smaller grid (the "
        "low-resolution phase) gets the codes of the same places. 0 (default) keeps saved models unchanged")
    schedule: DiffusionScheduleConfig = Field(default_factory=DiffusionScheduleConfig)
    default_steps: int = 50
    default_sampler: str = "ddim"


@register_model
class LDMUNet(GeneratorBase):
    """Latents (B, C, h, w) → noise/velocity/x0 prediction, conditioned through cross-attention."""

    model_type = "ldm_unet"
    config_class = LDMUNetConfig
    contrast_guidance_ok = True
    default_samplers = DIFFUSION_SAMPLERS
    @property
    def trims_padding(self) -> bool:
        """MONAI's cross-attention has no key mask: zeroed padding tokens still take attention weight,
        so with raw report tokens their number must stay fixed (max_chunks × max_tokens) whatever else
        is in the batch. Findings tokens and resampled text (``condition.text_queries``) have none."""
        c = self.config.condition
        return c.kind == "findings" or c.text_queries > 0

    def __init__(self, config: LDMUNetConfig, components: dict[str, Any] | None = None) -> None:
        super().__init__(config, components)
        from monai.networks.nets import DiffusionModelUNet

        cfg = self.config
        if len(cfg.channels) != len(cfg.attention_levels):
            raise ValueError("channels and attention_levels need the same length")
        c = cfg.latent_channels
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=c + (2 * NUM_FINDINGS if cfg.side_map else 0),
            out_channels=c,
            num_res_blocks=cfg.num_res_blocks,
            channels=cfg.channels,
            attention_levels=cfg.attention_levels,
            norm_num_groups=cfg.norm_num_groups,
            num_head_channels=cfg.num_head_channels,
            with_conditioning=True,
            cross_attention_dim=cfg.condition.dim,
            transformer_num_layers=cfg.transformer_num_layers,
            num_class_embeds=1 if cfg.global_condition else None,
        )
        if cfg.global_condition:
            # MONAI adds class_embedding(class_labels) to the timestep embedding that modulates every
            # ResBlock; a zero-initialised linear map of the pooled condition in that slot gives a global
            # conditioning path (as ADM's class embedding or SDXL's pooled text embedding)
            emb = self.unet.class_embedding.embedding_dim
            self.unet.class_embedding = torch.nn.Linear(cfg.condition.dim, emb)
            torch.nn.init.zeros_(self.unet.class_embedding.weight)
            torch.nn.init.zeros_(self.unet.class_embedding.bias)
        self.position_proj: torch.nn.Conv2d | None = None
        if cfg.position_channels:
            # zero-initialised: a model gaining the map (train.init_from an older run) starts unchanged
            self.position_proj = torch.nn.Conv2d(cfg.position_channels, c, kernel_size=1)
            torch.nn.init.zeros_(self.position_proj.weight)
            torch.nn.init.zeros_(self.position_proj.bias)
        self.scheduler = make_scheduler(cfg.schedule, "ddpm")

    def position_map(self, h: int, w: int) -> torch.Tensor:
        """Fixed (1, P, h, w) sin/cos code of an h×w latent grid (P = ``position_channels``), the places
        of the model's ``latent_size`` grid: channels [0, P/2) encode the row, [P/2, P) the column."""
        n = self.config.latent_size
        table = sinusoidal_positions_2d(h, w, self.config.position_channels, ref=(n, n) if n else None)  # (h·w, P)
        return table.t().reshape(1, -1, h, w)

    def net(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
            pooled: torch.Tensor, sides: torch.Tensor | None = None) -> torch.Tensor:
        """UNet output for x (B, C, h, w), integer t (B,), condition tokens (B, N, D), pooled
        condition (B, D) and, with ``side_map``, the finding sides (B, 2, 14) (:meth:`finding_sides`).
        Masked (padding) tokens are zeroed; MONAI's cross-attention has no key mask."""
        context = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        if self.position_proj is not None:
            pos = self.position_map(x.shape[-2], x.shape[-1]).to(device=x.device, dtype=x.dtype)
            x = x + self.position_proj(pos)
        if self.config.side_map:
            if sides is None:
                raise ValueError("side_map: the network needs the condition's sides")
            x = torch.cat([x, self.side_planes(sides.to(x.dtype), x.shape[-2], x.shape[-1])], 1)
        labels = pooled if self.config.global_condition else None
        return self.unet(x, timesteps=t.long(), context=context, class_labels=labels)

    def forward(self, z0: torch.Tensor, cond: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        b = z0.shape[0]
        sc = self.config.schedule
        noise = torch.randn_like(z0)
        t = torch.randint(0, sc.num_train_timesteps, (b,), device=z0.device)
        self.scheduler.alphas_cumprod = self.scheduler.alphas_cumprod.to(z0.device)
        xt = self.scheduler.add_noise(z0, noise, t)
        pred = self.net(xt, t, *self.encode_condition(cond, self.drop_mask(b, z0.device)))
        target = diffusion_target(self.scheduler, z0, noise, t, sc.prediction_type)
        if sc.snr_gamma is None:
            loss = F.mse_loss(pred.float(), target.float())
            return loss, {"mse": float(loss.detach())}
        per = (pred.float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
        loss = (per * snr_loss_weights(self.scheduler, t, sc.prediction_type, sc.snr_gamma)).mean()
        return loss, {"mse": float(per.mean().detach()), "weighted": float(loss.detach())}

    def noise_level(self, t: torch.Tensor) -> float:
        """Timestep t (B,) of the 0…T−1 training schedule → t / T."""
        return float(t.flatten()[0]) / self.config.schedule.num_train_timesteps

    def x0_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the training schedule's ᾱ_t: ε-prediction x0 = (x − √(1−ᾱ)·ε)/√ᾱ, v-prediction
        x0 = √ᾱ·x − √(1−ᾱ)·v, sample prediction x0 = output."""
        ac = self.scheduler.alphas_cumprod.to(t.device)[t.long()].float().view(-1, *([1] * len(self.latent_shape)))
        kind = self.config.schedule.prediction_type
        if kind == "epsilon":
            return 1.0 / ac.sqrt(), -(1.0 - ac).sqrt() / ac.sqrt()
        if kind == "v_prediction":
            return ac.sqrt(), -(1.0 - ac).sqrt()
        return torch.zeros_like(ac), torch.ones_like(ac)

    @torch.no_grad()
    def sample_latents(self, cond, *, steps, sampler, guidance, generator, seeds, negative=None, progress=False,
                       contrasts=(), rescale=0.0, interval=None, apg=None):
        if sampler not in DIFFUSION_SAMPLERS:
            raise ValueError(f"ldm_unet samples with {', '.join(DIFFUSION_SAMPLERS)}, not {sampler!r}")
        fn = self.guided_fn(self.net, cond, negative, guidance, contrasts, rescale, interval, apg)
        x = self.initial_noise(seeds)
        return diffusion_sample(fn, self.config.schedule, x, steps=steps, sampler=sampler, generator=generator,
                                progress=progress)
