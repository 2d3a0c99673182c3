"""Training checkpoints: everything needed for a bit-exact resume.

Layout: ``RUN/checkpoints/step_000123/`` with ``model.safetensors`` (trainable state: the model
without its frozen components), ``<name>.safetensors`` for each auxiliary trained module (e.g. a
discriminator), ``ema.safetensors`` (EMA of trainable parameters, if EMA), ``optimizer.pt`` (the state of
every optimizer by name; our own file, loaded with ``weights_only=True``) and ``state.json`` (step,
EMA update count, and the size + SHA-256 of every file). A checkpoint is written to a temporary folder
and renamed into place, so a killed run never leaves a half-written checkpoint under a final name.
Data order, augmentation and loss noise are pure functions of (seed, step), so no RNG state is
needed. Loading verifies sizes and hashes first and names the damaged file.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from unicxr import __version__
from unicxr.models.base import load_module_weights, save_module_weights
from unicxr.utils.errors import UnicxrError
from unicxr.utils.io import atomic_write_bytes, atomic_write_text, fsync_dir, read_json, sha256_file

if TYPE_CHECKING:
    from unicxr.train.ema import EMA

__all__ = [
    "CKPT_DIR",
    "save_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "verify_checkpoint",
    "load_checkpoint",
    "rotate_checkpoints",
]

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{6,})$")


def _as_dict(obj: Any, default: str) -> dict[str, Any]:
    if obj is None:
        return {}
    return dict(obj) if isinstance(obj, Mapping) else {default: obj}


def _trainable(module: torch.nn.Module):
    """The module as a checkpoint stores it (a model without its frozen components)."""
    import contextlib

    ctx = getattr(module, "trainable_state", None)
    return ctx() if callable(ctx) else contextlib.nullcontext()


def _module_file(name: str) -> str:
    return "model.safetensors" if name == "model" else f"{name}.safetensors"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    modules: torch.nn.Module | Mapping[str, torch.nn.Module],
    optimizers: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
    ema: EMA | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of optimizer step ``step`` (number of completed steps); returns its folder.

    ``modules``: the model, or name → module with the model under ``"model"`` (others: auxiliary
    trained modules); ``optimizers``: one optimizer or name → optimizer (default name ``"main"``).
    """
    modules = _as_dict(modules, "model")
    optimizers = _as_dict(optimizers, "main")
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-step_{step:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, module in modules.items():
            with _trainable(module):
                save_module_weights(module, tmp / _module_file(name))
        if ema is not None:
            ema.save(tmp / "ema.safetensors")
        buf = io.BytesIO()
        torch.save({"optimizers": {n: o.state_dict() for n, o in optimizers.items()}}, buf)
        atomic_write_bytes(tmp / "optimizer.pt", buf.getvalue())
        files = {
            p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(tmp.iterdir()) if p.is_file()
        }
        state = {"step": step, "unicxr_version": __version__, "files": files, **(extra or {})}
        atomic_write_text(tmp / "state.json", json.dumps(state, indent=2, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """All complete checkpoints of a run as (step, folder), oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint folder of a run, or None."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check that every file of a checkpoint is present with the recorded size and hash.

    Returns the parsed ``state.json``; raises a one-line :class:`UnicxrError` naming the damaged file.
    """
    path = Path(path)
    state_path = path / "state.json"
    state = read_json(state_path, missing="missing (incomplete checkpoint)", corrupt="unreadable or corrupt")
    if not isinstance(state, dict) or not isinstance(state.get("files"), dict) or "step" not in state:
        raise UnicxrError(f"{state_path}: not a unicxr checkpoint state file")
    for name, meta in state["files"].items():
        f = path / name
        if not f.is_file():
            raise UnicxrError(f"{f}: missing from checkpoint")
        size = f.stat().st_size
        if size != meta["size"]:
            raise UnicxrError(f"{f}: truncated or altered ({size} bytes, expected {meta['size']})")
        if sha256_file(f) != meta["sha256"]:
            raise UnicxrError(f"{f}: corrupt (SHA-256 does not match the checkpoint record)")
    return state


def load_checkpoint(
    path: str | Path,
    modules: torch.nn.Module | Mapping[str, torch.nn.Module],
    optimizers: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer] | None = None,
    ema: EMA | None = None,
) -> dict[str, Any]:
    """Verify and load a checkpoint into the modules (+ optimizers, EMA). Returns ``state.json``."""
    path = Path(path)
    state = verify_checkpoint(path)
    for name, module in _as_dict(modules, "model").items():
        with _trainable(module):
            load_module_weights(module, path / _module_file(name))
    if ema is not None:
        if not (path / "ema.safetensors").is_file():
            raise UnicxrError(f"{path / 'ema.safetensors'}: missing (the run was started without EMA?)")
        ema.load(path / "ema.safetensors")
    optimizers = _as_dict(optimizers, "main")
    if optimizers:
        opt_path = path / "optimizer.pt"
        try:
            saved = torch.load(opt_path, map_location="cpu", weights_only=True)["optimizers"]
            for name, opt in optimizers.items():
                if name not in saved:
                    raise KeyError(f"no state for optimizer {name!r}")
                opt.load_state_dict(saved[name])
        except Exception as exc:  # noqa: BLE001 - any failure here is a damaged/foreign file
            raise UnicxrError(f"{opt_path}: cannot load optimizer state ({str(exc).splitlines()[0]})") from None
    return state


def rotate_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints."""
    ckpts = list_checkpoints(run_dir)
    for _, p in ckpts[: max(0, len(ckpts) - keep_last)]:
        shutil.rmtree(p, ignore_errors=True)
