"""Model files: ``save_pretrained(dir)`` / ``from_pretrained(dir)`` for every unicxr model.

A saved model is a directory with ``config.json`` (``model_type``, the unicxr version and the model's
validated config) and ``model.safetensors``. Writes are atomic; nothing is ever unpickled. A missing,
truncated or foreign file gives a one-line :class:`UnicxrError` naming it.

**Components.** A model may hold components, as a diffusers pipeline does: other saved unicxr models
(a frozen autoencoder, a text encoder) or artifacts with ``save_pretrained``/``from_pretrained`` (a
tokenizer, a scheduler config). ``components.json`` (like diffusers' ``model_index.json``) lists them;
each lives in its own sub-folder (embedded) or is referenced by path. ``model.safetensors`` holds only
the model's own weights, so a frozen autoencoder is never re-saved in each checkpoint, and
``load_model(RUN/model)`` rebuilds the whole pipeline.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

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
    "COMPONENTS_NAME",
    "load_component",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
COMPONENTS_NAME = "components.json"
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
        # safetensors gives lists or sets, depending on its version
        missing, unexpected = sorted(missing), sorted(unexpected)
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


def _artifact_class(spec: str, where: Path) -> type:
    """Resolve ``module:QualName`` of an artifact class; only unicxr classes are accepted."""
    mod, _, name = spec.partition(":")
    if not mod.startswith("unicxr.") or not name:
        raise UnicxrError(f"{where}: artifact class {spec!r} is not a unicxr class")
    try:
        obj: Any = importlib.import_module(mod)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise UnicxrError(f"{where}: unknown artifact class {spec!r}") from None
    return obj


def load_component(entry: Mapping[str, Any], base: Path, *, device: str = "cpu") -> Any:
    """Load one component listed in ``components.json`` (path relative to ``base`` unless absolute)."""
    path = Path(entry["path"])
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        raise UnicxrError(f"{base / COMPONENTS_NAME}: component folder {path} not found")
    if entry.get("kind") == "artifact":
        return _artifact_class(str(entry["class"]), base / COMPONENTS_NAME).from_pretrained(path)
    from unicxr.models import load_model

    return load_model(path, device=device)


class ModelMixin(torch.nn.Module):
    """Base class of every unicxr model.

    Subclasses set ``model_type`` (registry name) and ``config_class`` (a
    :class:`unicxr.config.StrictModel`), take the validated config as the first constructor argument,
    and are decorated with :func:`register_model`. A model with components also accepts
    ``components`` (name → loaded object) and registers each with :meth:`register_component`.
    """

    model_type: ClassVar[str] = ""
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            config = validate(self.config_class, config, source=self.model_type)  # type: ignore[arg-type]
        self.config = config
        # name -> {"source": path it came from or None, "frozen": bool, "kind": "model"|"artifact"}
        self._component_meta: dict[str, dict[str, Any]] = {}
        self._artifacts: dict[str, Any] = {}

    # -- components -------------------------------------------------------------------------------
    def register_component(self, name: str, obj: Any, *, source: str | Path | None = None, frozen: bool = True) -> None:
        """Attach a component: a module (registered as sub-module ``name``; frozen → no grad, eval
        mode, excluded from this model's weights file and from checkpoints) or an artifact with
        ``save_pretrained``/``from_pretrained`` (tokenizer, scheduler config), reachable as
        ``self.component(name)``."""
        if isinstance(obj, torch.nn.Module):
            self.add_module(name, obj)
            if frozen:
                obj.requires_grad_(False)
                obj.eval()
            kind = "model"
        else:
            if not (hasattr(obj, "save_pretrained") and hasattr(type(obj), "from_pretrained")):
                raise TypeError(f"component {name!r}: needs save_pretrained/from_pretrained")
            self._artifacts[name] = obj
            kind = "artifact"
        self._component_meta[name] = {
            "source": None if source is None else str(Path(source).resolve()),
            "frozen": bool(frozen) if kind == "model" else True,
            "kind": kind,
        }

    def component(self, name: str) -> Any:
        """A registered component (module or artifact)."""
        if name in self._artifacts:
            return self._artifacts[name]
        if name in self._component_meta:
            return getattr(self, name)
        raise KeyError(f"{self.model_type}: no component {name!r}")

    @property
    def component_names(self) -> list[str]:
        return list(self._component_meta)

    def train(self, mode: bool = True) -> ModelMixin:
        """As ``nn.Module.train``, but frozen components stay in eval mode."""
        super().train(mode)
        for name, meta in self._component_meta.items():
            if meta["kind"] == "model" and meta["frozen"]:
                getattr(self, name).eval()
        return self

    @contextlib.contextmanager
    def _detached(self, names: list[str]) -> Iterator[None]:
        """Temporarily remove sub-modules ``names`` (so a weights file holds only the rest)."""
        held = {n: self._modules.pop(n) for n in names if n in self._modules}
        try:
            yield
        finally:
            self._modules.update(held)

    def _module_components(self, *, frozen_only: bool) -> list[str]:
        return [
            n
            for n, m in self._component_meta.items()
            if m["kind"] == "model" and (m["frozen"] or not frozen_only)
        ]

    def own_state(self) -> contextlib.AbstractContextManager[None]:
        """Context in which the model's modules are exactly what its ``model.safetensors`` holds: its
        own weights, without any module component."""
        return self._detached(self._module_components(frozen_only=False))

    def trainable_state(self) -> contextlib.AbstractContextManager[None]:
        """Context in which the model's modules are exactly what a training checkpoint stores: its own
        weights and those of trainable components, without frozen components."""
        return self._detached(self._module_components(frozen_only=True))

    # -- saving -----------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The JSON content of ``config.json``."""
        return {
            "model_type": self.model_type,
            "unicxr_version": __version__,
            "config": self.config.model_dump(mode="json"),
        }

    def save_pretrained(
        self, directory: str | Path, *, components: Literal["embed", "reference"] = "embed"
    ) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (own weights) into ``directory``, and each
        component into ``directory/<name>/`` (``embed``), or, for frozen components loaded from a
        folder, a reference to that folder (``reference``), listed in ``components.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self.own_state():
            save_module_weights(self, directory / WEIGHTS_NAME)
        index: dict[str, Any] = {}
        for name, meta in self._component_meta.items():
            obj = self.component(name)
            entry: dict[str, Any] = {"kind": meta["kind"], "frozen": meta["frozen"]}
            if meta["kind"] == "artifact":
                entry["class"] = f"{type(obj).__module__}:{type(obj).__qualname__}"
            if components == "reference" and meta["frozen"] and meta["source"]:
                entry["path"] = meta["source"]
            else:
                target = directory / name
                tmp = directory / f".{name}.tmp-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                obj.save_pretrained(tmp)
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
                entry["path"] = name
            index[name] = entry
        comp_path = directory / COMPONENTS_NAME
        if index:
            atomic_write_text(comp_path, json.dumps(index, indent=2, sort_keys=True) + "\n")
        elif comp_path.exists():
            comp_path.unlink()
        atomic_write_text(directory / CONFIG_NAME, json.dumps(self.config_dict(), indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path, *, device: str = "cpu") -> T:
        """Rebuild the model from ``config.json``, its components from ``components.json``, and load
        ``model.safetensors`` (never unpickles)."""
        directory = Path(directory)
        raw = read_model_config(directory)
        if cls.model_type and raw["model_type"] != cls.model_type:
            raise UnicxrError(
                f"{directory / CONFIG_NAME}: model_type is {raw['model_type']!r}, expected {cls.model_type!r}"
            )
        config = validate(cls.config_class, raw["config"], source=str(directory / CONFIG_NAME), prefix="config")
        comp_path = directory / COMPONENTS_NAME
        if comp_path.is_file():
            index = read_json(comp_path, missing="missing", corrupt="unreadable or corrupt")
            if not isinstance(index, dict):
                raise UnicxrError(f"{comp_path}: not a components index")
            loaded = {name: load_component(entry, directory, device=device) for name, entry in index.items()}
            model = cls(config, components=loaded)  # type: ignore[call-arg]
            frozen = [n for n, e in index.items() if e.get("kind") == "model"]
        else:
            model = cls(config)
            frozen = []
        with model._detached(frozen):
            load_module_weights(model, directory / WEIGHTS_NAME, device=device)
        model.eval()
        return model

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
