"""Training tasks: what to build (model, data) and what to minimise (loss) for one model family.

A task is a class registered with :func:`register_task`; a recipe's ``task:`` names it, its ``model:``
section is validated by ``Task.ModelConfig`` and its ``data:`` section by ``Task.DataConfig``.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from unicxr.config import StrictModel
from unicxr.models.base import ModelMixin
from unicxr.utils.errors import UnicxrError

__all__ = ["Task", "register_task", "get_task", "TASK_REGISTRY", "TASK_MODULES"]

TASK_REGISTRY: dict[str, type[Task]] = {}

# task name -> module that registers it (imported on first use).
TASK_MODULES: dict[str, str] = {
    "toy_regression": "unicxr.train.tasks.toy",
    "classifier": "unicxr.train.tasks.classifier",
}


class Task:
    """Base class of a training task.

    Subclasses set ``name``, ``ModelConfig`` and ``DataConfig`` and implement :meth:`build_model`,
    :meth:`build_datasets` and :meth:`loss`. :meth:`augment` and :meth:`evaluate` are optional.
    Datasets return dicts of tensors (default collate). Randomness in ``augment`` must come from the
    given generator and randomness in ``loss`` from the global torch RNG, which the trainer reseeds
    from (seed, step, rank, micro-batch) each micro-step: resume is then exact without RNG state.
    """

    name: ClassVar[str] = ""
    ModelConfig: ClassVar[type[StrictModel]] = StrictModel
    DataConfig: ClassVar[type[StrictModel]] = StrictModel

    def __init__(self, model_cfg: StrictModel, data_cfg: StrictModel) -> None:
        self.model_cfg = model_cfg
        self.data_cfg = data_cfg

    def build_model(self) -> ModelMixin:
        """Build a freshly initialised model (the trainer seeds the RNG before calling this)."""
        raise NotImplementedError

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        """Return (train dataset, validation dataset or None)."""
        raise NotImplementedError

    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """Optional batch-level augmentation on the training process (default: none)."""
        return batch

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (scalar loss, extra scalars to log) for one micro-batch."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        """Optional validation metrics (called on the main process with the EMA model if any)."""
        return {}


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
