"""Training recipes: YAML with ``task``, ``model``, ``data`` and ``train`` sections.

``load_recipe("toy")`` finds a recipe shipped in ``unicxr/train/recipes/``; a path loads a user file.
``--set a.b=value`` overrides are applied before validation, so they are checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from unicxr.config import StrictModel, apply_overrides, load_yaml, validate
from unicxr.utils.errors import UnicxrError

__all__ = ["TrainConfig", "Recipe", "load_recipe", "shipped_recipes", "resolve_recipe_path"]


class TrainConfig(StrictModel):
    """Options of the training loop shared by every task."""

    seed: int = Field(0, ge=0, description="seed for init, data order, augmentation and loss noise")
    batch_size: int = Field(32, gt=0, description="global batch per optimizer step (all ranks x accumulation)")
    grad_accum: int = Field(1, gt=0, description="micro-batches accumulated per optimizer step")
    max_steps: int = Field(1000, gt=0, description="optimizer steps")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps (capped at max_steps)")
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of lr")
    clip_grad: float | None = Field(1.0, gt=0, description="max global grad norm (null: no clipping)")
    ema_decay: float | None = Field(None, ge=0, lt=1, description="EMA of weights (null: off)")
    ema_warmup: bool = Field(True, description="use decay min(ema_decay, (1+n)/(10+n)) early on")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a bf16-capable GPU, fp32 on CPU"
    )
    log_every: int = Field(10, gt=0)
    ckpt_every: int = Field(500, gt=0)
    keep_last: int = Field(3, gt=0, description="periodic checkpoints kept (older ones are deleted)")
    eval_every: int = Field(0, ge=0, description="validation every N steps (0: only at the end)")
    max_minutes: float | None = Field(
        None, gt=0, description="wall-clock budget of this process: stop (checkpoint + final model) once exceeded"
    )
    snapshot_minutes: list[float] = Field(
        default_factory=list,
        description=(
            "save the model (and its EMA) to OUT/snapshots/min<M>/ at the first step past each of these wall-clock "
            "minutes of training, with snapshot.json (step, seconds): anytime curves, e.g. FD against training time"
        ),
    )
    repeat_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description=(
            "repeat-factor sampling (LVIS): an image whose rarest positive finding has training frequency f < t "
            "is seen max(1, sqrt(t / f)) times per epoch on average; null: each image once"
        ),
    )
    repeat_findings: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "per-finding repeat factors, e.g. {Pneumothorax: 2.5}: an image positive for a listed finding is seen "
            "that many times per epoch on average (the largest factor of its findings; with repeat_threshold, the "
            "larger of the two); every factor >= 1"
        ),
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank")
    num_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads per rank (null: torch default); 1 is often fastest on a busy CPU"
    )
    init_from: str | None = Field(
        None,
        description=(
            "saved model dir or run folder (its model_ema/, else model/): a fresh run starts from its weights "
            "(stage chaining)"
        ),
    )
    tensorboard: bool = True
    record_indices: bool = Field(False, description="write the sample indices each rank sees (debugging)")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_steps > self.max_steps:
            # `--set train.max_steps=N` shortens any recipe: the warmup shrinks with it.
            self.warmup_steps = self.max_steps
        for b in self.betas:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"betas must be in [0, 1), got {list(self.betas)}")
        if self.repeat_findings:
            from unicxr.labels import FINDINGS

            for name, factor in self.repeat_findings.items():
                if name not in FINDINGS:
                    raise ValueError(f"repeat_findings: unknown finding {name!r} (one of: {', '.join(FINDINGS)})")
                if not factor >= 1.0:
                    raise ValueError(f"repeat_findings: {name}'s factor must be >= 1, got {factor}")
        return self


class Recipe(StrictModel):
    """A whole recipe; ``model`` and ``data`` are validated by the task's own config classes."""

    task: str
    model: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    description: str = ""


@dataclass
class LoadedRecipe:
    """A validated recipe with its task's typed model/data configs and where it came from."""

    recipe: Recipe
    model_cfg: StrictModel
    data_cfg: StrictModel
    source: str
    raw: dict[str, Any]


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped inside the package."""
    folder = resources.files("unicxr.train") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the shipped recipe of that name."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    name = p.stem if p.suffix in {".yaml", ".yml"} else str(p)
    shipped = resources.files("unicxr.train") / "recipes" / f"{name}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise UnicxrError(
        f"{name_or_path}: no such recipe file, and no shipped recipe of that name "
        f"(shipped: {', '.join(shipped_recipes()) or 'none'})"
    )


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRecipe:
    """Load, override and validate a recipe; every error is one line naming file and key."""
    from unicxr.train.tasks import get_task

    path = resolve_recipe_path(name_or_path)
    source = str(path) if Path(name_or_path).is_file() else f"recipe '{name_or_path}'"
    raw = apply_overrides(load_yaml(path), overrides)
    recipe = validate(Recipe, raw, source=source)
    task_cls = get_task(recipe.task)
    model_cfg = validate(task_cls.ModelConfig, recipe.model, source=source, prefix="model")
    data_cfg = validate(task_cls.DataConfig, recipe.data, source=source, prefix="data")
    return LoadedRecipe(recipe=recipe, model_cfg=model_cfg, data_cfg=data_cfg, source=source, raw=raw)
