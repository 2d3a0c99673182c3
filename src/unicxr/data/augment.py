"""The one image augmentation of unicxr: a small seeded affine + brightness/contrast jitter.

No torchvision: the affine (rotation, isotropic zoom, translation) goes through
``affine_grid``/``grid_sample``. All randomness comes from a ``torch.Generator``, so the trainer's
batch-level augmentation (seeded from (seed, step, rank, micro-batch)) and a dataset's per-item
augmentation (seeded from (seed, epoch, item)) are both reproducible.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from unicxr.config import StrictModel

__all__ = ["Augment"]


class Augment(StrictModel):
    """Augmentation ranges (all symmetric around identity).

    Attributes:
        rotate_deg: maximum absolute rotation in degrees.
        scale: maximum relative zoom (0.05 → zoom in [0.95, 1.05]).
        translate: maximum shift as a fraction of the image side.
        contrast: maximum relative contrast change around the image mean (0.1 → [0.9, 1.1]).
        brightness: maximum additive brightness shift.
        padding: how pixels moved in from outside are filled (``border`` repeats the edge).
    """

    rotate_deg: float = Field(5.0, ge=0.0)
    scale: float = Field(0.05, ge=0.0, lt=0.5)
    translate: float = Field(0.04, ge=0.0, lt=0.5)
    contrast: float = Field(0.1, ge=0.0, lt=1.0)
    brightness: float = Field(0.05, ge=0.0, lt=1.0)
    padding: Literal["border", "zeros"] = "border"

    def batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch; each image gets its own draw.

        Args:
            x: float (B, C, H, W) in [0, 1].
            generator: source of all randomness (CPU generator).

        Returns:
            float (B, C, H, W) in [0, 1].
        """
        b = x.shape[0]

        def u(lo: float, hi: float) -> torch.Tensor:
            return (lo + (hi - lo) * torch.rand(b, generator=generator)).to(x.device)

        ang = torch.deg2rad(u(-self.rotate_deg, self.rotate_deg))
        sc = u(1 - self.scale, 1 + self.scale)
        tx, ty = u(-self.translate, self.translate) * 2, u(-self.translate, self.translate) * 2
        cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        gain = u(1 - self.contrast, 1 + self.contrast).view(b, 1, 1, 1)
        bias = u(-self.brightness, self.brightness).view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * gain + mean + bias).clamp(0, 1)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment one image (C, H, W) in [0, 1] → (C, H, W)."""
        return self.batch(image.unsqueeze(0), generator)[0]
