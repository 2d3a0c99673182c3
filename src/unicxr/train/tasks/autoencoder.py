"""Autoencoder task: a KL or VQ latent autoencoder for grayscale CXRs (``model.kind: kl | vq``).

Generator loss (optimizer ``main``)::

    l1 · |x - x̂|  +  kl · KL(q(z|x) || N(0, I))  (or the VQ commitment loss)
    + spectral · JukeboxLoss(x̂, x)  +  ssim · (1 - SSIM(x̂, x))  +  perceptual · d_feat(x̂, x)  +  adv · LSGAN(D(x̂), real)
    + finding · KL(p(x) || p(x̂))   (per-finding probabilities of the perceptual network)

The discriminator (optimizer ``disc``, a MONAI ``PatchDiscriminator`` built by :meth:`build_modules`,
checkpointed but not saved with the model) starts at ``data.disc_start`` (default: ``disc_start_frac``
× ``train.max_steps``, so a shortened run still trains it) together with the
generator's adversarial term. The perceptual term uses a frozen evaluation encoder (``data.perceptual
.features: own:RUN``, a ``cxr_classifier`` run): channel-normalised differences of its intermediate
feature maps, and (``finding_weight``) the agreement of its finding probabilities. It is a
training-only loss network held by the task, never part of the saved model; it is off unless
``features`` is given.

At each evaluation (always at the end of training) the latent scale factor, 1 / std of the
deterministic latents of the first ``data.scale_batches`` training batches, is computed on the
evaluated weights and stored in the model's config (``config.json``: ``scale_factor``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from monai.losses import JukeboxLoss
from pydantic import Field
from torch.utils.data import Dataset

from unicxr.config import StrictModel
from unicxr.data.augment import Augment
from unicxr.data.dataset import CXRDataset
from unicxr.models.autoencoder import AutoencoderConfig, LatentAutoencoder, build_autoencoder
from unicxr.train.tasks import Media, OptimizerSpec, Task, register_task, with_cache_image_size
from unicxr.utils.errors import UnicxrError

__all__ = ["AutoencoderDataConfig", "PerceptualConfig", "AutoencoderTask", "FeaturePerceptualLoss",
           "SpectralLoss", "kl_divergence", "latent_scale_factor"]


class PerceptualConfig(StrictModel):
    """Perceptual term from a frozen CXR network (off unless ``features`` is given)."""

    features: str | None = Field(
        None, description="own:RUN_OR_MODEL_DIR: a trained cxr_classifier (the evaluation encoder)"
    )
    weight: float = Field(0.1, ge=0.0, description="weight of the perceptual term when features is set")
    finding_weight: float = Field(
        0.0, ge=0.0,
        description="weight of the finding-consistency term when features is set: how far the network's "
        "per-finding outputs on the reconstruction are from those on the original (logged as `finding`)",
    )
    finding_distance: Literal["kl", "logit"] = Field(
        "kl",
        description="kl: mean binary KL of the probabilities (confident findings barely count); logit: mean "
        "squared logit difference (every finding and image alike, as a per-finding AUROC ranks them)",
    )


class AutoencoderDataConfig(StrictModel):
    """Data and loss section of an autoencoder recipe."""

    cache: str = Field(..., description="cache directory written by `unicxr prepare`")
    train_split: str = "train"
    val_split: str | None = "validate"
    max_items: int | None = Field(None, gt=0, description="use at most this many items per split (tests)")
    val_items: int = Field(64, gt=0, description="validation items for the metrics at each evaluation")
    augment: bool = Field(
        False, description="small seeded affine/intensity jitter (off by default: resampling blurs fine detail)"
    )
    crop_size: int | None = Field(
        None, gt=0, description="train on seeded random crops of this size (each image its own offset) at the "
        "cache's full resolution; validation, the scale factor and `eval recon` use whole images. A network "
        "without attention is convolutional, so crops teach it the same pixel scale at a fraction of the cost "
        "(e.g. 128 px crops of 256 px images: 4x fewer pixels per step)")
    l1_weight: float = Field(1.0, ge=0.0)
    kl_weight: float = Field(1e-6, ge=0.0, description="KL only: weight of the KL term")
    vq_weight: float = Field(1.0, ge=0.0, description="VQ only: weight of the commitment loss")
    spectral_weight: float = Field(0.0, ge=0.0, description="weight of MONAI JukeboxLoss (FFT amplitudes)")
    ssim_weight: float = Field(
        0.0, ge=0.0, description="weight of MONAI SSIMLoss (1 - SSIM, 11 px Gaussian window): local structure such as thin "
        "lines, which L1 alone trades for mean brightness"
    )
    ms_ssim_weight: float = Field(
        0.0, ge=0.0, description="weight of 1 - MS-SSIM (the kernel and levels `unicxr eval recon` scores with): "
        "structure at coarse scales too, where a bicubic down/up-sampling is nearly exact"
    )
    perceptual: PerceptualConfig = Field(default_factory=PerceptualConfig)
    adv_weight: float = Field(0.01, ge=0.0, description="weight of the generator's adversarial term")
    disc_start: int | None = Field(
        None, ge=0, description="step at which the discriminator and the adversarial term start (null: disc_start_frac)"
    )
    disc_start_frac: float = Field(0.5, ge=0.0, le=1.0, description="start at this fraction of train.max_steps")
    disc_channels: int = Field(32, gt=0)
    disc_layers: int = Field(2, ge=1, description="PatchDiscriminator num_layers_d")
    disc_lr_scale: float = Field(1.0, gt=0.0)
    scale_batches: int = Field(8, ge=1, description="training batches used for the latent scale factor")
    media_n: int = Field(6, ge=0, description="validation images shown (original | reconstruction | |diff|)")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, mean over the batch."""
    kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float())
    return kl.flatten(1).sum(1).mean()


