"""CXRFindingClassifier: the understanding classifier (image encoder + 14-way head + thresholds).

Independent of the evaluation encoder (:mod:`unicxr.models.classifier`): it is built on the shared
:class:`~unicxr.models.image_encoder.ImageEncoder` (ViT, HF ViT/Dinov2, MONAI DenseNet or ResNet) and
stores per-finding decision thresholds chosen on validation data in its config, so ``unicxr report``
turns probabilities into labels without extra files.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from unicxr.config import StrictModel
from unicxr.labels import FINDINGS, NUM_FINDINGS
from unicxr.models.base import ModelMixin, register_model
from unicxr.models.image_encoder import ImageEncoder, ImageEncoderConfig

__all__ = ["FindingClassifierConfig", "CXRFindingClassifier"]


class FindingClassifierConfig(StrictModel):
    """Config of :class:`CXRFindingClassifier`."""

    image_size: int | None = Field(None, ge=16, le=2048, description="input side (null: the cache's size)")
    encoder: ImageEncoderConfig = Field(default_factory=ImageEncoderConfig)
    num_classes: int = Field(NUM_FINDINGS, gt=0)
    label_names: tuple[str, ...] = FINDINGS
    dropout: float = Field(0.0, ge=0, lt=1)
    thresholds: tuple[float, ...] | None = Field(
        None, description="per-finding decision thresholds (chosen on validation; default 0.5)"
    )

    @model_validator(mode="after")
    def _check(self) -> FindingClassifierConfig:
        if len(self.label_names) != self.num_classes:
            raise ValueError(f"label_names has {len(self.label_names)} names, num_classes is {self.num_classes}")
        if self.thresholds is not None and len(self.thresholds) != self.num_classes:
            raise ValueError(f"thresholds has {len(self.thresholds)} values, num_classes is {self.num_classes}")
        return self


@register_model
class CXRFindingClassifier(ModelMixin):
    """Images (B, 1, H, W) in [0, 1] → logits (B, 14).

    ``features(x)`` gives the pooled encoder output (B, D); ``probabilities(x)`` sigmoids;
    ``predict_labels(x)`` 1/0 labels (B, 14) with the stored thresholds.
    """

    model_type = "cxr_finding_classifier"
    config_class = FindingClassifierConfig

    def __init__(self, config: FindingClassifierConfig, components: dict | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.image_size is None:
            raise ValueError("CXRFindingClassifier: image_size must be set (the task fills it from the cache)")
        self.encoder = ImageEncoder(cfg.encoder.model_copy(update={"image_size": cfg.image_size}))
        if self.encoder.config.hf_config != cfg.encoder.hf_config:
            self.config = cfg.model_copy(update={"encoder": self.encoder.config})
        self.drop = torch.nn.Dropout(cfg.dropout)
        self.head = torch.nn.Linear(self.encoder.dim, cfg.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D)."""
        return self.encoder(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.head(self.drop(self.features(x)))

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward(x).float())

    def threshold_tensor(self) -> torch.Tensor:
        """(num_classes,) decision thresholds (0.5 where none were chosen)."""
        th = self.config.thresholds or (0.5,) * self.config.num_classes
        return torch.tensor(th, dtype=torch.float32)

    @torch.no_grad()
    def predict_labels(self, x: torch.Tensor) -> torch.Tensor:
        """1/0 labels (B, num_classes)."""
        return (self.probabilities(x).cpu() >= self.threshold_tensor()).float()
