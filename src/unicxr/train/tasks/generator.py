"""Generator tasks: ``ldm_unet``, ``latent_dit`` and ``crossflow`` on a cache (+ a frozen autoencoder).

The task fills the recipe conventions (image size from the cache; latent shape from the autoencoder,
or pixel space with ``model.autoencoder: null``), trains the report tokenizer on the training split
when the model conditions on text and none is given (saved with the model as a component), encodes
the training images with the frozen autoencoder once into ``RUN/latents/`` (``data.encode_once``; or
reads a ``unicxr encode`` cache given as ``data.latents``), and at each evaluation samples images for the first
validation conditions (``RUN/media/step_N/samples.png`` beside ``real.png`` and the prompts).

``data.lowres_size`` / ``data.lowres_steps`` add a low-resolution first phase (as the unified model's
64 px stage, but inside one run): the first steps train on downsampled images, whose latents have a
quarter of the tokens at half the side, so a CPU budget buys several times more steps; the model then
continues at full size. Flow models take the time shift of the smaller latent during that phase.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from unicxr.config import StrictModel
from unicxr.data.dataset import CXRDataset
from unicxr.models.crossflow import CrossFlow, CrossFlowConfig
from unicxr.models.generator_base import GeneratorBase, GeneratorConfig
from unicxr.models.latent_dit import LatentDiT, LatentDiTConfig
from unicxr.models.ldm_unet import LDMUNet, LDMUNetConfig
from unicxr.train.tasks import Media, OptimizerSpec, Task, register_task, with_cache_image_size
from unicxr.utils.errors import UnicxrError

__all__ = ["GeneratorDataConfig", "GeneratorTask", "LDMUNetTask", "LatentDiTTask", "CrossFlowDataConfig", "CrossFlowTask"]


class GeneratorDataConfig(StrictModel):
    """Data section of a generator recipe."""

    cache: str = Field(..., description="image cache written by `unicxr prepare`")
    latents: str | None = Field(
        None, description="latent cache written by `unicxr encode` with model.autoencoder (skips the encoder)"
    )
    train_split: str = "train"
    val_split: str | None = "validate"
    max_items: int | None = Field(None, gt=0, description="use at most this many items per split (tests)")
    tokenizer_vocab: int = Field(2000, ge=300, description="vocabulary of a tokenizer trained on the training split")
    media_n: int = Field(8, ge=0, description="validation conditions sampled at each evaluation")
    media_steps: int | None = Field(None, ge=1, description="sampling steps for media (null: the model default)")
    val_items: int = Field(64, ge=1, description="validation items for the validation loss")
    lowres_size: int | None = Field(
        None, ge=8, description="image side of a low-resolution first phase (e.g. 64; null: none): the first "
        "data.lowres_steps steps train on the images downsampled to it, at about a quarter of the cost per step "
        "for half the side; the model must accept both latent sizes (UNet; DiT/CrossFlow with model.positions=sincos)",
    )
    lowres_steps: int = Field(
        0, ge=0, description="steps of the low-resolution phase (0: none). A lowres_size at or above the cache's "
        "image size skips the phase (a recipe run on a small cache), with a note",
    )
    encode_once: bool = Field(
        True, description="with model.autoencoder and no data.latents: encode the training split once, before the "
        "first step, into RUN/latents/ (a latent cache per image side, the low-resolution phase's too; resumable) "
        "and train from it instead of running the frozen encoder on every batch (on CPU at 256 px the encoder's "
        "forward pass costs more than the generator's step). false: encode on the fly",
    )
    lowres_ema_restart: bool = Field(
        True, description="restart the EMA from the live weights at the first full-size step: with decay 0.999 an "
        "EMA carried over from the low-resolution phase still holds 82% of its weights 200 full-size steps later "
        "(measured: alignment macro 0.66 with the carried EMA, 0.69 with the raw weights; FD 89 vs 61)",
    )


class GeneratorTask(Task):
    """Shared task logic; subclasses set ``ModelConfig`` and ``model_class``."""

    DataConfig = GeneratorDataConfig
    model_class: type[GeneratorBase] = GeneratorBase
    #: model config fields that shape the weights: with ``train.init_from``, those a recipe leaves out
    #: come from the init model's config, so a later stage need not repeat (and keep in step) them
    ARCH_KEYS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model_cfg: GeneratorConfig, data_cfg: GeneratorDataConfig) -> None:
        super().__init__(with_cache_image_size(model_cfg, data_cfg.cache), data_cfg)
        self._tokenizer = None
        self._lowres_end = 0  # set by _check_lowres: last low-resolution step + 1 (0: no such phase)
        self._encoded: Dataset | None = None  # training items from the latents encoded once (build_datasets)

    def _fill_latent(self) -> None:
        cfg = self.model_cfg
        if cfg.autoencoder is not None:
            from unicxr.models.autoencoder import load_autoencoder

            try:
                ae, _ = load_autoencoder(cfg.autoencoder)
            except UnicxrError as exc:
                raise UnicxrError(f"model.autoencoder: {exc}") from None
            c, h, _ = ae.latent_shape(cfg.image_size)
        else:
            c, h = 1, cfg.image_size
        self.model_cfg = cfg.model_copy(update={"latent_channels": int(c), "latent_size": int(h)})

    def _train_tokenizer(self):
        from unicxr.data.cache import CXRCache
        from unicxr.text.tokenizer import train_tokenizer

        cache = CXRCache(self.data_cfg.cache, split=self.data_cfg.train_split)
        n = len(cache) if self.data_cfg.max_items is None else min(len(cache), self.data_cfg.max_items)
        texts = [cache.report(i) for i in range(n)]
        if not any(texts):
            raise UnicxrError(f"data.cache: {self.data_cfg.cache}: no reports to train a tokenizer on")
        return train_tokenizer(texts, vocab_size=self.data_cfg.tokenizer_vocab)

    def _components_from_init(self) -> None:
        """With ``train.init_from``: the autoencoder and tokenizer the recipe leaves unset (null) come
        from the init model (so a later stage keeps the same latent space and vocabulary)."""
        if self.init_from is None:
            return
        from unicxr.train.init_from import init_components

        comps = init_components(self.init_from)
        update = {name: str(comps[name]) for name in ("autoencoder", "tokenizer")
                  if getattr(self.model_cfg, name) is None and name in comps}
        if update:
            self.model_cfg = self.model_cfg.model_copy(update=update)

    def _architecture_from_init(self) -> None:
        """With ``train.init_from``: the :attr:`ARCH_KEYS` the recipe does not set take the init model's
        values (printed); the ones it sets stay (a shape mismatch is then init_from's one-line error)."""
        if self.init_from is None or not self.ARCH_KEYS:
            return
        from unicxr.train.init_from import init_config_values

        cfg = self.model_cfg
        vals = init_config_values(self.init_from, [k for k in self.ARCH_KEYS if k not in cfg.model_fields_set])
        if vals:
            self.model_cfg = type(cfg).model_validate({**cfg.model_dump(), **vals})
            shown = (k if isinstance(v, dict) else f"{k}={v}" for k, v in vals.items())
            print("architecture from train.init_from: " + ", ".join(shown))

    def build_model(self) -> GeneratorBase:
        self._architecture_from_init()
        self._components_from_init()
        self._fill_latent()
        comps: dict[str, Any] = {}
        cond = self.model_cfg.condition
        if cond.kind != "findings" and not cond.hf_text_dir:
            if self.model_cfg.tokenizer is None:
                comps["tokenizer"] = self._train_tokenizer()
            else:
                from unicxr.text.tokenizer import ReportTokenizer

                comps["tokenizer"] = ReportTokenizer.from_pretrained(self.model_cfg.tokenizer)
            self.model_cfg = self.model_cfg.model_copy(
                update={"condition": cond.model_copy(update={"vocab_size": comps["tokenizer"].vocab_size})}
            )
        model = self.model_class(self.model_cfg, components=comps)
        self._check_lowres(model)
        return model

    def _check_lowres(self, model: GeneratorBase) -> None:
        """Decide whether the low-resolution phase runs; one-line errors for one the model or data
        cannot run."""
        d, cfg = self.data_cfg, self.model_cfg
        self._lowres_end = 0
        if not d.lowres_steps:
            return
        if d.lowres_size is None:
            raise UnicxrError("data.lowres_steps needs data.lowres_size (the image side of the low-resolution phase)")
        if d.lowres_size >= cfg.image_size:
            print(f"note: no low-resolution phase: data.lowres_size {d.lowres_size} is not below the image size "
                  f"{cfg.image_size}; the whole run trains at full size")
            return
        if d.latents is not None:
            raise UnicxrError("data.lowres_steps: the low-resolution phase encodes images; data.latents holds "
                              "full-size latents only (add --set data.lowres_steps=0 to train from them)")
        if getattr(cfg, "positions", "sincos") != "sincos":
            raise UnicxrError("data.lowres_size: set model.positions=sincos (a learned position table has one size)")
        side = model.autoencoder.latent_shape(d.lowres_size)[1] if model.has_ae else d.lowres_size
        div = getattr(cfg, "patch", 1) * 2 ** max(len(getattr(cfg, "channels", ())) - 1, 0)
        if side % div:
            raise UnicxrError(f"data.lowres_size: {d.lowres_size} px gives a {side}-wide latent, not divisible by {div} "
                              "(patch size / UNet levels)")
        self._lowres_end = d.lowres_steps

    def configure_optimizers(self, modules: dict[str, torch.nn.Module], cfg: Any) -> list[OptimizerSpec]:
        d = self.data_cfg
        if self._lowres_end and d.lowres_steps >= cfg.max_steps:
            self._lowres_end = cfg.max_steps // 2
            print(f"note: data.lowres_steps {d.lowres_steps} >= train.max_steps {cfg.max_steps}: the low-resolution "
                  f"phase takes the first {self._lowres_end} steps, so the run still ends at full size")
        return super().configure_optimizers(modules, cfg)

    def restarts_ema(self, step: int) -> bool:
        """The EMA restarts at the first full-size step after a low-resolution phase (see
        ``data.lowres_ema_restart``)."""
        return bool(self._lowres_end) and self.data_cfg.lowres_ema_restart and step == self._lowres_end

    def lowres_at(self, step: int) -> int | None:
        """Image side of training step ``step`` when it is in the low-resolution phase, else None."""
        return self.data_cfg.lowres_size if step < self._lowres_end else None

    def _dataset(self, split: str) -> Dataset:
        if self.data_cfg.latents is not None and split == self.data_cfg.train_split:
            return _LatentItems(self._latent_cache(split), self.data_cfg.max_items)
        if self._encoded is not None and split == self.data_cfg.train_split:
            return self._encoded
        return CXRDataset(self.data_cfg.cache, split, size=self.model_cfg.image_size,
                          max_items=self.data_cfg.max_items, fields=("image", "labels", "report", "index"))

    def _latent_cache(self, split: str):
        """The ``data.latents`` cache, checked against ``model.autoencoder`` (same weights, same shape)."""
        from unicxr.data.latent_cache import LatentCache
        from unicxr.models.autoencoder import resolve_model_dir

        cfg = self.model_cfg
        if cfg.autoencoder is None:
            raise UnicxrError("data.latents needs model.autoencoder (the autoencoder that wrote the latents)")
        lc = LatentCache(self.data_cfg.latents, split=split)
        try:
            lc.check_autoencoder(resolve_model_dir(cfg.autoencoder))
        except UnicxrError as exc:
            raise UnicxrError(f"data.latents: {exc}; run `unicxr encode` with model.autoencoder") from None
        if tuple(lc.latent_shape) != (cfg.latent_channels, cfg.latent_size, cfg.latent_size):
            raise UnicxrError(f"data.latents: latent shape {tuple(lc.latent_shape)} does not match the model's")
        return lc

    def _encode_once(self) -> Dataset | None:
        """Encode the training split with the frozen autoencoder into ``RUN/latents/{split}_{side}px``
        (one latent cache per image side: the full size and the low-resolution phase's), or None when
        the run encodes on the fly (no autoencoder, ``data.latents`` given, ``data.encode_once`` false,
        or a task used outside the trainer). The main process writes; the others wait and read."""
        d, cfg = self.data_cfg, self.model_cfg
        if not d.encode_once or cfg.autoencoder is None or d.latents is not None or self.run_dir is None:
            return None
        from accelerate import PartialState

        from unicxr.data.latent_cache import LatentCache, write_latent_cache
        from unicxr.models.autoencoder import load_autoencoder

        state = PartialState()
        sides = [cfg.image_size] + ([d.lowres_size] if self._lowres_end else [])
        roots = {side: self.run_dir / "latents" / f"{d.train_split}_{side}px" for side in sides}
        with state.main_process_first():
            if state.is_main_process:
                ae, model_dir = load_autoencoder(cfg.autoencoder, device=str(state.device))
                for side, root in roots.items():
                    print(f"encoding the {d.train_split} split once at {side} px into {root}")
                    write_latent_cache(ae, model_dir, d.cache, root, split=d.train_split, size=side,
                                       overwrite=True, progress=self.progress)
                del ae
        full = LatentCache(roots[cfg.image_size], split=d.train_split)
        low = LatentCache(roots[d.lowres_size], split=d.train_split) if self._lowres_end else None
        return _LatentItems(full, d.max_items, lowres=low)

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        self._encoded = self._encode_once()
        val = self._dataset(self.data_cfg.val_split) if self.data_cfg.val_split else None
        return self._dataset(self.data_cfg.train_split), val

    def training_loss(self, optimizer: str, modules: dict[str, torch.nn.Module], batch: dict[str, Any],
                      ctx: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        size = self.lowres_at(step)
        return self.loss(modules["model"], batch) if size is None else self.loss(modules["model"], batch, size=size)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], size: int | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch; ``size``: train on the images downsampled to this side (low-res phase)."""
        raw: GeneratorBase = self.unwrap(model)
        key = "latent" if size is None else "latent_lowres"
        z0 = batch[key] if key in batch else raw.to_latent(batch["image"], size=size)
        cond = raw.condition_batch(batch["labels"], batch["report"])
        extra = {"image_features": batch["image_features"]} if "image_features" in batch else {}
        loss, logs = model(z0, cond, **extra)
        if cond.get("overflow"):
            logs["reports_over_context"] = float(cond["overflow"])
        logs["image_side"] = float(size or self.model_cfg.image_size)
        return loss, logs

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        """Validation loss on the first ``val_items`` items with fixed noise (comparable across steps)."""
        n = min(self.data_cfg.val_items, len(dataset))
        items = [dataset[i] for i in range(n)]
        device = next(model.parameters()).device
        state = torch.random.get_rng_state()
        torch.manual_seed(1234)
        try:
            x = torch.stack([it["image"] for it in items]).to(device)
            z0 = model.to_latent(x)
            cond = model.condition_batch(torch.stack([it["labels"] for it in items]), [it["report"] for it in items])
            loss, _ = model(z0, cond)
        finally:
            torch.random.set_rng_state(state)
        return {"val_loss": float(loss)}

    @torch.no_grad()
    def log_media(self, model: torch.nn.Module, dataset: Dataset | None, step: int) -> Media | None:
        if dataset is None or not self.data_cfg.media_n:
            return None
        n = min(self.data_cfg.media_n, len(dataset))
        items = [dataset[i] for i in range(n)]
        labels = torch.stack([it["labels"] for it in items])
        reports = [it["report"] for it in items]
        images, nfe = model.generate(labels, reports, steps=self.data_cfg.media_steps, seed=0)
        texts = "\n".join(f"{k}: {r}" for k, r in enumerate(reports))
        real = torch.stack([it["image"] for it in items])
        return Media(images={"samples": images.cpu(), "real": real}, texts={"prompts": texts + f"\n(nfe={nfe})"})


class _LatentItems(Dataset):
    """Items of a latent cache with the keys the generator task uses; ``lowres``: a second latent
    cache of the same items at the low-resolution phase's side (``latent_lowres``)."""

    def __init__(self, cache: Any, max_items: int | None, lowres: Any | None = None) -> None:
        self.cache = cache
        self.lowres = lowres
        self.n = len(cache) if max_items is None else min(len(cache), max_items)
        if lowres is not None and len(lowres) != len(cache):
            raise UnicxrError(f"{lowres.root}: {len(lowres)} items, but {cache.root} has {len(cache)}")

    def __len__(self) -> int:
        return self.n

    @property
    def labels(self) -> np.ndarray:
        """(N, 14) float32 labels of the items (NaN = not mentioned)."""
        return self.cache.labels[: self.n]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.cache[i]
        out = {"latent": item["latent"], "labels": item["labels"], "report": item["report"], "index": int(i)}
        if self.lowres is not None:
            out["latent_lowres"] = self.lowres.latent(i)
        return out


@register_task("ldm_unet")
class LDMUNetTask(GeneratorTask):
    """MONAI DiffusionModelUNet denoiser (DDPM schedule) on latents."""

    ModelConfig = LDMUNetConfig
    model_class = LDMUNet


@register_task("latent_dit")
class LatentDiTTask(GeneratorTask):
    """Latent DiT trained with rectified flow."""

    ModelConfig = LatentDiTConfig
    model_class = LatentDiT


class CrossFlowDataConfig(GeneratorDataConfig):
    """Data section of a CrossFlow recipe."""

    nce_features: str | None = Field(
        None,
        description="a `--features` spec (own:RUN, xrv:DIR, hf:DIR, ...) of a frozen image network whose pooled "
        "features of each training image are the image side of the InfoNCE term (the paper uses CLIP image "
        "features); computed once before the first step and standardised per dimension. Use a network other than "
        "the evaluation encoder that will judge the model. null: a linear map of the image latent",
    )


class _WithFeatures(Dataset):
    """A training dataset whose items also carry ``image_features`` (row ``index`` of a (N, F) tensor)."""

    def __init__(self, base: Dataset, features: torch.Tensor) -> None:
        self.base, self.features = base, features

    def __len__(self) -> int:
        return len(self.base)

    @property
    def labels(self) -> np.ndarray | None:
        """The base dataset's (N, 14) labels, if it has them."""
        return getattr(self.base, "labels", None)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        return {**item, "image_features": self.features[int(item["index"])]}


@register_task("crossflow")
class CrossFlowTask(GeneratorTask):
    """CrossFlow: text latent → image latent flow."""

    ModelConfig = CrossFlowConfig
    DataConfig = CrossFlowDataConfig
    model_class = CrossFlow

    def __init__(self, model_cfg: CrossFlowConfig, data_cfg: CrossFlowDataConfig) -> None:
        super().__init__(model_cfg, data_cfg)
        self._extractor = None

    def _feature_extractor(self):
        if self._extractor is None:
            from unicxr.eval.features import parse_features_spec

            try:
                self._extractor = parse_features_spec(self.data_cfg.nce_features)
            except UnicxrError as exc:
                raise UnicxrError(f"data.nce_features: {exc}") from None
        return self._extractor

    def build_model(self) -> GeneratorBase:
        if self.data_cfg.nce_features:
            dim = self._feature_extractor().dim
            self.model_cfg = self.model_cfg.model_copy(update={"nce_feature_dim": int(dim)})
        return super().build_model()

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        train, val = super().build_datasets(seed)
        if not self.data_cfg.nce_features:
            return train, val
        d = self.data_cfg
        images = CXRDataset(d.cache, d.train_split, size=None, max_items=d.max_items, fields=("image",))
        if len(images) != len(train):
            raise UnicxrError(f"data.nce_features: {len(images)} training images but {len(train)} training items")
        f = self._training_features(images)
        self._extractor = None  # the frozen network is not needed once every training image has its features
        f = (f - f.mean(0)) / f.std(0).clamp_min(1e-6)  # per dimension: no feature dominates the linear head
        return _WithFeatures(train, f), val

    def _training_features(self, images: CXRDataset) -> torch.Tensor:
        """(N, F) float32 pooled features of the training images. Inside a run they are stored once in
        ``RUN/latents/nce_features_{split}.safetensors`` under a fingerprint of the network's weights, the
        cache and the split, so a resumed run reads them back; the main process computes, the others wait."""
        import hashlib

        from accelerate import PartialState
        from safetensors import safe_open
        from safetensors.torch import save

        from unicxr.data.cache import CXRCache
        from unicxr.eval.features import extract_features
        from unicxr.utils.io import atomic_write

        d = self.data_cfg
        ext = self._feature_extractor()
        key = hashlib.sha256("|".join([
            ext.fingerprint(), str(CXRCache(d.cache).manifest.get("fingerprint")), str(d.train_split),
            str(d.max_items), str(len(images)),
        ]).encode()).hexdigest()
        path = self.run_dir / "latents" / f"nce_features_{d.train_split}.safetensors" if self.run_dir else None

        def stored() -> torch.Tensor | None:
            if path is None or not path.is_file():
                return None
            try:
                with safe_open(str(path), "pt") as fh:
                    return fh.get_tensor("features") if (fh.metadata() or {}).get("fingerprint") == key else None
            except Exception:  # an unreadable file is recomputed, never trusted
                return None

        state = PartialState()
        with state.main_process_first():  # the other processes enter once the main one has written
            f = stored()
            if f is not None:
                print(f"image features for InfoNCE read from {path}")
            elif not state.is_main_process:
                raise UnicxrError(f"data.nce_features: {path} was not written by the main process")
            else:
                print(f"image features for InfoNCE ({d.nce_features}) of {len(images)} training images")
                feats, _ = extract_features(ext, images, progress=self.progress, desc="nce features")
                f = torch.from_numpy(feats).float().contiguous()
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_write(path, "wb") as fh:
                        fh.write(save({"features": f}, metadata={"fingerprint": key, "spec": str(d.nce_features)}))
        return f.float()
