"""Reusable transformer pieces: norms, attention (self/cross, masks, KV cache), MLP, pre-norm block.

One implementation for every transformer in unicxr (ViT image encoder, report decoder, unified model,
DiT-style generators). Attention runs through ``torch.nn.functional.scaled_dot_product_attention``.

Masks follow SDPA: a boolean mask is True where attention is *allowed*; a float mask is added to the
scores. ``causal=True`` builds the causal mask itself, offset by the length of the cached keys, so
incremental decoding with a KV cache needs no mask at all.

KV cache: :class:`Attention` takes ``cache`` (a :class:`KVCache` entry or None) and returns the
updated one; a whole model keeps a list of them, one per layer. Every tensor in a cache has the batch
on dimension 0, so beam search reorders it with :func:`reorder_cache`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RMSNorm",
    "make_norm",
    "KVCache",
    "reorder_cache",
    "Attention",
    "MLP",
    "TransformerBlock",
    "causal_mask",
    "prefix_lm_mask",
    "sinusoidal_positions",
    "sinusoidal_positions_2d",
]

NormKind = Literal["layernorm", "rmsnorm"]


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale: ``x / rms(x) * weight``; x (..., D)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def make_norm(kind: NormKind, dim: int, eps: float = 1e-6, affine: bool = True) -> nn.Module:
    """``layernorm`` (with bias) or ``rmsnorm``; ``affine=False`` gives a parameter-free norm (adaLN)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
    if kind == "rmsnorm":
        if not affine:
            return _PlainRMSNorm(eps)
        return RMSNorm(dim, eps)
    raise ValueError(f"unknown norm {kind!r} (layernorm, rmsnorm)")


class _PlainRMSNorm(nn.Module):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


@dataclass
class KVCache:
    """Keys and values of one attention layer, (B, H, T, Dh) each; ``static`` caches (cross-attention
    over a fixed memory) are computed once and never grown."""

    k: torch.Tensor
    v: torch.Tensor
    static: bool = False

    @property
    def length(self) -> int:
        return int(self.k.shape[2])


def reorder_cache(cache: Any, index: torch.Tensor) -> Any:
    """Select batch rows ``index`` (LongTensor (B',)) of every tensor in a nested cache structure
    (lists, tuples, dicts, :class:`KVCache`); tensors with batch on dim 0. Used by beam search."""
    if cache is None:
        return None
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, index.to(cache.device))
    if isinstance(cache, KVCache):
        return KVCache(reorder_cache(cache.k, index), reorder_cache(cache.v, index), cache.static)
    if isinstance(cache, dict):
        return {k: reorder_cache(v, index) for k, v in cache.items()}
    if isinstance(cache, (list, tuple)):
        return type(cache)(reorder_cache(v, index) for v in cache)
    return cache


def causal_mask(q_len: int, k_len: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (q_len, k_len) mask, True = allowed: query i (the last ``q_len`` of ``k_len``
    positions) sees keys ``<= k_len - q_len + i``."""
    offset = k_len - q_len
    q = torch.arange(q_len, device=device)[:, None] + offset
    k = torch.arange(k_len, device=device)[None, :]
    return k <= q


def prefix_lm_mask(prefix: int, total: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (total, total) mask: the first ``prefix`` positions see each other (bidirectional) and
    nothing after; later positions see the prefix and earlier positions (causal)."""
    m = causal_mask(total, total, device)
    m[:prefix, :prefix] = True
    return m


def sinusoidal_positions(n: int, dim: int, base: float = 10000.0, scale: float = 1.0) -> torch.Tensor:
    """Fixed sin/cos position table (n, dim). With ``scale`` ≠ 1 position ``i`` is the centre of cell
    ``i`` on a grid ``scale`` times finer, ``(i + 0.5) · scale − 0.5`` (a coarser grid over the same
    extent keeps its positions)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    if scale != 1.0:
        pos = (pos + 0.5) * scale - 0.5
    half = dim // 2
    freq = torch.exp(-math.log(base) * torch.arange(half, dtype=torch.float32) / max(half, 1))
    ang = pos * freq[None]
    out = torch.zeros(n, dim)
    out[:, 0 : 2 * half : 2] = torch.sin(ang)
    out[:, 1 : 2 * half : 2] = torch.cos(ang)
    return out


def sinusoidal_positions_2d(
    h: int, w: int, dim: int, base: float = 10000.0, ref: tuple[int, int] | None = None
) -> torch.Tensor:
    """Fixed 2D sin/cos table (h·w, dim) for a row-major h×w grid: the first half of the channels
    encodes the row, the second half the column. Computed for any grid, so a model using it can
    change resolution without a position table to resize. With ``ref`` (the grid the model is built
    for) an h×w grid of another size gets the positions of the same places on the ``ref`` grid, so a
    patch keeps its position code when the image is trained or sampled at another resolution."""
    half = dim // 2
    sh, sw = (1.0, 1.0) if ref is None else (ref[0] / h, ref[1] / w)
    rows = sinusoidal_positions(h, half, base, sh)  # (h, half)
    cols = sinusoidal_positions(w, dim - half, base, sw)  # (w, dim - half)
    return torch.cat([rows[:, None, :].expand(h, w, half), cols[None, :, :].expand(h, w, dim - half)], dim=-1).reshape(
        h * w, dim
    )


class Attention(nn.Module):
    """Multi-head attention: self-attention (``context=None``) or cross-attention over ``context``.

    Args:
        dim: model width D (queries).
        num_heads: heads H (D divisible by H).
        context_dim: width of ``context`` for cross-attention (default D).
        bias: biases on the projections.
        qk_norm: RMS-normalise queries and keys per head (stabilises large models / DiT).
        dropout: attention dropout (training only).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        context_dim: int | None = None,
        bias: bool = True,
        qk_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.is_cross = context_dim is not None
        kv_dim = context_dim if context_dim is not None else dim
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(kv_dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.dropout = dropout

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Attend.

        Args:
            x: queries (B, T, D).
            context: keys/values source (B, S, Dc) for cross-attention; None = self-attention over x.
                With a static cache the context is not needed again.
            mask: bool (T, K) / (B, 1|H, T, K) True = allowed, or float additive; K counts cached keys.
            causal: apply a causal mask (offset by the cache length); ignored when ``mask`` is given.
            cache: previous keys/values of this layer (self-attention: grown; cross: reused).
            use_cache: return the updated cache.

        Returns:
            (output (B, T, D), cache or None).
        """
        if context is None and not (cache is not None and cache.static):
            q, k, v = self.project(x)
        else:
            q = self.q_norm(self._heads(self.q(x)))
            if cache is not None and cache.static:
                k, v = cache.k, cache.v
            else:
                k, v = self.kv(context).chunk(2, dim=-1)
                k, v = self.k_norm(self._heads(k)), self._heads(v)
        if cache is not None and not cache.static:
            k = torch.cat([cache.k, k], dim=2)
            v = torch.cat([cache.v, v], dim=2)
        new_cache = KVCache(k, v, static=context is not None or (cache is not None and cache.static)) if use_cache else None
        attn_mask = mask
        is_causal = False
        if attn_mask is None and causal:
            t, kl = q.shape[2], k.shape[2]
            if t == kl:
                is_causal = True
            elif t > 1:
                attn_mask = causal_mask(t, kl, q.device)
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )
        return self.merge(out), new_cache

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention projections of x (B, T, D) → q, k, v (B, H, T, Dh) (q/k normalised when
        ``qk_norm``). With :meth:`merge` this lets several projection sets (the experts of a
        mixture-of-transformers layer) share one attention op over a packed sequence."""
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.q_norm(self._heads(self.q(x))), self.k_norm(self._heads(k)), self._heads(v)

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """Attention output heads (B, H, T, Dh) → output projection (B, T, D)."""
        b, h, t, d = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, t, h * d))