@torch.no_grad()
def latent_scale_factor(model: LatentAutoencoder, batches: list[torch.Tensor]) -> float:
    """1 / std of the unscaled deterministic latents of ``batches`` (each (B, 1, H, W))."""
    zs = [model.encode_unscaled(x).float().flatten() for x in batches]
    std = float(torch.cat(zs).std())
    if not std > 0:
        raise UnicxrError("autoencoder: latents have zero variance; cannot compute the scale factor")
    return 1.0 / std


class SpectralLoss(JukeboxLoss):
    """MONAI ``JukeboxLoss`` (mean squared difference of FFT amplitudes) with the amplitude taken as
    ``sqrt(re² + im² + eps)``, so its gradient stays finite where a coefficient is exactly zero. MONAI's
    plain ``sqrt`` gives ``0 · inf = nan`` there: a flat reconstructed crop turned every encoder gradient of
    a 256 px VQ run into nan at step 182."""

    eps = 1e-12

    def _get_fft_amplitude(self, images: torch.Tensor) -> torch.Tensor:
        f = torch.fft.fftn(images, s=self.fft_signal_size, dim=self.fft_dim, norm=self.fft_norm)
        return torch.sqrt(f.real.pow(2) + f.imag.pow(2) + self.eps)


class FeaturePerceptualLoss(torch.nn.Module):
    """Perceptual distance in a frozen ``cxr_classifier``'s feature maps, and the finding consistency
    of its outputs.

    Features: for a MONAI ResNet trunk the outputs of ``layer1``..``layer3``, each unit-normalised over
    channels (as LPIPS without learned weights), mean squared difference averaged over layers; other
    trunks: mean squared difference of the pooled penultimate features.

    Findings (``findings=True``), averaged over batch and findings: ``distance="kl"``, the binary KL
    divergence KL(p(x) || p(x̂)) of the network's sigmoid probabilities (≈ p(1-p)·Δlogit²/2, so findings
    the network is sure of barely count); ``"logit"``, the squared logit difference Δlogit² (each finding
    and image alike, which is what a per-finding AUROC ranks). Either is zero when the reconstruction
    reads the same as the original, whatever the features, so it asks the decoder to keep what decides
    a finding.
    """

    def __init__(self, classifier: torch.nn.Module, *, findings: bool = False, distance: str = "kl") -> None:
        super().__init__()
        if distance not in ("kl", "logit"):
            raise ValueError(f"finding distance must be 'kl' or 'logit', got {distance!r}")
        self.net = classifier.eval().requires_grad_(False)
        self.findings = findings
        self.distance = distance

    def train(self, mode: bool = True) -> FeaturePerceptualLoss:  # always frozen
        super().train(False)
        return self

    def _maps(self, x: torch.Tensor, findings: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Feature maps for the distance, and the logits (B, K) when ``findings`` (one pass)."""
        if not hasattr(self.net.trunk, "layer1"):
            if not findings:
                return [self.net.features(x)[:, :, None, None]], None
            fmap = self.net.stage_maps(x)[-1]
            return [self.net.pool_map(fmap)], self.net.logits_from_map(fmap)
        maps = self.net.stage_maps(x, stages=4 if findings else 3)
        return maps[:3], (self.net.logits_from_map(maps[-1]) if findings else None)

    def forward(
        self, recon: torch.Tensor, target: torch.Tensor, *, features: bool = True, findings: bool | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(feature distance, finding KL) of reconstructions vs targets, both (B, 1, H, W); each None when
        not asked for (``findings`` defaults to the ``findings`` given at construction)."""
        findings = self.findings if findings is None else findings
        a, la = self._maps(recon.float(), findings)
        with torch.no_grad():
            b, lb = self._maps(target.float(), findings)
        loss = None
        if features:
            loss = recon.new_zeros((), dtype=torch.float32)
            for fa, fb in zip(a, b, strict=True):
                na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-6)
                nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-6)
                loss = loss + (na - nb).pow(2).sum(1).mean()
            loss = loss / len(a)
        if la is None:
            return loss, None
        if self.distance == "logit":
            return loss, (la.float() - lb.float()).pow(2).mean()
        p = torch.sigmoid(lb.float())
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        kl = bce(la.float(), p) - bce(lb.float(), p)  # cross-entropy minus the target's entropy
        return loss, kl


