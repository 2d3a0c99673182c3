"""Training tasks: what to build (model, data) and what to minimise (loss) for one model family.

A task is a class registered with :func:`register_task`; a recipe's ``task:`` names it, its ``model:``
section is validated by ``Task.ModelConfig`` and its ``data:`` section by ``Task.DataConfig``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.utils.data import Dataset

from unicxr.config import StrictModel
from unicxr.models.base import ModelMixin
from unicxr.utils.errors import UnicxrError

if TYPE_CHECKING:
    from pathlib import Path

    from accelerate import Accelerator

    from unicxr.train.config import TrainConfig

__all__ = [
    "Task",
    "OptimizerSpec",
    "Media",
    "collate_items",
    "with_cache_image_size",
    "register_task",
    "get_task",
    "TASK_REGISTRY",
    "TASK_MODULES",
]

TASK_REGISTRY: dict[str, type[Task]] = {}

# task name -> module that registers it (imported on first use).
TASK_MODULES: dict[str, str] = {
    "toy_regression": "unicxr.train.tasks.toy",
    "toy_adversarial": "unicxr.train.tasks.toy",
    "classifier": "unicxr.train.tasks.classifier",
    "ldm_unet": "unicxr.train.tasks.generator",
    "latent_dit": "unicxr.train.tasks.generator",
    "crossflow": "unicxr.train.tasks.generator",
    "finding_classifier": "unicxr.train.tasks.finding_classifier",
    "report_generator": "unicxr.train.tasks.report_generator",
    "autoencoder": "unicxr.train.tasks.autoencoder",
    "unified": "unicxr.train.tasks.unified",
}


@dataclass
class OptimizerSpec:
    """One optimizer of a task (AdamW).

    Attributes:
        name: key of the optimizer (``main`` for the model; e.g. ``disc`` for a discriminator); the
            trainer calls ``Task.training_loss(name, ...)`` once per micro-batch for it.
        params: parameters or parameter-group dicts (a group may carry ``lr_scale`` and
            ``weight_decay``); parameters without ``requires_grad`` are dropped.
        lr_scale: multiplies the scheduled learning rate (``train.lr`` with warmup and decay).
        weight_decay / betas: default to ``train.weight_decay`` / ``train.betas``.
        start_step: the optimizer (and its loss) is skipped before this step (delayed start).
    """

    name: str
    params: Iterable[Any]
    lr_scale: float = 1.0
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    start_step: int = 0


@dataclass
class Media:
    """What :meth:`Task.log_media` returns: image grids and texts to show for a training step.

    Attributes:
        images: name → (N, 1, H, W) float tensor in [0, 1] (written as a grid PNG + TensorBoard).
        texts: name → text (written as ``.txt`` + TensorBoard text).
        synthetic: the images are model outputs (their PNGs carry ``synthetic=true``).
    """

    images: dict[str, torch.Tensor] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    synthetic: bool = True


def collate_items(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Default collate: tensors are stacked, numbers become tensors, anything else (strings, None)
    becomes a list. Token-id lists of unequal length need a task's own :meth:`Task.collate`."""
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        v0 = vals[0]
        if isinstance(v0, torch.Tensor):
            out[key] = torch.stack(vals)
        elif isinstance(v0, bool) or not isinstance(v0, (int, float)):
            out[key] = list(vals)
        else:
            out[key] = torch.tensor(vals)
    return out


def with_cache_image_size(model_cfg: Any, cache: str | Any, field_name: str = "image_size") -> Any:
    """Recipe convention: ``model.image_size`` unset (null) → the image size of the cache.

    ``cache`` is a ``unicxr prepare`` cache (its ``cache.json`` size) or an image folder (its first
    image's size). Returns the config with the size filled in; a missing cache is a one-line error.
    """
    if getattr(model_cfg, field_name, None) is not None:
        return model_cfg
    from pathlib import Path

    path = Path(cache)
    if (path / "cache.json").is_file():
        from unicxr.utils.io import read_json

        size = int(read_json(path / "cache.json", missing="missing")["size"])
    elif path.is_dir():
        from unicxr.data.image_sets import ImageFolderSet

        size = int(max(ImageFolderSet(path).size))
    else:
        raise UnicxrError(f"data.cache: {cache}: cache directory not found (run `unicxr prepare` first)")
    return model_cfg.model_copy(update={field_name: size})


