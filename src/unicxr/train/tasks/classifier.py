"""Classifier task: the multi-label evaluation encoder trained on a ``unicxr prepare`` cache.

Loss: binary cross-entropy over the 14 findings, masked where the target is undefined (NaN after the
uncertainty policy; blank = negative by default, as in CheXpert). Light, seeded augmentation (small
affine jitter, brightness/contrast). ``evaluate`` reports per-finding AUROC and the macro AUROC over
findings with enough positives and negatives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset

from unicxr.config import StrictModel
from unicxr.labels import FINDINGS, UncertainPolicy, apply_policy
from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig, resize_square
from unicxr.train.tasks import Task, register_task
from unicxr.utils.errors import UnicxrError

__all__ = [
    "ClassifierDataConfig",
    "LabeledImages",
    "ClassifierTask",
    "masked_bce",
    "classifier_metrics",
    "finding_key",
    "load_split",
    "predict",
]


class ClassifierDataConfig(StrictModel):
    """Data section of a classifier recipe."""

    cache: str = Field(
        ..., description="cache directory written by `unicxr prepare` (or a folder with metadata.csv)"
    )
    train_split: str = "train"
    val_split: str | None = Field("validate", description="split for validation (null: none)")
    uncertain_policy: UncertainPolicy = UncertainPolicy.IGNORE
    blank_as_negative: bool = Field(True, description="not-mentioned findings count as negative")
    image_size: int | None = Field(
        None, ge=16, description="store images at this size in memory (default: the model's image_size)"
    )
    max_items: int | None = Field(None, gt=0, description="use at most this many items per split (tests)")
    augment: bool = True
    rotate_deg: float = Field(5.0, ge=0.0)
    scale: float = Field(0.05, ge=0.0, lt=0.5, description="zoom jitter: 1 ± scale")
    translate: float = Field(0.04, ge=0.0, lt=0.5, description="shift jitter as a fraction of the side")
    intensity: float = Field(0.1, ge=0.0, lt=1.0, description="brightness/contrast jitter")
    eval_min_count: int = Field(
        20, ge=1, description="macro AUROC over findings with >= this many pos and neg"
    )


def finding_key(name: str) -> str:
    """Metric-key form of a finding name: ``Pleural Effusion`` → ``pleural_effusion``."""
    return name.lower().replace(" ", "_")


class LabeledImages(Dataset):
    """Images (uint8 in memory, resized) and binary targets of one cache split.

    Items: ``{"image": (1, S, S) float32 in [0, 1], "target": (14,) float32 (NaN = masked), "index": ()}``.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images = images  # (N, 1, S, S) uint8
        self.targets = targets  # (N, 14) float32

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.images[i].float() / 255.0,
            "target": self.targets[i],
            "index": torch.tensor(i),
        }


def load_split(
    cache: str | Path,
    split: str | None,
    *,
    size: int,
    policy: UncertainPolicy | str = UncertainPolicy.IGNORE,
    blank_as_negative: bool = True,
    max_items: int | None = None,
    progress: bool = True,
) -> LabeledImages:
    """Read one split of a cache (or of an image folder with ``metadata.csv`` labels, e.g. a
    ``unicxr phantom`` output) into memory: images resized to ``size``, targets under ``policy``."""
    from tqdm.auto import tqdm

    from unicxr.data.image_sets import open_image_set

    ds = open_image_set(cache, split=split)
    if ds.labels is None:
        raise UnicxrError(f"{cache}: no labels (a classifier needs the 14 label columns)")
    n = len(ds) if max_items is None else min(len(ds), max_items)
    images = torch.empty((n, 1, size, size), dtype=torch.uint8)
    for i in tqdm(range(n), desc=f"load {split or 'all'}", unit="img", disable=not progress, leave=False):
        img = resize_square(ds[i]["image"].float().unsqueeze(0), size)[0]
        images[i] = (img.clamp(0, 1) * 255.0).round().to(torch.uint8)
    labels = np.asarray(ds.labels[:n], dtype=np.float32)
    targets = apply_policy(labels, policy, blank_as_negative=blank_as_negative)
    return LabeledImages(images, torch.from_numpy(targets))


