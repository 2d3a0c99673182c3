"""CXRClassifier: a small MONAI DenseNet/ResNet multi-label classifier over the 14 findings.

Its penultimate features are the default feature space of ``unicxr eval images`` on phantom data
(the *evaluation encoder*), and its probabilities serve alignment metrics. Input normalisation and
resizing live inside the model, so training and evaluation see the same preprocessing:
``prepare(x)`` resizes (B, 1, H, W) images in [0, 1] to ``image_size`` and standardises them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from unicxr.config import StrictModel
from unicxr.labels import FINDINGS, NUM_FINDINGS
from unicxr.models.base import ModelMixin, register_model
from unicxr.utils.tensor_image import resize_square

__all__ = [
    "CXRClassifierConfig",
    "CXRClassifier",
    "resize_square",
    "finding_key",
    "classifier_metrics",
    "predict",
]


class CXRClassifierConfig(StrictModel):
    """Config of :class:`CXRClassifier`."""

    arch: Literal["densenet", "resnet"] = Field("densenet", description="MONAI DenseNet or ResNet trunk")
    image_size: int | None = Field(
        None, ge=32, le=1024, description="input side in px (inputs are resized to it); null: the cache's size"
    )
    num_classes: int = Field(NUM_FINDINGS, gt=0)
    label_names: tuple[str, ...] = Field(FINDINGS, description="names of the logits, in order")
    # DenseNet trunk
    init_features: int = Field(32, gt=0)
    growth_rate: int = Field(16, gt=0)
    block_config: tuple[int, ...] = Field((4, 8, 12), min_length=1)
    bn_size: int = Field(4, gt=0)
    # ResNet trunk
    resnet_layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    resnet_widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the linear head")
    input_mean: float = Field(0.5, description="images in [0, 1] are standardised with this mean")
    input_std: float = Field(0.25, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> CXRClassifierConfig:
        if len(self.label_names) != self.num_classes:
            raise ValueError(
                f"label_names has {len(self.label_names)} names but num_classes is {self.num_classes}"
            )
        return self


@register_model
class CXRClassifier(ModelMixin):
    """Multi-label CXR classifier: images (B, 1, H, W) in [0, 1] → 14 logits (B, 14).

    ``features(x)`` gives the penultimate representation (B, D) (global-average-pooled trunk output),
    ``forward(x)`` the logits and ``probabilities(x)`` their sigmoids.
    """

    model_type = "cxr_classifier"
    config_class = CXRClassifierConfig

    def __init__(self, config: CXRClassifierConfig) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.image_size is None:
            raise ValueError("CXRClassifier: config.image_size must be set (the task fills it from the cache)")
        if cfg.arch == "densenet":
            from monai.networks.nets import DenseNet

            net = DenseNet(
                spatial_dims=2,
                in_channels=1,
                out_channels=cfg.num_classes,
                init_features=cfg.init_features,
                growth_rate=cfg.growth_rate,
                block_config=cfg.block_config,
                bn_size=cfg.bn_size,
            )
            self.feature_dim = net.class_layers.out.in_features
            net.class_layers.out = torch.nn.Identity()
        else:
            from monai.networks.nets import ResNet

            net = ResNet(
                block="basic",
                layers=list(cfg.resnet_layers),
                block_inplanes=list(cfg.resnet_widths),
                spatial_dims=2,
                n_input_channels=1,
                conv1_t_size=7,
                conv1_t_stride=2,
                feed_forward=False,
            )
            self.feature_dim = cfg.resnet_widths[-1]
        self.trunk = net
        self.drop = torch.nn.Dropout(cfg.dropout)
        self.head = torch.nn.Linear(self.feature_dim, cfg.num_classes)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] → (B, 1, S, S) standardised, S = ``config.image_size``."""
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        x = resize_square(x.float(), self.config.image_size)
        return (x - self.config.input_mean) / self.config.input_std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D) of images (B, 1, H, W) in [0, 1]."""
        return self.trunk(self.prepare(x))

    def stage_maps(self, x: torch.Tensor, stages: int | None = None) -> list[torch.Tensor]:
        """Feature maps (B, D_i, h_i, w_i) of images (B, 1, H, W) in [0, 1]: a ResNet trunk's
        ``layer1``.. outputs (the first ``stages`` of them; all four by default), a DenseNet's final
        map only. The last map of a full pass, averaged over space, is :meth:`features`."""
        h = self.prepare(x)
        t = self.trunk
        if self.config.arch == "densenet":
            return [t.class_layers.relu(t.features(h))]
        h = t.act(t.bn1(t.conv1(h)))
        if not t.no_max_pool:
            h = t.maxpool(h)
        out = []
        for layer in (t.layer1, t.layer2, t.layer3, t.layer4)[: stages or 4]:
            h = layer(h)
            out.append(h)
        return out

    def pool_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """The trunk's global pooling of its last feature map (B, D, h, w) → (B, D, 1, 1): flattened, this
        is :meth:`features`."""
        return (self.trunk.class_layers.pool if self.config.arch == "densenet" else self.trunk.avgpool)(fmap)

    def logits_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from the trunk's last feature map (B, D, h, w) (the last of
        :meth:`stage_maps`): the rest of :meth:`forward`, so one pass gives both maps and logits."""
        return self.head(self.drop(torch.flatten(self.pool_map(fmap), 1)))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's last feature map (B, D, h, w) before global pooling: where in the image a
        feature fires (e.g. which hemithorax)."""
        return self.stage_maps(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of images (B, 1, H, W) in [0, 1]."""
        return self.head(self.drop(self.features(x)))

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid probabilities (B, num_classes)."""
        return torch.sigmoid(self.forward(x))


def finding_key(name: str) -> str:
    """Metric-key form of a finding name: ``Pleural Effusion`` → ``pleural_effusion``."""
    return name.lower().replace(" ", "_")


def classifier_metrics(probs: np.ndarray, targets: np.ndarray, *, min_count: int = 20) -> dict[str, float]:
    """Per-finding AUROC (``auroc_<finding>``, NaN when one class is missing), ``macro_auroc`` over
    findings with >= ``min_count`` positives and negatives, and ``n_macro_findings``.

    Args:
        probs: (N, 14) probabilities; targets: (N, 14) with 1/0 and NaN = masked.
    """
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


@torch.no_grad()
def predict(
    model: torch.nn.Module, dataset: Any, batch_size: int = 16, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities (N, F) and targets (N, F) over a dataset whose items carry ``image`` and
    ``target`` (or ``labels``), e.g. :class:`~unicxr.data.dataset.CXRDataset` with a policy."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    probs, targets = [], []
    starts = range(0, len(dataset), batch_size)
    for s in tqdm(starts, desc="predict", unit="batch", disable=not progress, leave=False):
        items = [dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]
        x = torch.stack([it["image"] for it in items]).to(device)
        probs.append(torch.sigmoid(model(x).float()).cpu().numpy())
        key = "target" if "target" in items[0] else "labels"
        targets.append(torch.stack([it[key] for it in items]).numpy())
    return np.concatenate(probs), np.concatenate(targets)
