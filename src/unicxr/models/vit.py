"""Vision Transformer image encoder: patch tokens (B, N, D) + a pooled vector (B, D).

Two flavours behind one interface ``forward(x) -> (tokens, pooled)``:

* :class:`ViTEncoder` — our own ViT (patch embedding, learned positions, optional class token,
  pre-norm blocks from :mod:`unicxr.models.layers`), trained from scratch;
* :class:`HFViTEncoder` — a local Hugging Face vision transformer directory (ViT, DeiT, Dinov2, ...)
  loaded with ``transformers`` and ``local_files_only=True`` (nothing is downloaded). Its
  architecture can be rebuilt from the stored HF config alone, so a saved unicxr model does not
  need the original directory.

Inputs are (B, C, H, W) already resized and standardised by the caller
(:class:`unicxr.models.image_encoder.ImageEncoder`); a 1-channel input is repeated to the 3 channels
an HF model expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from unicxr.models.layers import TransformerBlock, make_norm
from unicxr.utils.errors import UnicxrError

__all__ = ["ViTEncoder", "HFViTEncoder", "load_hf_vision"]


class ViTEncoder(nn.Module):
    """Plain ViT.

    Args:
        image_size: input side S (square); patch_size: P (S divisible by P) → N = (S/P)² patch tokens.
        in_channels: input channels; dim: width D; depth: blocks; num_heads: heads; mlp_ratio: MLP width.
        class_token: prepend a learned [CLS] token (pooled = its output; else pooled = mean of patches).
        norm: ``layernorm`` / ``rmsnorm``; dropout: inside blocks.

    ``forward(x)``: x (B, C, S, S) → (patch tokens (B, N, D) after the final norm, pooled (B, D)).
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int = 16,
        in_channels: int = 1,
        dim: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        class_token: bool = True,
        norm: Literal["layernorm", "rmsnorm"] = "layernorm",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_patches = self.grid**2
        self.dim = dim
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.pos = nn.Parameter(torch.zeros(1, self.num_patches + (1 if class_token else 0), dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, norm=norm, dropout=dropout) for _ in range(depth)
        )
        self.norm = make_norm(norm, dim)
        self._init()

    def _init(self) -> None:
        nn.init.trunc_normal_(self.pos, std=0.02)
        if self.cls is not None:
            nn.init.trunc_normal_(self.cls, std=0.02)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, S, S) → (tokens (B, N, D), pooled (B, D))."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"ViTEncoder expects {self.image_size}x{self.image_size} inputs, got {tuple(x.shape)}")
        t = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = t + self.pos
        for blk in self.blocks:
            t, _ = blk(t)
        t = self.norm(t)
        if self.cls is not None:
            return t[:, 1:], t[:, 0]
        return t, t.mean(dim=1)


def load_hf_vision(path: str | Path | None = None, hf_config: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A Hugging Face vision backbone from a local directory (with its weights) or, when ``hf_config``
    is given, rebuilt from that config dict (random weights, to be overwritten by a saved state).

    Returns:
        (model, its config as a JSON-ready dict).
    """
    try:
        from transformers import AutoConfig, AutoModel
    except ImportError:  # pragma: no cover - transformers is installed with unicxr[hf]
        raise UnicxrError("a Hugging Face image encoder needs the transformers package") from None
    if hf_config is not None:
        cfg_dict = dict(hf_config)
        mtype = cfg_dict.pop("model_type", None)
        if not mtype:
            raise UnicxrError("encoder.hf_config: missing model_type")
        cfg = AutoConfig.for_model(mtype, **{k: v for k, v in cfg_dict.items() if not k.startswith("_")})
        model = AutoModel.from_config(cfg)
    else:
        if path is None:
            raise UnicxrError("encoder.pretrained: a local Hugging Face model directory is required")
        p = Path(path)
        if not (p / "config.json").is_file():
            raise UnicxrError(f"encoder.pretrained: {p}: not a local Hugging Face model directory (no config.json)")
        try:
            model = AutoModel.from_pretrained(str(p), local_files_only=True)
        except Exception as exc:  # HF raises many kinds; one line naming the folder
            raise UnicxrError(f"encoder.pretrained: {p}: cannot load: {str(exc).splitlines()[0]}") from None
    cfg_out = model.config.to_dict()
    cfg_out = {k: v for k, v in cfg_out.items() if k not in ("architectures", "transformers_version", "torch_dtype", "dtype")}
    return model, cfg_out


class HFViTEncoder(nn.Module):
    """A local Hugging Face ViT/DeiT/Dinov2 directory as an image encoder.

    Args:
        pretrained: local HF directory (weights loaded); ignored when ``hf_config`` is given.
        hf_config: HF config dict (architecture only; weights come from a unicxr save).
        pooling: ``cls`` (first token) or ``mean`` (mean of patch tokens).

    ``forward(x)``: x (B, 1|3, S, S) → (patch tokens (B, N, D), pooled (B, D)); register/class tokens
    are removed from the token output.
    """

    def __init__(
        self, pretrained: str | Path | None = None, hf_config: dict[str, Any] | None = None, pooling: str = "cls"
    ) -> None:
        super().__init__()
        self.model, self.hf_config = load_hf_vision(pretrained, hf_config)
        c = self.model.config
        self.dim = int(c.hidden_size)
        self.in_channels = int(getattr(c, "num_channels", 3))
        self.num_prefix = 1 + int(getattr(c, "num_register_tokens", 0) or 0)
        if getattr(c, "model_type", "") in ("deit",):
            self.num_prefix += 1  # class + distillation token
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != self.in_channels:
            x = x[:, :1].expand(-1, self.in_channels, -1, -1)
        try:
            out = self.model(pixel_values=x, interpolate_pos_encoding=True)
        except TypeError:  # models without position interpolation
            out = self.model(pixel_values=x)
        h = out.last_hidden_state
        tokens = h[:, self.num_prefix :]
        pooled = h[:, 0] if self.pooling == "cls" else tokens.mean(dim=1)
        return tokens, pooled
