"""Stage chaining: start a fresh run from the weights (and components) of a saved model.

``train.init_from: PATH`` (a saved model directory, or a run folder: its ``model_ema/`` when the run kept
an EMA — the weights that run evaluated and chose its thresholds with — else its ``model/``) makes
the trainer load that model's own weights into the newly built model before the first step (not on
resume, where the checkpoint wins). Keys present in both must have the same shape (a one-line
:class:`UnicxrError` otherwise); keys only on one side are reported (e.g. a REPA head added in a
later stage), which is what lets a stage add or drop heads. Tasks can take components (tokenizer,
autoencoder) from the same folder with :func:`init_components`, and config values (the architecture a
later stage's recipe leaves out) with :func:`init_config_values`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from unicxr.utils.errors import UnicxrError

__all__ = ["resolve_init_dir", "init_components", "init_config_values", "load_init_weights"]


def resolve_init_dir(path: str | Path) -> Path:
    """The saved model directory of ``train.init_from`` (a run folder → its ``model_ema/``, else ``model/``)."""
    from unicxr.models import resolve_model_dir

    try:
        return resolve_model_dir(path)
    except UnicxrError as exc:
        raise UnicxrError(f"train.init_from: {exc}") from None


def init_components(model_dir: str | Path) -> dict[str, Path]:
    """Component name → folder of a saved model (from its ``components.json``; empty if none)."""
    from unicxr.models.base import COMPONENTS_NAME
    from unicxr.utils.io import read_json

    model_dir = Path(model_dir)
    path = model_dir / COMPONENTS_NAME
    if not path.is_file():
        return {}
    index = read_json(path, missing="missing", corrupt="unreadable or corrupt")
    out = {}
    for name, entry in index.items():
        p = Path(entry["path"])
        out[name] = p if p.is_absolute() else model_dir / p
    return out


def init_config_values(model_dir: str | Path, keys: Sequence[str]) -> dict[str, Any]:
    """Values of the config fields ``keys`` that the saved model in ``model_dir`` has (its ``config.json``)."""
    from unicxr.models.base import CONFIG_NAME
    from unicxr.utils.io import read_json

    raw = read_json(Path(model_dir) / CONFIG_NAME, missing="missing", corrupt="unreadable or corrupt")
    cfg = raw.get("config", {}) if isinstance(raw, dict) else {}
    return {k: cfg[k] for k in keys if k in cfg}


def load_init_weights(model: torch.nn.Module, model_dir: str | Path) -> dict[str, Any]:
    """Load ``model_dir/model.safetensors`` into ``model`` (its own weights, not its components).

    Returns:
        ``{"source", "loaded", "missing", "unexpected"}`` (key lists; tied aliases of loaded tensors
        are not counted as missing).

    Raises:
        UnicxrError: the file is unreadable or a key present in both has another shape.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from unicxr.models.base import WEIGHTS_NAME

    path = Path(model_dir) / WEIGHTS_NAME
    try:
        saved = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UnicxrError(f"train.init_from: {path}: unreadable weights ({str(exc).splitlines()[0]})") from None
    own_ctx = getattr(model, "own_state", None)
    import contextlib

    with own_ctx() if callable(own_ctx) else contextlib.nullcontext():
        own = model.state_dict()
        bad = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
               if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
        if bad:
            more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            raise UnicxrError(
                f"train.init_from: {path}: shapes differ for {len(bad)} tensors (saved vs new): "
                f"{'; '.join(bad[:3])}{more}"
            )
        common = {k: saved[k] for k in own if k in saved}
        model.load_state_dict(common, strict=False)
        loaded_ptrs = {own[k].data_ptr() for k in common}
        missing = [k for k in own if k not in saved and own[k].data_ptr() not in loaded_ptrs]
        unexpected = [k for k in saved if k not in own]
    return {"source": str(path), "loaded": len(common), "missing": missing, "unexpected": unexpected}
