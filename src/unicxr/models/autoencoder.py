"""Latent autoencoders for grayscale CXRs: MONAI ``AutoencoderKL`` and ``VQVAE`` behind one API.

Every generator works in the latent space of one of these models. Both types take images
(B, 1, H, W) in [0, 1] (or (B, 1, D, H, W) with ``spatial_dims=3``), downsample by
``patch_size * 2 ** (len(channels) - 1)`` (4 or 8 in the recipes) to ``latent_channels`` channels, and share::

    z = ae.encode(x)          # (B, C, h, w), already multiplied by config.scale_factor
    x_hat = ae.decode(z)      # (B, 1, H, W), divides by config.scale_factor first
    ae.latent_shape(256)      # (C, h, w)

``scale_factor`` (1 / std of the training latents) is computed once from training data by the
``autoencoder`` task and stored in ``config.json``; until then it is ``None`` and counts as 1.

* ``autoencoder_kl`` (:class:`AutoencoderKLModel`): a Gaussian posterior; :meth:`posterior` gives
  the unscaled mean and log-variance, ``encode`` the (scaled) mean or a sample.
* ``vqvae`` (:class:`VQVAEModel`): an EMA-codebook quantizer; ``encode`` gives the quantized latents
  (scaled), :meth:`VQVAEModel.encode_indices` / :meth:`VQVAEModel.decode_indices` the code indices.
  With ``num_quantizers`` N > 1 it is a residual quantizer (RQ-VAE, Lee et al. 2022): codebook k
  quantizes what codebooks 1..k-1 left of the encoder output, the latent is the sum of the N picked
  codes (same latent shape), and the indices gain a codebook axis: (B, N, h, w).

The networks see ``2x - 1`` (inputs in [-1, 1]) and their output is mapped back with ``(y + 1) / 2``;
decoded images are not clamped (clamp for display). With ``patch_size`` p > 1 the network reads the image
folded into p ** d channels at 1/p of its side (space-to-depth) and its output is unfolded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from unicxr.config import StrictModel
from unicxr.models.base import ModelMixin, register_model
from unicxr.utils.errors import UnicxrError

__all__ = [
    "AutoencoderConfig",
    "LatentAutoencoder",
    "AutoencoderKLModel",
    "VQVAEModel",
    "build_autoencoder",
    "AUTOENCODER_TYPES",
    "resolve_model_dir",
    "load_autoencoder",
]


class AutoencoderConfig(StrictModel):
    """Config of both autoencoder types (``kind`` selects one; the other kind's options are unused)."""

    kind: Literal["kl", "vq"] = Field("kl", description="kl: AutoencoderKL; vq: VQVAE (EMA codebook)")
    spatial_dims: Literal[2, 3] = 2
    image_size: int | None = Field(
        None, ge=8, description="training image side in px (null: the cache's size); recorded, not enforced"
    )
    channels: list[int] = Field(
        default_factory=lambda: [32, 64, 64],
        description="widths per resolution level; downsampling factor = patch_size * 2 ** (len(channels) - 1)",
    )
    latent_channels: int = Field(4, gt=0, description="latent channels C (VQ: embedding_dim = C)")
    patch_size: Literal[1, 2, 4] = Field(
        1,
        description=(
            "space-to-depth stem: each patch_size-wide block of pixels becomes patch_size ** spatial_dims channels "
            "before the network and is unfolded after it, so the first level already runs at 1/patch_size of the "
            "image side; downsampling factor = patch_size * 2 ** (len(channels) - 1)"
        ),
    )
    num_res_blocks: int = Field(1, ge=1)
    attention: bool = Field(False, description="KL only: attention at the lowest level + non-local blocks")
    norm: Literal["group", "none"] = Field(
        "group",
        description=(
            "KL only: group: MONAI's GroupNorm layers; none: no normalisation (every GroupNorm becomes an identity, "
            "as in the VQ network), so a model trained on crops sees the same per-pixel maths on whole images"
        ),
    )
    norm_num_groups: int = Field(32, gt=0, description="KL only: GroupNorm groups (divides every width)")
    num_embeddings: int = Field(512, gt=1, description="VQ only: codebook size")
    num_quantizers: int = Field(
        1, ge=1, le=16,
        description=(
            "VQ only: residual codebooks (RQ-VAE); each quantizes what the earlier ones left, the latent is the sum "
            "of the picked codes, so a latent position carries num_quantizers x log2(num_embeddings) bits"
        ),
    )
    commitment_cost: float = Field(0.25, ge=0.0, description="VQ only: commitment weight in the VQ loss")
    vq_decay: float = Field(0.99, gt=0.0, lt=1.0, description="VQ only: EMA decay of the codebook")
    scale_factor: float | None = Field(
        None, gt=0.0, description="1 / std of training latents (set once after training; null counts as 1)"
    )

    @model_validator(mode="after")
    def _check(self) -> AutoencoderConfig:
        if len(self.channels) < 2:
            raise ValueError("channels: need at least 2 levels (downsampling factor >= 2)")
        if any(c <= 0 for c in self.channels):
            raise ValueError(f"channels: must be positive, got {self.channels}")
        if self.kind == "kl" and self.norm == "group" and any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"channels {self.channels} must be multiples of norm_num_groups ({self.norm_num_groups})")
        if self.image_size is not None and self.image_size % self.downsample_factor:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by the downsampling factor {self.downsample_factor}"
            )
        return self

    @property
    def downsample_factor(self) -> int:
        """Spatial downsampling factor f = patch_size * 2 ** (len(channels) - 1)."""
        return self.patch_size * 2 ** (len(self.channels) - 1)

    @property
    def io_channels(self) -> int:
        """Channels the network itself reads and writes: patch_size ** spatial_dims."""
        return self.patch_size**self.spatial_dims


