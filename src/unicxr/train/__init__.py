"""Training: one Accelerate loop for every model family, tasks, recipes, checkpoints, exact resume.

Public API (imported lazily so the CLI stays fast):
``Task``, ``register_task``, ``get_task`` (tasks), ``Recipe``, ``TrainConfig``, ``load_recipe``
(config), ``train`` (trainer).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Task", "register_task", "get_task", "Recipe", "TrainConfig", "load_recipe", "train"]

_LAZY = {
    "Task": "unicxr.train.tasks",
    "register_task": "unicxr.train.tasks",
    "get_task": "unicxr.train.tasks",
    "Recipe": "unicxr.train.config",
    "TrainConfig": "unicxr.train.config",
    "load_recipe": "unicxr.train.config",
    "train": "unicxr.train.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unicxr.train' has no attribute {name!r}")