def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over entries whose target is not NaN; logits, target (B, F)."""
    mask = ~torch.isnan(target)
    if not mask.any():
        return logits.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(
        logits.float(), torch.nan_to_num(target, nan=0.0), reduction="none"
    )
    return (loss * mask).sum() / mask.sum()


def classifier_metrics(probs: np.ndarray, targets: np.ndarray, *, min_count: int = 20) -> dict[str, float]:
    """Per-finding AUROC (``auroc_<finding>``, NaN when one class is missing), ``macro_auroc`` over
    findings with >= ``min_count`` positives and negatives, and ``n_macro_findings``."""
    from unicxr.utils.metrics import auroc

    out: dict[str, float] = {}
    used = []
    for j, name in enumerate(FINDINGS):
        y = targets[:, j]
        ok = np.isfinite(y)
        a = auroc(y[ok], probs[ok, j])
        out[f"auroc_{finding_key(name)}"] = a
        if min(int((y[ok] == 1).sum()), int((y[ok] == 0).sum())) >= min_count and math.isfinite(a):
            used.append(a)
    out["macro_auroc"] = float(np.mean(used)) if used else float("nan")
    out["n_macro_findings"] = float(len(used))
    return out


@register_task("classifier")
class ClassifierTask(Task):
    """Train :class:`~unicxr.models.classifier.CXRClassifier` with masked BCE on a cache."""

    ModelConfig = CXRClassifierConfig
    DataConfig = ClassifierDataConfig

    def build_model(self) -> CXRClassifier:
        return CXRClassifier(self.model_cfg)

    def _size(self) -> int:
        return int(self.data_cfg.image_size or self.model_cfg.image_size)

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        cfg = self.data_cfg
        if not Path(cfg.cache).exists():
            raise UnicxrError(
                f"data.cache: {cfg.cache}: cache directory not found (run `unicxr prepare` first)"
            )
        common = dict(
            size=self._size(),
            policy=cfg.uncertain_policy,
            blank_as_negative=cfg.blank_as_negative,
            max_items=cfg.max_items,
        )
        train = load_split(cfg.cache, cfg.train_split, **common)
        val = load_split(cfg.cache, cfg.val_split, **common) if cfg.val_split else None
        return train, val

    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        cfg = self.data_cfg
        if not cfg.augment:
            return batch
        x = batch["image"]
        b = x.shape[0]

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(b, generator=generator)

        ang = torch.deg2rad(u(-cfg.rotate_deg, cfg.rotate_deg))
        sc = u(1 - cfg.scale, 1 + cfg.scale)
        tx, ty = u(-cfg.translate, cfg.translate) * 2, u(-cfg.translate, cfg.translate) * 2
        cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        gain = u(1 - cfg.intensity, 1 + cfg.intensity).view(b, 1, 1, 1)
        bias = u(-cfg.intensity / 2, cfg.intensity / 2).view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * gain + mean + bias).clamp(0, 1)
        return {**batch, "image": x}

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["image"])
        return masked_bce(logits, batch["target"]), {}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        probs, targets = predict(model, dataset)
        return classifier_metrics(probs, targets, min_count=self.data_cfg.eval_min_count)


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Dataset, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities (N, F) and targets (N, F) of a :class:`LabeledImages` dataset."""
    device = next(model.parameters()).device
    probs, targets = [], []
    for s in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]
        x = torch.stack([it["image"] for it in items]).to(device)
        probs.append(torch.sigmoid(model(x).float()).cpu().numpy())
        targets.append(torch.stack([it["target"] for it in items]).numpy())
    return np.concatenate(probs), np.concatenate(targets)
