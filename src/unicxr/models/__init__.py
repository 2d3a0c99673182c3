"""Model families (one per file) and the loader for saved model directories."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unicxr.utils.errors import UnicxrError

if TYPE_CHECKING:
    from unicxr.models.base import ModelMixin

__all__ = ["ModelMixin", "register_model", "load_model", "resolve_model_dir", "MODEL_MODULES"]

_BASE_NAMES = ("MODEL_REGISTRY", "ModelMixin", "read_model_config", "register_model")


def __getattr__(name: str) -> Any:
    """The torch-based names of :mod:`unicxr.models.base`, imported on first use: every CLI command
    imports ``unicxr.models.cli`` (and so this package) to register itself, and torch alone takes
    seconds to import."""
    if name in _BASE_NAMES:
        from unicxr.models import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# model_type -> module defining it (imported lazily so `import unicxr.models` stays light).
MODEL_MODULES: dict[str, str] = {
    "toy_mlp": "unicxr.models.toy",
    "toy_composite": "unicxr.models.toy",
    "cxr_classifier": "unicxr.models.classifier",
    "ldm_unet": "unicxr.models.ldm_unet",
    "latent_dit": "unicxr.models.latent_dit",
    "crossflow": "unicxr.models.crossflow",
    "cxr_finding_classifier": "unicxr.models.finding_classifier",
    "cxr_report_generator": "unicxr.models.report_generator",
    "autoencoder_kl": "unicxr.models.autoencoder",
    "vqvae": "unicxr.models.autoencoder",
    "unified": "unicxr.models.unified",
}


def resolve_model_dir(path: str | Path, prefer: tuple[str, ...] = ("model_ema", "model")) -> Path:
    """A saved model directory, or the first of ``prefer`` (default: ``model_ema/``, then ``model/``)
    inside a training run folder; one-line error otherwise."""
    path = Path(path)
    if not path.exists():
        raise UnicxrError(f"{path}: not found (expected a model directory or a training run folder)")
    if (path / "config.json").is_file():
        return path
    for sub in prefer:
        if (path / sub / "config.json").is_file():
            return path / sub
    raise UnicxrError(
        f"{path}: not a model directory nor a training run (no config.json, {' or '.join(p + '/' for p in prefer)})"
    )


def load_model(directory: str | Path, *, device: str = "cpu") -> ModelMixin:
    """Load any saved unicxr model directory, dispatching on ``config.json``'s ``model_type``."""
    from unicxr.models.base import MODEL_REGISTRY, read_model_config

    raw = read_model_config(directory)
    mtype = raw["model_type"]
    if mtype not in MODEL_REGISTRY and mtype in MODEL_MODULES:
        importlib.import_module(MODEL_MODULES[mtype])
    cls = MODEL_REGISTRY.get(mtype)
    if cls is None:
        known = ", ".join(sorted(set(MODEL_REGISTRY) | set(MODEL_MODULES)))
        raise UnicxrError(f"{Path(directory) / 'config.json'}: unknown model_type {mtype!r} (known: {known})")
    return cls.from_pretrained(directory, device=device)