class MLP(nn.Module):
    """Feed-forward block: ``gelu`` / ``gelu_tanh`` (two linears) or ``swiglu`` (gated); x (..., D)."""

    def __init__(
        self, dim: int, hidden: int, *, activation: Literal["gelu", "gelu_tanh", "swiglu"] = "gelu",
        bias: bool = True, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.fc1 = nn.Linear(dim, hidden * (2 if activation == "swiglu" else 1), bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.activation == "swiglu":
            a, g = h.chunk(2, dim=-1)
            h = F.silu(g) * a
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        else:
            h = F.gelu(h)
        return self.drop(self.fc2(self.drop(h)))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + SelfAttn(norm(x))`` [``+ CrossAttn(norm(x), context)``] ``+ MLP(norm(x))``.

    Args:
        dim: width D; num_heads: heads; mlp_ratio: MLP hidden = ratio × D.
        cross_dim: add a cross-attention sub-layer over a context of this width (None: none).
        norm: ``layernorm`` or ``rmsnorm``; activation: MLP activation; bias: linear biases.
        qk_norm: per-head RMS norm of queries/keys; dropout: attention/MLP dropout.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        cross_dim: int | None = None,
        norm: NormKind = "layernorm",
        activation: Literal["gelu", "gelu_tanh", "swiglu"] = "gelu",
        bias: bool = True,
        qk_norm: bool = False,
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim, norm_eps)
        self.attn = Attention(dim, num_heads, bias=bias, qk_norm=qk_norm, dropout=dropout)
        self.cross = None
        if cross_dim is not None:
            self.norm_cross = make_norm(norm, dim, norm_eps)
            self.cross = Attention(dim, num_heads, context_dim=cross_dim, bias=bias, qk_norm=qk_norm, dropout=dropout)
        self.norm2 = make_norm(norm, dim, norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation=activation, bias=bias, dropout=dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        context_mask: torch.Tensor | None = None,
        cache: tuple[KVCache | None, KVCache | None] | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, tuple[KVCache | None, KVCache | None] | None]:
        """x (B, T, D), context (B, S, Dc) → (B, T, D) and the (self, cross) caches when ``use_cache``."""
        self_c, cross_c = cache if cache is not None else (None, None)
        h, self_c = self.attn(self.norm1(x), mask=mask, causal=causal, cache=self_c, use_cache=use_cache)
        x = x + h
        if self.cross is not None:
            if context is None and (cross_c is None or not cross_c.static):
                raise ValueError("this block has cross-attention: pass context (or a static cache)")
            h, cross_c = self.cross(
                self.norm_cross(x), context, mask=context_mask, cache=cross_c, use_cache=use_cache
            )
            x = x + h
        x = x + self.mlp(self.norm2(x))
        return x, ((self_c, cross_c) if use_cache else None)
