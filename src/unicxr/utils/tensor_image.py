"""Torch image helpers shared by models and evaluation (numpy decoding-time resizing lives in
``unicxr.data.io``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["center_square", "resize_square"]


def center_square(x: torch.Tensor) -> torch.Tensor:
    """Centre-crop (..., H, W) to a square of side min(H, W)."""
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return x[..., top : top + s, left : left + s]


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop (B, C, H, W) to a square and resize it to (B, C, size, size) (bilinear, antialiased)."""
    x = center_square(x)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x
