"""Typed, validated configs loaded from YAML, with ``--set a.b=value`` overrides.

Every error is one line naming the file, the dotted key and the problem, e.g.
``recipe.yaml: train.lr: must be > 0 (got -0.1)`` or ``recipe.yaml: train.lrr: unknown key``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from unicxr.utils.errors import UnicxrError

__all__ = [
    "StrictModel",
    "load_yaml",
    "apply_overrides",
    "parse_override",
    "validate",
    "format_validation_error",
]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every unicxr config: unknown keys are errors, NaN/inf are rejected, values are
    validated on assignment too."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True, frozen=False)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; one-line ``UnicxrError`` if missing or malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnicxrError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UnicxrError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UnicxrError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UnicxrError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``"a.b.c=value"`` into (``["a","b","c"]``, value); the value is read as YAML
    (``1e-3`` → float, ``true`` → bool, ``[1,2]`` → list, ``nan`` → NaN)."""
    if "=" not in item:
        raise UnicxrError(f"--set {item!r}: expected KEY=VALUE (e.g. train.lr=1e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UnicxrError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" as a string; users mean a number.
        try:
            value = float(value) if value.strip().lower() not in {"inf", "-inf", "infinity"} else value
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a deep copy of ``data`` with each ``KEY=VALUE`` override applied (dotted keys)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        keys, value = parse_override(item)
        node: dict[str, Any] = out
        for depth, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = {}
                node[k] = child
            elif not isinstance(child, dict):
                raise UnicxrError(f"--set {item}: {'.'.join(keys[: depth + 1])} is not a section")
            node = child
        node[keys[-1]] = value
    return out


def _describe(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "input" in err and not isinstance(err["input"], (dict, list)):
        value = err["input"]
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg = f"{msg} (got {shown})"
    return msg


def format_validation_error(exc: ValidationError, *, source: str = "", prefix: str = "") -> str:
    """Format a pydantic error as one line: ``source: key.path: problem; key2: problem2``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        parts.append(f"{loc}: {_describe(err)}" if loc else _describe(err))
    body = "; ".join(parts) if parts else str(exc)
    return f"{source}: {body}" if source else body


def validate(schema: type[M], data: Mapping[str, Any] | None, *, source: str = "", prefix: str = "") -> M:
    """Validate ``data`` against ``schema``; raise a one-line :class:`UnicxrError` on failure."""
    try:
        return schema.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise UnicxrError(format_validation_error(exc, source=source, prefix=prefix)) from None
