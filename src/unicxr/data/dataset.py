"""A torch ``Dataset`` over :class:`~unicxr.data.cache.CXRCache` with light, seeded augmentation.

The augmentation of item ``i`` depends only on ``(seed, epoch, i)``, so it is the same whatever the
number of DataLoader workers or the order items are fetched in. No torchvision: a small affine
(rotation, isotropic scale, translation) through ``affine_grid``/``grid_sample`` and a
brightness/contrast jitter.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from unicxr.data.cache import CXRCache

__all__ = ["Augment", "CXRDataset"]


@dataclass(frozen=True)
class Augment:
    """Augmentation ranges (all symmetric around identity).

    Attributes:
        rotate_deg: maximum absolute rotation in degrees.
        scale: maximum relative zoom (0.05 → zoom in [0.95, 1.05]).
        translate: maximum shift as a fraction of the image side.
        brightness: maximum additive brightness shift.
        contrast: maximum relative contrast change (0.1 → factor in [0.9, 1.1]).
    """

    rotate_deg: float = 5.0
    scale: float = 0.05
    translate: float = 0.03
    brightness: float = 0.05
    contrast: float = 0.1

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Augment one image.

        Args:
            image: float32 (C, H, W) in [0, 1].
            rng: the item's random generator.

        Returns:
            float32 (C, H, W) in [0, 1].
        """
        u = rng.uniform(-1.0, 1.0, size=6)
        angle = math.radians(self.rotate_deg * u[0])
        zoom = 1.0 + self.scale * u[1]
        tx, ty = 2.0 * self.translate * u[2], 2.0 * self.translate * u[3]
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=torch.float32).unsqueeze(0)
        x = image.unsqueeze(0)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        factor = 1.0 + self.contrast * float(u[4])
        mean = x.mean()
        x = (x - mean) * factor + mean + self.brightness * float(u[5])
        return x.clamp_(0.0, 1.0)


class CXRDataset(Dataset):
    """Items of a cache, optionally augmented.

    Args:
        cache: a :class:`CXRCache` or a cache directory.
        split: split filter when ``cache`` is a directory.
        augment: an :class:`Augment` (None = no augmentation).
        seed: augmentation seed.

    Each item is the cache's dict (``image`` (1, H, W), ``labels`` (14,), ``report``, ``path``,
    ``split``, ...) with the augmented image.
    """

    def __init__(
        self,
        cache: CXRCache | str | os.PathLike[str],
        split: str | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        self.cache = cache if isinstance(cache, CXRCache) else CXRCache(cache, split=split)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.cache[i]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(i) % len(self.cache)])
            item["image"] = self.augment(item["image"], rng)
        return item
