"""A tiny MLP regressor: the smallest model family, used to test the training loop end to end."""

from __future__ import annotations

import torch
from pydantic import Field

from unicxr.config import StrictModel
from unicxr.models.base import ModelMixin, register_model

__all__ = ["ToyMLPConfig", "ToyMLP"]


class ToyMLPConfig(StrictModel):
    """Config of :class:`ToyMLP`."""

    in_dim: int = Field(8, gt=0)
    hidden: int = Field(32, gt=0)
    depth: int = Field(2, ge=1)
    out_dim: int = Field(1, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


@register_model
class ToyMLP(ModelMixin):
    """MLP with dropout (so the training RNG matters): (B, in_dim) → (B, out_dim)."""

    model_type = "toy_mlp"
    config_class = ToyMLPConfig

    def __init__(self, config: ToyMLPConfig) -> None:
        super().__init__(config)
        layers: list[torch.nn.Module] = []
        dim = config.in_dim
        for _ in range(config.depth):
            layers += [torch.nn.Linear(dim, config.hidden), torch.nn.GELU(), torch.nn.Dropout(config.dropout)]
            dim = config.hidden
        layers.append(torch.nn.Linear(dim, config.out_dim))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_dim) float → (B, out_dim)."""
        return self.net(x)
