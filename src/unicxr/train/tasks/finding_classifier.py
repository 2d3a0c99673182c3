"""Task ``finding_classifier``: train :class:`~unicxr.models.finding_classifier.CXRFindingClassifier`.

Masked BCE over the 14 findings with the recipe's uncertain-label policy (ignore / as positive / as
negative), optional class weighting (``pos_weight``: none, ``balanced`` = negatives/positives of the
training split, capped), the shared seeded augmentation, and validation that reports per-finding
AUROC/AUPRC/F1/ECE and stores F1-maximising thresholds in the model config (saved with the model).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset

from unicxr.models.finding_classifier import CXRFindingClassifier, FindingClassifierConfig
from unicxr.models.finding_metrics import ThresholdObjective, choose_thresholds, summary_metrics
from unicxr.train.tasks import Media, Task, register_task, with_cache_image_size
from unicxr.train.tasks.classifier import ClassifierDataConfig, ClassifierTask

__all__ = ["FindingClassifierDataConfig", "FindingClassifierTask", "weighted_masked_bce", "balanced_pos_weight"]


class FindingClassifierDataConfig(ClassifierDataConfig):
    """Data section: the classifier options plus class weighting and threshold selection."""

    pos_weight: Literal["none", "balanced"] | tuple[float, ...] = Field(
        "balanced", description="BCE weight of positives: none, balanced (neg/pos of the train split) or 14 values"
    )
    pos_weight_max: float = Field(10.0, gt=0, description="cap of balanced weights")
    choose_thresholds: bool = Field(True, description="store F1-maximising validation thresholds in the model")
    threshold_objective: ThresholdObjective = Field(
        "micro_f1", description="f1: each finding's own F1 optimum; micro_f1: maximise the F1 pooled over findings"
    )


def balanced_pos_weight(targets: np.ndarray, cap: float) -> np.ndarray:
    """neg/pos per finding of (N, 14) targets (NaN masked), clipped to [1, cap]; 1 where no positive."""
    pos = np.nansum(targets == 1, axis=0).astype(np.float64)
    neg = np.nansum(targets == 0, axis=0).astype(np.float64)
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return np.clip(w, 1.0, cap).astype(np.float32)


def weighted_masked_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None) -> torch.Tensor:
    """Mean BCE over non-NaN targets; logits, target (B, F); pos_weight (F,) or None."""
    mask = ~torch.isnan(target)
    if not mask.any():
        return logits.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(
        logits.float(), torch.nan_to_num(target, nan=0.0), reduction="none",
        pos_weight=None if pos_weight is None else pos_weight.to(logits.device),
    )
    return (loss * mask).sum() / mask.sum()


@register_task("finding_classifier")
class FindingClassifierTask(ClassifierTask):
    """Image encoder + 14-way head with class weighting and validation thresholds."""

    ModelConfig = FindingClassifierConfig
    DataConfig = FindingClassifierDataConfig

    def __init__(self, model_cfg: FindingClassifierConfig, data_cfg: FindingClassifierDataConfig) -> None:
        Task.__init__(self, with_cache_image_size(model_cfg, data_cfg.cache), data_cfg)
        from unicxr.data.augment import Augment

        cfg = data_cfg
        self.augmenter = Augment(
            rotate_deg=cfg.rotate_deg, scale=cfg.scale, translate=cfg.translate,
            contrast=cfg.intensity, brightness=cfg.intensity / 2,
        )
        self.pos_weight: torch.Tensor | None = None

    def build_model(self) -> CXRFindingClassifier:
        return CXRFindingClassifier(self.model_cfg)

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        train, val = super().build_datasets(seed)
        pw = self.data_cfg.pos_weight
        if pw == "balanced":
            self.pos_weight = torch.from_numpy(balanced_pos_weight(train.targets, self.data_cfg.pos_weight_max))
        elif isinstance(pw, tuple):
            if len(pw) != self.model_cfg.num_classes:
                from unicxr.utils.errors import UnicxrError

                raise UnicxrError(f"data.pos_weight: {len(pw)} values for {self.model_cfg.num_classes} findings")
            self.pos_weight = torch.tensor(pw, dtype=torch.float32)
        return train, val

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return weighted_masked_bce(model(batch["image"]), batch["target"], self.pos_weight), {}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        from unicxr.models.classifier import predict

        probs, targets = predict(model, dataset)
        raw = self.unwrap(model)
        if self.data_cfg.choose_thresholds:
            th = tuple(choose_thresholds(probs, targets, objective=self.data_cfg.threshold_objective))
            raw.config = raw.config.model_copy(update={"thresholds": th})
        return summary_metrics(probs, targets, raw.config.thresholds, min_count=self.data_cfg.eval_min_count)

    def log_media(self, model: torch.nn.Module, dataset: Dataset | None, step: int) -> Media | None:
        return super().log_media(model, dataset, step)