class Task:
    """Base class of a training task.

    Subclasses set ``name``, ``ModelConfig`` and ``DataConfig`` and implement :meth:`build_model`,
    :meth:`build_datasets` and :meth:`loss` (one optimizer) or :meth:`training_loss` (several).
    Optional hooks: :meth:`build_modules` (auxiliary trained modules, e.g. a discriminator),
    :meth:`configure_optimizers`, :meth:`collate`, :meth:`augment`, :meth:`evaluate`,
    :meth:`log_media`, :meth:`restarts_ema`.

    Randomness in ``augment`` must come from the given generator and randomness in the loss from the
    global torch RNG, which the trainer reseeds from (seed, step, rank, micro-batch, optimizer) each
    micro-step: resume is then exact without RNG state.

    Under DDP the modules the loss hooks get are wrapped: call the wrapped module's ``forward`` for
    everything that trains (so gradients are synchronised), and reach other attributes (a frozen
    component's ``encode``, a config) through :meth:`unwrap`.
    """

    name: ClassVar[str] = ""
    ModelConfig: ClassVar[type[StrictModel]] = StrictModel
    DataConfig: ClassVar[type[StrictModel]] = StrictModel

    def __init__(self, model_cfg: StrictModel, data_cfg: StrictModel) -> None:
        self.model_cfg = model_cfg
        self.data_cfg = data_cfg
        self.accelerator: Accelerator | None = None  # set by the trainer
        self.init_from: Path | None = None  # set by the trainer from train.init_from (a saved model dir)
        self.run_dir: Path | None = None  # set by the trainer: the run's output directory (files a task derives)
        self.progress = False  # set by the trainer: whether this process shows progress bars

    # -- building ---------------------------------------------------------------------------------
    def build_model(self) -> ModelMixin:
        """Build a freshly initialised model (the trainer seeds the RNG before calling this)."""
        raise NotImplementedError

    def build_modules(self, model: ModelMixin) -> dict[str, torch.nn.Module]:
        """Auxiliary modules trained beside the model but not part of it (e.g. ``{"disc": ...}``):
        checkpointed for exact resume, not saved with the final model. Default: none."""
        return {}

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        """Return (train dataset, validation dataset or None)."""
        raise NotImplementedError

    def configure_optimizers(
        self, modules: dict[str, torch.nn.Module], cfg: TrainConfig
    ) -> list[OptimizerSpec]:
        """The optimizers, in the order they step each iteration. Default: one AdamW (``main``) over
        the model's trainable parameters (frozen components are excluded)."""
        return [OptimizerSpec("main", [p for p in modules["model"].parameters() if p.requires_grad])]

    # -- data -------------------------------------------------------------------------------------
    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Turn dataset items into a batch (default: :func:`collate_items`)."""
        return collate_items(items)

    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """Optional batch-level augmentation on the training process (default: none)."""
        return batch

    # -- losses -----------------------------------------------------------------------------------
    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (scalar loss, extra scalars to log) for one micro-batch (single-optimizer tasks)."""
        raise NotImplementedError

    def training_loss(
        self,
        optimizer: str,
        modules: dict[str, torch.nn.Module],
        batch: dict[str, Any],
        ctx: dict[str, Any],
        step: int,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch for optimizer ``optimizer`` (called for each optimizer in order,
        with the same ``batch`` and the same ``ctx`` dict, so a discriminator step can reuse what the
        generator step computed). Default: :meth:`loss` on ``modules["model"]``."""
        return self.loss(modules["model"], batch)

    def restarts_ema(self, step: int) -> bool:
        """True when training step ``step`` (0-based) begins a new phase whose weights should not be
        averaged with the previous phase's: after that step the EMA restarts from the live weights
        (:meth:`unicxr.train.ema.EMA.restart`). Default: never."""
        return False

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The plain module under a DDP/compile wrapper (safe for attribute access)."""
        if self.accelerator is not None:
            return self.accelerator.unwrap_model(module)
        return getattr(module, "module", module)

    # -- validation -------------------------------------------------------------------------------
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        """Optional validation metrics (called on the main process with the EMA weights if any)."""
        return {}

    def log_media(self, model: torch.nn.Module, dataset: Dataset | None, step: int) -> Media | None:
        """Optional samples to look at (image grids, generated text) at each evaluation; the trainer
        writes them to ``RUN/media/step_N/`` and TensorBoard. Default: none."""
        return None


def register_task(name: str):
    """Class decorator registering a :class:`Task` subclass under ``name``."""

    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASK_REGISTRY[name] = cls
        return cls

    return deco


def get_task(name: str) -> type[Task]:
    """Look up a task class by name; one-line error listing the known tasks."""
    if name not in TASK_REGISTRY and name in TASK_MODULES:
        importlib.import_module(TASK_MODULES[name])
    cls = TASK_REGISTRY.get(name)
    if cls is None:
        raise UnicxrError(f"task: unknown task {name!r} (known: {', '.join(sorted(TASK_MODULES))})")
    return cls