class LatentAutoencoder(ModelMixin):
    """Shared API of the latent autoencoders (see the module docstring)."""

    config: AutoencoderConfig
    kind: str = ""

    def __init__(self, config: AutoencoderConfig | dict[str, Any]) -> None:
        super().__init__(config)
        if self.config.kind != self.kind:
            raise ValueError(f"{self.model_type}: config.kind must be {self.kind!r}, got {self.config.kind!r}")

    # -- shapes and scaling -----------------------------------------------------------------------
    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def scale(self) -> float:
        """The latent scale factor (1.0 until it has been computed)."""
        return float(self.config.scale_factor) if self.config.scale_factor is not None else 1.0

    def latent_shape(self, image_size: int | tuple[int, ...] | None = None) -> tuple[int, ...]:
        """Latent shape (C, h, w) (or (C, d, h, w)) of an image of side ``image_size`` (default: the
        config's) or of spatial shape ``image_size``."""
        size = self.config.image_size if image_size is None else image_size
        if size is None:
            raise ValueError("latent_shape: give image_size (the config has none)")
        dims = self.config.spatial_dims
        sides = (int(size),) * dims if isinstance(size, int) else tuple(int(s) for s in size)
        f = self.downsample_factor
        if len(sides) != dims or any(s % f for s in sides):
            raise ValueError(f"latent_shape: image shape {sides} must have {dims} sides divisible by {f}")
        return (self.config.latent_channels, *(s // f for s in sides))

    def _check_images(self, x: torch.Tensor) -> torch.Tensor:
        dims = self.config.spatial_dims
        if x.ndim != dims + 2 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, {'D, ' if dims == 3 else ''}H, W), got {tuple(x.shape)}")
        f = self.downsample_factor
        if any(s % f for s in x.shape[2:]):
            raise ValueError(f"image sides {tuple(x.shape[2:])} must be divisible by the downsampling factor {f}")
        return self._fold(x.float() * 2.0 - 1.0)

    def _to_image(self, y: torch.Tensor) -> torch.Tensor:
        """Network output (B, p**d, H/p, W/p) → image (B, 1, H, W) in about [0, 1]."""
        return (self._unfold(y) + 1.0) * 0.5

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        """Space-to-depth: (B, 1, H, W) → (B, p**d, H/p, W/p) with p = patch_size (identity for p = 1)."""
        p, d = self.config.patch_size, self.config.spatial_dims
        if p == 1:
            return x
        b, sides = x.shape[0], x.shape[2:]
        x = x.reshape(b, *[v for s in sides for v in (s // p, p)])  # (B, S1/p, p, S2/p, p[, S3/p, p])
        x = x.permute(0, *range(2, 2 * d + 1, 2), *range(1, 2 * d, 2))  # (B, p, p[, p], S1/p, S2/p[, S3/p])
        return x.reshape(b, p**d, *(s // p for s in sides))

    def _unfold(self, y: torch.Tensor) -> torch.Tensor:
        """Depth-to-space, the inverse of :meth:`_fold`: (B, p**d, h, w) → (B, 1, h*p, w*p)."""
        p, d = self.config.patch_size, self.config.spatial_dims
        if p == 1:
            return y
        b, sides = y.shape[0], y.shape[2:]
        y = y.reshape(b, *([p] * d), *sides)  # (B, p, p[, p], h, w[, ...])
        y = y.permute(0, *[v for k in range(d) for v in (d + 1 + k, 1 + k)])  # (B, h, p, w, p[, ...])
        return y.reshape(b, 1, *(s * p for s in sides))

    # -- API --------------------------------------------------------------------------------------
    def encode_unscaled(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latents (B, C, h, w) before scaling (KL: posterior mean; VQ: quantized)."""
        raise NotImplementedError

    def decode_unscaled(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, H, W) from unscaled latents."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Images (B, 1, H, W) in [0, 1] → latents (B, C, h, w) × ``scale_factor``."""
        return self.encode_unscaled(x) * self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w) → images (B, 1, H, W) (about [0, 1]; not clamped)."""
        return self.decode_unscaled(z / self.scale)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic round trip ``decode(encode(x))`` (B, 1, H, W)."""
        return self.decode(self.encode(x))

    def set_scale_factor(self, value: float) -> None:
        """Store ``value`` as the latent scale factor (written to config.json on save)."""
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"scale factor must be positive and finite, got {value}")
        self.config = self.config.model_copy(update={"scale_factor": float(value)})


def _drop_group_norms(module: torch.nn.Module) -> None:
    """Replace every ``GroupNorm`` below ``module`` by an identity (in place).

    GroupNorm statistics are per image: over a 128 px training crop they differ from those over the
    whole 256 px image the model later sees, and a small network spends capacity undoing them."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.GroupNorm):
            setattr(module, name, torch.nn.Identity())
        else:
            _drop_group_norms(child)


@register_model
class AutoencoderKLModel(LatentAutoencoder):
    """MONAI ``AutoencoderKL`` (patch_size ** d channels in/out). ``forward(x)`` (training) returns
    ``(reconstruction (B, 1, H, W), mean, logvar)`` with a posterior sample from the global RNG."""

    model_type = "autoencoder_kl"
    config_class = AutoencoderConfig
    kind = "kl"

    def __init__(self, config: AutoencoderConfig | dict[str, Any]) -> None:
        super().__init__(config)
        from monai.networks.nets import AutoencoderKL

        cfg = self.config
        n = len(cfg.channels)
        attn = [False] * n
        if cfg.attention:
            attn[-1] = True
        self.net = AutoencoderKL(
            spatial_dims=cfg.spatial_dims,
            in_channels=cfg.io_channels,
            out_channels=cfg.io_channels,
            num_res_blocks=cfg.num_res_blocks,
            channels=tuple(cfg.channels),
            attention_levels=tuple(attn),
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_num_groups if cfg.norm == "group" else 1,
            with_encoder_nonlocal_attn=cfg.attention,
            with_decoder_nonlocal_attn=cfg.attention,
            include_fc=False,
        )
        if cfg.norm == "none":
            _drop_group_norms(self.net)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled posterior ``(mean, logvar)``, each (B, C, h, w), of images in [0, 1]."""
        mu, sigma = self.net.encode(self._check_images(x))
        return mu, 2.0 * torch.log(sigma)

    def encode_unscaled(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scaled latents: the posterior mean, or (``sample=True``) a posterior sample."""
        mu, logvar = self.posterior(x)
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            mu = mu + eps * torch.exp(0.5 * logvar)
        return mu * self.scale

    def decode_unscaled(self, z: torch.Tensor) -> torch.Tensor:
        return self._to_image(self.net.decode(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode_unscaled(z), mu, logvar


@register_model
class VQVAEModel(LatentAutoencoder):
    """MONAI ``VQVAE`` with an EMA codebook of ``num_embeddings`` codes of size ``latent_channels``.
    ``forward(x)`` (training) returns ``(reconstruction (B, 1, H, W), vq_loss ())``; in train mode it
    also updates the codebook (EMA buffers), which the first training batch initialises (see
    :meth:`_init_codebook`)."""

    model_type = "vqvae"
    config_class = AutoencoderConfig
    kind = "vq"

    def __init__(self, config: AutoencoderConfig | dict[str, Any]) -> None:
        super().__init__(config)
        from monai.networks.nets import VQVAE

        cfg = self.config
        levels = tuple(cfg.channels[1:])  # one stride-2 level per downsampling
        self.net = VQVAE(
            spatial_dims=cfg.spatial_dims,
            in_channels=cfg.io_channels,
            out_channels=cfg.io_channels,
            channels=levels,
            num_res_layers=cfg.num_res_blocks,
            num_res_channels=levels,
            downsample_parameters=tuple((2, 4, 1, 1) for _ in levels),
            upsample_parameters=tuple((2, 4, 1, 1, 0) for _ in levels),
            num_embeddings=cfg.num_embeddings,
            embedding_dim=cfg.latent_channels,
            commitment_cost=cfg.commitment_cost,
            decay=cfg.vq_decay,
            ddp_sync=True,
        )
        from monai.networks.layers.vector_quantizer import EMAQuantizer

        # codebooks 2..N of a residual quantizer (the first is MONAI's own, inside self.net)
        self.residual = torch.nn.ModuleList(
            EMAQuantizer(cfg.spatial_dims, cfg.num_embeddings, cfg.latent_channels,
                         commitment_cost=cfg.commitment_cost, decay=cfg.vq_decay, ddp_sync=True)
            for _ in range(cfg.num_quantizers - 1)
        )
        # per codebook, the perplexity (exp entropy) of the codes the last forward picked: K when all codes
        # are used evenly, near 1 when the book has collapsed onto a few (logged by the autoencoder task)
        self.code_perplexity: tuple[float, ...] = ()
        # 0 until the codebook has been initialised from data (first training forward); saved with
        # the weights and checkpoints, so a resumed run does not re-initialise it.
        self.register_buffer("codebook_ready", torch.zeros((), dtype=torch.uint8))

    @property
    def quantizers(self) -> list[Any]:
        """The N EMA quantizers in order (MONAI ``EMAQuantizer``; N = ``num_quantizers``)."""
        return [self.net.quantizer.quantizer, *self.residual]

    def codebooks(self) -> torch.Tensor:
        """The unscaled codebooks (N, K, C)."""
        return torch.stack([q.embedding.weight.detach() for q in self.quantizers])

    @torch.no_grad()
    def _init_codebook(self, h: torch.Tensor) -> None:
        """Data-dependent codebook start: codes = random encoder outputs of the first batch (+ tiny
        noise), EMA statistics as if each code had been used once. MONAI's default (N(0, 1) codes,
        zero EMA counts) maps every vector of a fresh encoder (outputs ~0.02) to one code, and unused
        codes then grow as ema_w / eps and are never chosen again (codebook collapse)."""
        r = h.detach().float()
        for q in self.quantizers:  # a residual codebook starts from what the earlier ones leave
            flat = r.movedim(1, -1).reshape(-1, q.embedding_dim)
            pick = torch.randint(0, flat.shape[0], (q.num_embeddings,), device=flat.device)
            noise = torch.randn(q.num_embeddings, q.embedding_dim, device=flat.device)
            codes = flat[pick] + 1e-3 * flat.std() * noise
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.broadcast(codes, 0)
            q.embedding.weight.data.copy_(codes)
            q.ema_w.data.copy_(codes)
            q.ema_cluster_size.data.fill_(1.0)
            r = r - q.embed(q.quantize(r)[2])
        self.codebook_ready.fill_(1)

    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices of images in [0, 1]: (B, h, w) int64, or (B, N, h, w) with N > 1 codebooks."""
        if len(self.quantizers) == 1:
            return self.net.index_quantize(self._check_images(x))
        r, out = self.net.encode(self._check_images(x)), []
        for q in self.quantizers:
            idx = q.quantize(r)[2]
            out.append(idx)
            r = r - q.embed(idx)
        return torch.stack(out, dim=1)

    def _embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ((B, h, w), or (B, N, h, w) with N codebooks) → unscaled latents (B, C, h, w)."""
        indices = indices.long()
        if len(self.quantizers) == 1:
            return self.net.quantizer.embed(indices)
        if indices.ndim < 2 or indices.shape[1] != len(self.quantizers):
            raise ValueError(
                f"indices of shape {tuple(indices.shape)}: expected (B, {len(self.quantizers)}, ...) "
                f"for {len(self.quantizers)} codebooks"
            )
        return sum(q.embed(indices[:, k]) for k, q in enumerate(self.quantizers))

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (see :meth:`encode_indices`) → scaled latents (B, C, h, w)."""
        return self._embed(indices) * self.scale

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (see :meth:`encode_indices`) → images (B, 1, H, W)."""
        return self.decode_unscaled(self._embed(indices))

    def encode_unscaled(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed(self.encode_indices(x))

    def decode_unscaled(self, z: torch.Tensor) -> torch.Tensor:
        return self._to_image(self.net.decode(z))

    def _quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output h (B, C, h, w) → (straight-through quantized latent, summed commitment loss ()).
        Codebook k sees the residual h − (codes 1..k−1), so each commitment term pulls the encoder toward
        the running sum of codes; in train mode every codebook's EMA update runs."""
        if len(self.quantizers) == 1:
            out = self.net.quantize(h)
            self.code_perplexity = (float(self.net.quantizer.perplexity),)
            return out
        r, total, loss, ppl = h, torch.zeros_like(h), h.new_zeros(()), []
        for q in self.quantizers:
            st, term, idx = q(r)
            code = st.detach()  # equals the picked code vectors (MONAI returns r + (code - r).detach())
            total, r, loss = total + code, r - code, loss + term
            p = torch.bincount(idx.flatten(), minlength=q.num_embeddings).float() / idx.numel()
            ppl.append(float(torch.exp(-(p * (p + 1e-10).log()).sum())))
        self.code_perplexity = tuple(ppl)
        return h + (total - h).detach(), loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net.encode(self._check_images(x))
        if self.training and not bool(self.codebook_ready):
            self._init_codebook(h)
        q, vq_loss = self._quantize(h)
        return self.decode_unscaled(q), vq_loss


AUTOENCODER_TYPES: dict[str, type[LatentAutoencoder]] = {"kl": AutoencoderKLModel, "vq": VQVAEModel}


def build_autoencoder(config: AutoencoderConfig | dict[str, Any]) -> LatentAutoencoder:
    """A fresh autoencoder of the type ``config.kind`` names."""
    kind = config.kind if isinstance(config, AutoencoderConfig) else dict(config).get("kind", "kl")
    return AUTOENCODER_TYPES[kind](config)


def resolve_model_dir(path: str | Path) -> Path:
    """A saved model directory, or the ``model/`` (else ``model_ema/``) folder of a training run."""
    from unicxr.models import resolve_model_dir as resolve

    return resolve(path, prefer=("model", "model_ema"))


def load_autoencoder(path: str | Path, device: str = "cpu") -> tuple[LatentAutoencoder, Path]:
    """(model in eval mode, its directory) of a saved ``autoencoder_kl``/``vqvae`` model or run folder."""
    from unicxr.models import load_model

    model_dir = resolve_model_dir(path)
    model = load_model(model_dir, device=device)
    if not isinstance(model, LatentAutoencoder):
        raise UnicxrError(f"{path}: model type {model.model_type!r} is not an autoencoder (autoencoder_kl, vqvae)")
    return model.eval(), model_dir
