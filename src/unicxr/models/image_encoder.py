"""The image encoder shared by understanding models: images → tokens (B, N, D) + pooled (B, D).

Chosen by :class:`ImageEncoderConfig.arch`:

* ``vit`` — our ViT (:class:`unicxr.models.vit.ViTEncoder`), patch tokens;
* ``hf`` — a local Hugging Face ViT/Dinov2 directory (:class:`unicxr.models.vit.HFViTEncoder`);
* ``densenet`` / ``resnet`` — a MONAI CNN; the last feature map (B, C, h, w) is flattened into h·w
  tokens of width C and the pooled vector is its global average.

The encoder owns its preprocessing: (B, 1, H, W) in [0, 1] is resized to ``image_size`` and
standardised, so every model that holds it sees the same input.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from unicxr.config import StrictModel
from unicxr.utils.tensor_image import resize_square

__all__ = ["ImageEncoderConfig", "ImageEncoder"]


class ImageEncoderConfig(StrictModel):
    """Config of :class:`ImageEncoder` (a ``model.encoder`` section in recipes)."""

    arch: Literal["vit", "hf", "densenet", "resnet"] = Field("densenet", description="encoder family")
    image_size: int | None = Field(None, ge=16, le=2048, description="input side (null: filled from the cache)")
    input_mean: float = 0.5
    input_std: float = Field(0.25, gt=0)
    # ViT
    patch_size: int = Field(16, gt=0)
    dim: int = Field(192, gt=0, description="ViT width")
    depth: int = Field(6, ge=0)
    num_heads: int = Field(3, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    class_token: bool = True
    dropout: float = Field(0.0, ge=0, lt=1)
    # HF
    pretrained: str | None = Field(None, description="local Hugging Face vision model directory (arch=hf)")
    hf_config: dict[str, Any] | None = Field(None, description="HF config (filled when saved; rebuilds without the dir)")
    hf_pooling: Literal["cls", "mean"] = "cls"
    # DenseNet
    init_features: int = Field(32, gt=0)
    growth_rate: int = Field(16, gt=0)
    block_config: tuple[int, ...] = Field((4, 8, 12), min_length=1)
    bn_size: int = Field(4, gt=0)
    # ResNet
    resnet_layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    resnet_widths: tuple[int, int, int, int] = (32, 64, 128, 256)


class _DenseNetTrunk(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__()
        from monai.networks.nets import DenseNet

        net = DenseNet(
            spatial_dims=2, in_channels=1, out_channels=1, init_features=cfg.init_features,
            growth_rate=cfg.growth_rate, block_config=cfg.block_config, bn_size=cfg.bn_size,
        )
        self.features = net.features
        self.dim = int(net.class_layers.out.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.features(x))


class _ResNetTrunk(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__()
        from monai.networks.nets import ResNet

        net = ResNet(
            block="basic", layers=list(cfg.resnet_layers), block_inplanes=list(cfg.resnet_widths), spatial_dims=2,
            n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, feed_forward=False,
        )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.dim = int(cfg.resnet_widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


class ImageEncoder(nn.Module):
    """Config-selected image encoder.

    ``forward(x)``: x (B, 1, H, W) in [0, 1] → (tokens (B, N, D), pooled (B, D)); ``dim`` = D.
    """

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        if config.image_size is None:
            raise ValueError("ImageEncoder: image_size must be set (the task fills it from the cache)")
        self.config = config
        if config.arch == "vit":
            from unicxr.models.vit import ViTEncoder

            self.net: nn.Module = ViTEncoder(
                config.image_size, config.patch_size, 1, config.dim, config.depth, config.num_heads,
                config.mlp_ratio, config.class_token, dropout=config.dropout,
            )
            self.dim = config.dim
        elif config.arch == "hf":
            from unicxr.models.vit import HFViTEncoder

            self.net = HFViTEncoder(config.pretrained, config.hf_config, config.hf_pooling)
            if config.hf_config is None:
                # record the architecture so a saved model rebuilds without the original directory
                self.config = config.model_copy(update={"hf_config": self.net.hf_config})
            self.dim = self.net.dim
        elif config.arch == "densenet":
            self.net = _DenseNetTrunk(config)
            self.dim = self.net.dim
        else:
            self.net = _ResNetTrunk(config)
            self.dim = self.net.dim
        self.cnn = config.arch in ("densenet", "resnet")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] → (B, 1, S, S) standardised."""
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        x = resize_square(x.float(), int(self.config.image_size))
        return (x - self.config.input_mean) / self.config.input_std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, H, W) in [0, 1] → (tokens (B, N, D), pooled (B, D))."""
        h = self.prepare(x)
        if self.cnn:
            fmap = self.net(h)  # (B, C, h, w)
            tokens = fmap.flatten(2).transpose(1, 2)
            return tokens, tokens.mean(dim=1)
        return self.net(h)
