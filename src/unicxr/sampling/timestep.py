"""Sinusoidal timestep embedding and its MLP (shared by every denoiser/velocity network)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["timestep_embedding", "TimestepEmbedder"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    Args:
        t: (B,) timesteps (flow time in [0, 1] scaled by the caller, or diffusion steps).
        dim: embedding size.
        max_period: lowest frequency's period.

    Returns:
        (B, dim) float32: ``[cos(t·f_k), sin(t·f_k)]`` with geometric frequencies f_k.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Timesteps (B,) → (B, hidden): sinusoidal features then a two-layer SiLU MLP.

    Args:
        hidden: output size.
        freq_dim: size of the sinusoidal features.
        scale: multiplies ``t`` first (1000 for flow time in [0, 1], 1 for diffusion steps).
    """

    def __init__(self, hidden: int, freq_dim: int = 256, scale: float = 1000.0) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t * self.scale, self.freq_dim).to(self.mlp[0].weight.dtype))
