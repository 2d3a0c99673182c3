"""Image grids and PNG writing with text chunks (used for training media, generated images, reports)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping

import numpy as np
import torch

from unicxr.utils.io import atomic_write_bytes, synthetic_image_text

__all__ = ["image_grid", "to_uint8", "png_bytes", "save_png"]


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(H, W) or (1, H, W) float in [0, 1] → uint8 (H, W) (values outside are clipped)."""
    arr = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if arr.ndim == 3:
        arr = arr[0]
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2, pad_value: float = 0.0) -> np.ndarray:
    """Tile images (N, 1, H, W) in [0, 1] into one uint8 (rows·(H+pad)+pad, cols·(W+pad)+pad) array;
    ``nrow`` images per row (default ⌈√N⌉)."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images (N, 1, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), int(pad_value * 255), np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = to_uint8(images[k])
    return grid


def png_bytes(array: np.ndarray, text: Mapping[str, str] | None = None) -> bytes:
    """Encode a uint8/uint16 (H, W) array as PNG with tEXt chunks."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(str(k), str(v))
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(
    path: str | os.PathLike[str],
    array: np.ndarray,
    text: Mapping[str, str] | None = None,
    *,
    synthetic: bool = False,
    source: str = "model output",
) -> None:
    """Write a PNG atomically; ``synthetic=True`` adds ``synthetic=true`` (and what made it) first."""
    chunks: dict[str, str] = dict(synthetic_image_text(source)) if synthetic else {}
    chunks.update(text or {})
    atomic_write_bytes(path, png_bytes(array, chunks))
