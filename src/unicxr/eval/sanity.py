"""Sanity checks of a feature space on real data (do the metrics behave as they must?).

* ``FD(train, test) < FD(test, blur(test, σ=1)) < FD(test, blur(test, σ=2))``: two independent real
  samples are closer than a set and a degraded copy of it, and more degradation is farther.
* KID between two random halves of one set is ≈ 0 (its bootstrap CI contains 0).
* PRDC of a set against itself is 1 (precision, recall, coverage) and ≈ 1 (density: each k-NN ball
  strictly holds its centre and k - 1 neighbours, so exactly 1 without distance ties).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unicxr.data.image_sets import open_image_set
from unicxr.eval.features import FeatureExtractor, extract_features, parse_features_spec
from unicxr.eval.image_metrics import bootstrap_fd, bootstrap_mmd2, kid, prdc

__all__ = ["gaussian_blur", "BlurredSet", "sanity_checks"]


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) images (sigma in pixels, reflect padding, radius 3σ)."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-(t**2) / (2 * sigma * sigma))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    x = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class BlurredSet:
    """View of an image set whose images are Gaussian-blurred with ``sigma`` pixels."""

    def __init__(self, base: Any, sigma: float) -> None:
        self.base = base
        self.sigma = sigma
        self.labels = getattr(base, "labels", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        item["image"] = gaussian_blur(item["image"].unsqueeze(0), self.sigma)[0].clamp(0, 1)
        return item


def sanity_checks(
    data: str | Path,
    features: str | FeatureExtractor,
    *,
    train_split: str = "train",
    test_split: str = "test",
    sigmas: tuple[float, ...] = (1.0, 2.0),
    n_boot: int = 100,
    seed: int = 0,
    max_images: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the three checks of the module docstring on a cache/folder; returns a JSON-ready dict
    with the FDs (bootstrap CIs), the split-half KID, PRDC(test, test) and ``passed`` flags."""
    ext = parse_features_spec(features) if isinstance(features, str) else features
    train = open_image_set(data, split=train_split, max_images=max_images, seed=seed)
    test = open_image_set(data, split=test_split, max_images=max_images, seed=seed + 1)
    kw = dict(batch_size=batch_size, progress=progress)
    f_train, _ = extract_features(ext, train, desc="train features", **kw)
    f_test, _ = extract_features(ext, test, desc="test features", **kw)
    fd_tt = bootstrap_fd(f_train, f_test, n_boot=n_boot, seed=seed)
    fd_blur = {}
    for s in sigmas:
        f_b, _ = extract_features(ext, BlurredSet(test, s), desc=f"blur {s} features", **kw)
        fd_blur[s] = bootstrap_fd(f_test, f_b, n_boot=n_boot, seed=seed)
    chain = [fd_tt["value"]] + [fd_blur[s]["value"] for s in sigmas]
    perm = np.random.default_rng(seed).permutation(len(f_train))
    half_a, half_b = f_train[perm[: len(perm) // 2]], f_train[perm[len(perm) // 2 :]]
    k_sub = kid(half_a, half_b, subset_size=min(1000, len(half_a), len(half_b)), n_subsets=50, seed=seed)
    k_boot = bootstrap_mmd2(half_a, half_b, kernel="poly", n_boot=n_boot, seed=seed)
    p_same = prdc(f_test, f_test, k=5)
    return {
        "features": ext.describe(),
        "n_train": len(f_train),
        "n_test": len(f_test),
        "fd_train_test": fd_tt,
        "fd_test_blur": {str(s): v for s, v in fd_blur.items()},
        "kid_split_halves": {
            "mean": k_sub.mean,
            "std": k_sub.std,
            "full_set": k_boot["value"],
            "ci_low": k_boot["ci_low"],
            "ci_high": k_boot["ci_high"],
            "n_per_half": len(half_a),
        },
        "prdc_identical": p_same,
        "passed": {
            "fd_order": bool(all(a < b for a, b in zip(chain, chain[1:], strict=False))),
            "kid_ci_contains_0": bool(k_boot["ci_low"] <= 0.0 <= k_boot["ci_high"]),
            "prdc_identical_is_1": bool(
                p_same["precision"] == 1.0
                and p_same["recall"] == 1.0
                and p_same["coverage"] == 1.0
                and abs(p_same["density"] - 1.0) < 0.05
            ),
        },
    }
