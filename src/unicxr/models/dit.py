"""DiT building blocks: patchify/unpatchify, adaLN-Zero transformer block, final layer.

Shared by the latent rectified-flow transformer and CrossFlow's velocity network (and the unified
model's generation expert). Attention and MLP come from :mod:`unicxr.models.layers`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from unicxr.models.layers import MLP, Attention, sinusoidal_positions_2d

__all__ = ["patchify", "unpatchify", "modulate", "AdaLNBlock", "FinalLayer", "PatchEmbed"]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) → (B, (H/p)·(W/p), C·p·p) non-overlapping patches, row-major."""
    b, c, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"latent {h}x{w} is not divisible by patch size {p}")
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(x: torch.Tensor, p: int, c: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, N, C·p·p) → (B, C, H, W)."""
    b = x.shape[0]
    x = x.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: x (B, N, D) · (1 + scale) + shift, with shift/scale (B, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbed(nn.Module):
    """Latent (B, C, H, W) → patch tokens (B, N, D) + positions: ``learned`` (a table for the
    ``size``² grid) or ``sincos`` (2D sinusoidal, computed for whatever grid comes in, so the
    resolution may change between training stages). A ``sincos`` grid other than the ``size`` one
    (a low-resolution phase) gets the positions of the same places on the ``size`` grid."""

    def __init__(
        self, channels: int, size: int, patch: int, dim: int, positions: Literal["learned", "sincos"] = "learned"
    ) -> None:
        super().__init__()
        self.patch = patch
        self.dim = dim
        self.grid = size // patch
        self.proj = nn.Linear(channels * patch * patch, dim)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2, dim) * 0.02) if positions == "learned" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(patchify(x, self.patch))
        if self.pos is not None:
            return h + self.pos
        grid = sinusoidal_positions_2d(x.shape[-2] // self.patch, x.shape[-1] // self.patch, self.dim,
                                       ref=(self.grid, self.grid))
        return h + grid.to(device=h.device, dtype=h.dtype)


class AdaLNBlock(nn.Module):
    """DiT block with adaLN-Zero conditioning on a vector c (B, D): gated self-attention (optionally
    over extra context tokens prepended for *joint* attention), optional cross-attention, gated MLP.
    The modulation is zero-initialised, so each block starts as the identity."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, cross_dim: int | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, qk_norm=True)
        self.cross = Attention(dim, heads, context_dim=cross_dim, qk_norm=True) if cross_dim else None
        self.norm_c = nn.LayerNorm(dim, eps=1e-6) if cross_dim else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation="gelu_tanh")
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, N, D), c (B, D); ``mask`` for self-attention keys (B, 1, 1, N) bool; ``context``
        (B, S, Dc) with ``context_mask`` (B, 1, 1, S) for cross-attention."""
        s1, g1, b1, s2, g2, b2 = self.ada(c).chunk(6, dim=-1)
        h, _ = self.attn(modulate(self.norm1(x), s1, b1), mask=mask)
        x = x + g1.unsqueeze(1) * h
        if self.cross is not None:
            h, _ = self.cross(self.norm_c(x), context, mask=context_mask)
            x = x + h
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), s2, b2))


class FinalLayer(nn.Module):
    """adaLN-modulated norm + zero-initialised linear to patch values (B, N, C·p·p)."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out)
        for m in (self.ada[1], self.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))
