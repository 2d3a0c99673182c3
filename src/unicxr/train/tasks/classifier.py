"""Classifier task: the multi-label evaluation encoder trained on a ``unicxr prepare`` cache.

Loss: binary cross-entropy over the 14 findings, masked where the target is undefined (NaN after the
uncertainty policy; blank = negative by default, as in CheXpert). Light, seeded augmentation (small
affine jitter, brightness/contrast). ``evaluate`` reports per-finding AUROC and the macro AUROC over
findings with enough positives and negatives.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset

from unicxr.config import StrictModel
from unicxr.data.augment import Augment
from unicxr.data.dataset import CXRDataset
from unicxr.labels import FINDINGS, UncertainPolicy
from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig, classifier_metrics, predict
from unicxr.train.tasks import Media, Task, register_task, with_cache_image_size

__all__ = ["ClassifierDataConfig", "ClassifierTask", "masked_bce"]


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
        None, ge=16, description="resize images to this size when read (default: the model's image_size)"
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
    media_n: int = Field(8, ge=0, description="validation images shown with predictions at each evaluation")


def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over entries whose target is not NaN; logits, target (B, F)."""
    mask = ~torch.isnan(target)
    if not mask.any():
        return logits.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(
        logits.float(), torch.nan_to_num(target, nan=0.0), reduction="none"
    )
    return (loss * mask).sum() / mask.sum()


@register_task("classifier")
class ClassifierTask(Task):
    """Train :class:`~unicxr.models.classifier.CXRClassifier` with masked BCE on a cache (streamed)."""

    ModelConfig = CXRClassifierConfig
    DataConfig = ClassifierDataConfig

    def __init__(self, model_cfg: CXRClassifierConfig, data_cfg: ClassifierDataConfig) -> None:
        super().__init__(with_cache_image_size(model_cfg, data_cfg.cache), data_cfg)
        cfg = data_cfg
        self.augmenter = Augment(
            rotate_deg=cfg.rotate_deg, scale=cfg.scale, translate=cfg.translate,
            contrast=cfg.intensity, brightness=cfg.intensity / 2,
        )

    def build_model(self) -> CXRClassifier:
        return CXRClassifier(self.model_cfg)

    def _size(self) -> int:
        return int(self.data_cfg.image_size or self.model_cfg.image_size)

    def _dataset(self, split: str) -> CXRDataset:
        cfg = self.data_cfg
        return CXRDataset(
            cfg.cache,
            split,
            size=self._size(),
            policy=cfg.uncertain_policy,
            blank_as_negative=cfg.blank_as_negative,
            max_items=cfg.max_items,
            fields=("image", "index"),
        )

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        val = self._dataset(self.data_cfg.val_split) if self.data_cfg.val_split else None
        return self._dataset(self.data_cfg.train_split), val

    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        if not self.data_cfg.augment:
            return batch
        return {**batch, "image": self.augmenter.batch(batch["image"], generator)}

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["image"])
        return masked_bce(logits, batch["target"]), {}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        probs, targets = predict(model, dataset)
        return classifier_metrics(probs, targets, min_count=self.data_cfg.eval_min_count)

    @torch.no_grad()
    def log_media(self, model: torch.nn.Module, dataset: Dataset | None, step: int) -> Media | None:
        """The first ``media_n`` validation images and, per image, the findings above 0.5."""
        if dataset is None or not self.data_cfg.media_n:
            return None
        n = min(self.data_cfg.media_n, len(dataset))
        items = [dataset[i] for i in range(n)]
        x = torch.stack([it["image"] for it in items]).to(next(model.parameters()).device)
        probs = torch.sigmoid(model(x).float()).cpu()
        lines = []
        for k, (it, p) in enumerate(zip(items, probs, strict=True)):
            pred = [f"{FINDINGS[j]} {p[j]:.2f}" for j in range(len(FINDINGS)) if p[j] >= 0.5]
            true = [FINDINGS[j] for j in range(len(FINDINGS)) if it["target"][j] == 1]
            lines.append(f"{k}: predicted [{', '.join(pred) or 'none'}]; labels [{', '.join(true) or 'none'}]")
        return Media(images={"validation": x.cpu()}, texts={"predictions": "\n".join(lines)}, synthetic=False)
