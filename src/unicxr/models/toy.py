"""A tiny MLP regressor: the smallest model family, used to test the training loop end to end."""

from __future__ import annotations

import torch
from pydantic import Field

from unicxr.config import StrictModel
from unicxr.models.base import ModelMixin, register_model

__all__ = ["ToyMLPConfig", "ToyMLP", "ToyCompositeConfig", "ToyComposite"]


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


class ToyCompositeConfig(StrictModel):
    """Config of :class:`ToyComposite`."""

    encoder: str | None = Field(None, description="saved toy_mlp directory used as a frozen feature map")
    out_dim: int = Field(1, gt=0)


@register_model
class ToyComposite(ModelMixin):
    """A frozen component (a saved :class:`ToyMLP`) followed by a trainable linear head: the smallest
    model with components, used to test component saving, loading and training.

    Optional artifact component ``tokenizer`` (any object with ``save_pretrained``/``from_pretrained``).
    """

    model_type = "toy_composite"
    config_class = ToyCompositeConfig

    def __init__(self, config: ToyCompositeConfig, components: dict | None = None) -> None:
        super().__init__(config)
        comps = dict(components or {})
        source = None
        if "encoder" not in comps:
            if config.encoder is None:
                from unicxr.utils.errors import UnicxrError

                raise UnicxrError("model.encoder: a toy_composite needs a saved toy_mlp directory")
            from unicxr.models import load_model

            comps["encoder"] = load_model(config.encoder)
            source = config.encoder
        self.register_component("encoder", comps["encoder"], source=source, frozen=True)
        if "tokenizer" in comps:
            self.register_component("tokenizer", comps["tokenizer"])
        self.head = torch.nn.Linear(self.encoder.config.out_dim, config.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_dim) → (B, out_dim); the encoder runs without gradients."""
        with torch.no_grad():
            h = self.encoder(x)
        return self.head(torch.tanh(h))
