"""Model files: ``save_pretrained(dir)`` / ``from_pretrained(dir)`` for every unicxr model.

A saved model is a directory with ``config.json`` (``model_type``, the unicxr version and the model's
validated config) and ``model.safetensors``. Writes are atomic; nothing is ever unpickled. A missing,
truncated or foreign file gives a one-line :class:`UnicxrError` naming it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_model as _st_load_model
from safetensors.torch import save_model as _st_save_model

from unicxr import __version__
from unicxr.config import validate
from unicxr.utils.errors import UnicxrError
from unicxr.utils.io import atomic_write_text, default_file_mode, fsync_dir, read_json

__all__ = [
    "ModelMixin",
    "register_model",
    "MODEL_REGISTRY",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "read_model_config",
    "save_module_weights",
    "load_module_weights",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_REGISTRY: dict[str, type[ModelMixin]] = {}

T = TypeVar("T", bound="ModelMixin")


def register_model(cls: type[T]) -> type[T]:
    """Class decorator: make ``cls`` loadable by its ``model_type`` through :func:`unicxr.models.load_model`."""
    name = getattr(cls, "model_type", None)
    if not name:
        raise TypeError(f"{cls.__name__} needs a class attribute model_type")
    existing = MODEL_REGISTRY.get(name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"model_type {name!r} already registered by {existing.__qualname__}")
    MODEL_REGISTRY[name] = cls
    return cls


def save_module_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Write a module's weights to a safetensors file atomically (tied weights stored once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _st_save_model(module, tmp, metadata={"format": "pt", "unicxr_version": __version__})
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_module_weights(module: torch.nn.Module, path: str | Path, *, device: str = "cpu") -> None:
    """Load safetensors weights into ``module`` (strict); one-line error naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise UnicxrError(f"{path}: weights file not found")
    try:
        missing, unexpected = _st_load_model(module, path, strict=False, device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnicxrError(f"{path}: not a readable safetensors file (truncated or foreign?): {first}") from None
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UnicxrError(f"{path}: weights do not fit the model: {first}") from None
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            what.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[0]})")
        raise UnicxrError(f"{path}: weights do not match the model: {', '.join(what)}")


def read_model_config(directory: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``config.json`` of a saved model directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UnicxrError(f"{directory}: model directory not found")
    cfg_path = directory / CONFIG_NAME
    raw = read_json(cfg_path, missing="missing (not a unicxr model directory)")
    if not isinstance(raw, dict) or "model_type" not in raw or "config" not in raw:
        raise UnicxrError(f"{cfg_path}: not a unicxr model config (needs 'model_type' and 'config')")
    return raw


class ModelMixin(torch.nn.Module):
    """Base class of every unicxr model.

    Subclasses set ``model_type`` (registry name) and ``config_class`` (a
    :class:`unicxr.config.StrictModel`), take the validated config as the only constructor argument,
    and are decorated with :func:`register_model`.
    """

    model_type: ClassVar[str] = ""
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            config = validate(self.config_class, config, source=self.model_type)  # type: ignore[arg-type]
        self.config = config

    # -- saving -----------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The JSON content of ``config.json``."""
        return {
            "model_type": self.model_type,
            "unicxr_version": __version__,
            "config": self.config.model_dump(mode="json"),
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``directory`` (atomic per file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_module_weights(self, directory / WEIGHTS_NAME)
        atomic_write_text(directory / CONFIG_NAME, json.dumps(self.config_dict(), indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path, *, device: str = "cpu") -> T:
        """Rebuild the model from ``config.json`` and load ``model.safetensors`` (never unpickles)."""
        directory = Path(directory)
        raw = read_model_config(directory)
        if cls.model_type and raw["model_type"] != cls.model_type:
            raise UnicxrError(
                f"{directory / CONFIG_NAME}: model_type is {raw['model_type']!r}, expected {cls.model_type!r}"
            )
        config = validate(cls.config_class, raw["config"], source=str(directory / CONFIG_NAME), prefix="config")
        model = cls(config)
        load_module_weights(model, directory / WEIGHTS_NAME, device=device)
        model.eval()
        return model

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