@register_task("autoencoder")
class AutoencoderTask(Task):
    """Train an :mod:`unicxr.models.autoencoder` model (KL or VQ by ``model.kind``) with a delayed
    patch discriminator (two optimizers: ``main``, ``disc``)."""

    ModelConfig = AutoencoderConfig
    DataConfig = AutoencoderDataConfig

    def __init__(self, model_cfg: AutoencoderConfig, data_cfg: AutoencoderDataConfig) -> None:
        super().__init__(with_cache_image_size(model_cfg, data_cfg.cache), data_cfg)
        self.augmenter = Augment(rotate_deg=3.0, scale=0.03, translate=0.02, contrast=0.05, brightness=0.025)
        self._train_ds: Dataset | None = None
        self._perceptual: FeaturePerceptualLoss | None = None
        self._spectral: torch.nn.Module | None = None
        self._ssim: torch.nn.Module | None = None
        self._adv: torch.nn.Module | None = None
        d = data_cfg
        self._disc_start = d.disc_start if d.disc_start is not None else 0  # set from max_steps below

    # -- building ---------------------------------------------------------------------------------
    def build_model(self) -> LatentAutoencoder:
        return build_autoencoder(self.model_cfg)

    def build_modules(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        from monai.networks.nets import PatchDiscriminator

        cfg = self.data_cfg
        disc = PatchDiscriminator(
            spatial_dims=self.model_cfg.spatial_dims,
            num_layers_d=cfg.disc_layers,
            channels=cfg.disc_channels,
            in_channels=1,
            out_channels=1,
        )
        return {"disc": disc}

    def _dataset(self, split: str) -> CXRDataset:
        cfg = self.data_cfg
        return CXRDataset(cfg.cache, split, size=self.model_cfg.image_size, max_items=cfg.max_items,
                          fields=("image", "index"))

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        self._train_ds = self._dataset(self.data_cfg.train_split)
        val = self._dataset(self.data_cfg.val_split) if self.data_cfg.val_split else None
        return self._train_ds, val

    def configure_optimizers(self, modules: dict[str, torch.nn.Module], cfg: Any) -> list[OptimizerSpec]:
        d = self.data_cfg
        self._disc_start = d.disc_start if d.disc_start is not None else int(d.disc_start_frac * cfg.max_steps)
        gen = [p for p in modules["model"].parameters() if p.requires_grad]
        return [
            OptimizerSpec("main", gen),
            OptimizerSpec("disc", list(modules["disc"].parameters()), lr_scale=self.data_cfg.disc_lr_scale,
                          betas=(0.5, 0.9), start_step=self._disc_start),
        ]

    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        x = batch["image"]
        if self.data_cfg.augment:
            x = self.augmenter.batch(x, generator).clamp(0, 1)
        c = self.data_cfg.crop_size
        offsets = None if c is None else random_crop_offsets(x, c, generator)
        if offsets is None:
            return batch if x is batch["image"] else {**batch, "image": x}
        crops = crop_at(x, c, offsets)
        if not self._finding_term:
            return {**batch, "image": crops}
        # the finding term reads whole images: keep the image and where its crop came from
        return {**batch, "image": crops, "image_full": x, "crop_offsets": torch.tensor(offsets)}

    @property
    def _finding_term(self) -> bool:
        pc = self.data_cfg.perceptual
        return bool(pc.features) and pc.finding_weight > 0

    # -- losses -----------------------------------------------------------------------------------
    def _loss_modules(self, device: torch.device) -> None:
        if self._adv is None:
            from monai.losses import PatchAdversarialLoss

            self._adv = PatchAdversarialLoss(criterion="least_squares")
            self._spectral = SpectralLoss(spatial_dims=self.model_cfg.spatial_dims)
        if self.data_cfg.ssim_weight > 0 and self._ssim is None:
            from monai.losses import SSIMLoss

            self._ssim = SSIMLoss(spatial_dims=self.model_cfg.spatial_dims, data_range=1.0)
        spec = self.data_cfg.perceptual.features
        pc = self.data_cfg.perceptual
        if spec and (pc.weight > 0 or pc.finding_weight > 0) and self._perceptual is None:
            # building the network draws from the global RNG; fork it so that the training stream (the
            # KL sampling noise) is the same with or without the term, and after a resume
            with torch.random.fork_rng(devices=[]):
                net = load_perceptual_network(spec)
            self._perceptual = FeaturePerceptualLoss(
                net, findings=self._finding_term, distance=pc.finding_distance).to(device)

    def training_loss(
        self, optimizer: str, modules: dict[str, torch.nn.Module], batch: dict[str, Any], ctx: dict[str, Any], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.data_cfg
        x = batch["image"]
        self._loss_modules(x.device)
        adv_on = step >= self._disc_start
        if optimizer == "main":
            out = modules["model"](x)
            recon = out[0]
            ctx["recon"] = recon.detach()
            l1 = (recon.float() - x.float()).abs().mean()
            extras = {"l1": float(l1.detach())}
            loss = cfg.l1_weight * l1
            if self.model_cfg.kind == "kl":
                kl = kl_divergence(out[1], out[2])
                loss = loss + cfg.kl_weight * kl
                extras["kl"] = float(kl.detach())
            else:
                loss = loss + cfg.vq_weight * out[1].float()
                extras["vq"] = float(out[1].detach())
                ae = getattr(modules["model"], "module", modules["model"])  # DDP wraps it
                for k, ppl in enumerate(getattr(ae, "code_perplexity", ())):
                    extras[f"code_ppl_{k + 1}"] = ppl  # codes in use (exp entropy) per codebook; 1: collapsed
            if cfg.spectral_weight > 0:
                spec = self._spectral(recon.float(), x.float())
                loss = loss + cfg.spectral_weight * spec
                extras["spectral"] = float(spec.detach())
            if self._ssim is not None:
                ssim = self._ssim(recon.float(), x.float())
                loss = loss + cfg.ssim_weight * ssim
                extras["ssim_loss"] = float(ssim.detach())
            if cfg.ms_ssim_weight > 0:
                from unicxr.eval.image_metrics import ms_ssim

                ms = 1.0 - ms_ssim(recon.float(), x.float()).mean()
                loss = loss + cfg.ms_ssim_weight * ms
                extras["ms_ssim_loss"] = float(ms.detach())
            if self._perceptual is not None:
                full = batch.get("image_full")
                if full is None:  # one pass gives both terms
                    per, fkl = self._perceptual(recon, x)
                else:  # crops: features of the crop, findings of the image with the crop put back
                    per = self._perceptual(recon, x, findings=False)[0] if cfg.perceptual.weight > 0 else None
                    fkl = self._perceptual(paste_crops(full, recon, batch["crop_offsets"]), full, features=False)[1]
                if per is not None:
                    loss = loss + cfg.perceptual.weight * per
                    extras["perceptual"] = float(per.detach())
                if fkl is not None:
                    loss = loss + cfg.perceptual.finding_weight * fkl
                    extras["finding"] = float(fkl.detach())
            if adv_on and cfg.adv_weight > 0:
                logits = modules["disc"](recon.float())[-1]
                adv = self._adv(logits, target_is_real=True, for_discriminator=False)
                loss = loss + cfg.adv_weight * adv
                extras["adv"] = float(adv.detach())
            return loss, extras
        # discriminator: real vs the generator's reconstruction of this micro-batch (one BN batch)
        n = x.shape[0]
        logits = modules["disc"](torch.cat([x.float(), ctx["recon"].float()], 0))[-1]
        real, fake = logits[:n], logits[n:]
        loss = 0.5 * (
            self._adv(real, target_is_real=True, for_discriminator=True)
            + self._adv(fake, target_is_real=False, for_discriminator=True)
        )
        return loss, {}

    # -- validation -------------------------------------------------------------------------------
    def _first_items(self, dataset: Dataset, n: int) -> torch.Tensor:
        n = min(n, len(dataset))
        return torch.stack([dataset[i]["image"] for i in range(n)])

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        """Reconstruction L1/PSNR on the first ``val_items`` validation images, and the latent scale
        factor from the first training batches (stored in the model's config)."""
        net = self.unwrap(model)
        device = next(net.parameters()).device
        metrics: dict[str, float] = {}
        if self._train_ds is not None:
            bs = 16
            n = min(len(self._train_ds), bs * self.data_cfg.scale_batches)
            batches = [self._first_items_range(self._train_ds, s, min(s + bs, n)).to(device) for s in range(0, n, bs)]
            scale = latent_scale_factor(net, batches)
            net.set_scale_factor(scale)
            metrics["scale_factor"] = scale
        x = self._first_items(dataset, self.data_cfg.val_items).to(device)
        recon = torch.cat([net.reconstruct(x[s : s + 16]) for s in range(0, len(x), 16)]).clamp(0, 1)
        mse = (recon.float() - x.float()).pow(2).flatten(1).mean(1)
        metrics["val_l1"] = float((recon - x).abs().mean())
        metrics["val_psnr"] = float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())
        return metrics

    @staticmethod
    def _first_items_range(dataset: Dataset, a: int, b: int) -> torch.Tensor:
        return torch.stack([dataset[i]["image"] for i in range(a, b)])

    @torch.no_grad()
    def log_media(self, model: torch.nn.Module, dataset: Dataset | None, step: int) -> Media | None:
        """Rows of original | reconstruction | |difference| (×4) for the first validation images."""
        if dataset is None or not self.data_cfg.media_n or self.model_cfg.spatial_dims != 2:
            return None
        net = self.unwrap(model)
        x = self._first_items(dataset, self.data_cfg.media_n).to(next(net.parameters()).device)
        recon = net.reconstruct(x).clamp(0, 1)
        diff = ((recon - x).abs() * 4).clamp(0, 1)
        rows = torch.cat([x, recon, diff], -1)  # one (1, H, 3W) strip per image
        return Media(images={"reconstructions": rows.cpu()}, synthetic=True)


def random_crop_offsets(x: torch.Tensor, size: int, generator: torch.Generator) -> list[list[int]] | None:
    """One seeded random corner per image of x (B, C, *spatial) for a ``size``-px crop, or None when the
    images are already that size. Raises when an image is smaller than the crop."""
    spatial = x.shape[2:]
    if any(s < size for s in spatial):
        raise UnicxrError(f"data.crop_size {size} is larger than the training images {tuple(spatial)}")
    if all(s == size for s in spatial):
        return None
    return [[int(torch.randint(0, s - size + 1, (1,), generator=generator)) for s in spatial]
            for _ in range(x.shape[0])]


def _crop_box(size: int, offs: Any) -> tuple[slice, ...]:
    return (slice(None), *(slice(int(o), int(o) + size) for o in offs))


def crop_at(x: torch.Tensor, size: int, offsets: list[list[int]]) -> torch.Tensor:
    """The ``size``-px crop of each image of x (B, C, *spatial) at its corner ``offsets[i]`` → (B, C, size, ...)."""
    return torch.stack([x[i][_crop_box(size, o)] for i, o in enumerate(offsets)])


def random_crops(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One seeded random ``size``-px crop per image of x (B, C, *spatial) → (B, C, size, ...) (x itself
    when it is already that size). Raises when an image is smaller than the crop."""
    offsets = random_crop_offsets(x, size, generator)
    return x if offsets is None else crop_at(x, size, offsets)


def paste_crops(full: torch.Tensor, crops: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``full`` (B, C, *spatial) with each crop (B, C, c, ...) put back at its corner ``offsets`` (B, D):
    differentiable in ``crops``, so a loss on whole images reaches a model that saw only crops."""
    out = full.to(crops.dtype).clone()
    for i in range(full.shape[0]):
        out[i][_crop_box(crops.shape[2], offsets[i].tolist())] = crops[i]
    return out


def load_perceptual_network(spec: str) -> torch.nn.Module:
    """The frozen classifier named by an ``own:PATH`` spec (a run folder or model directory)."""
    from pathlib import Path

    from unicxr.models import load_model

    kind, _, path = spec.partition(":")
    if kind != "own" or not path:
        raise UnicxrError(f"data.perceptual.features: expected own:RUN_OR_MODEL_DIR, got {spec!r}")
    p = Path(path)
    for cand in (p, p / "model_ema", p / "model"):
        if (cand / "config.json").is_file():
            net = load_model(cand)
            if not hasattr(net, "trunk") or not hasattr(net, "prepare"):
                raise UnicxrError(f"data.perceptual.features: {cand} is not a cxr_classifier")
            return net.eval().requires_grad_(False)
    raise UnicxrError(f"data.perceptual.features: {path}: no model directory (config.json, model_ema/ or model/)")
