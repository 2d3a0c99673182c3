"""Side-by-side generator benchmark: each family trained on the same data for the same budget, then
sampled on the same test prompts and scored by the same evaluation encoder.

For every recipe (default: the DDPM baseline, LDM-UNet, rectified-flow DiT, CrossFlow) the bench
trains into ``OUT/<recipe>/run`` with the shared overrides and ``train.max_minutes`` (the same
wall-clock budget for all), generates one image per test report (its default sampler and steps),
and runs ``unicxr eval images`` against the real test split. ``OUT/bench.json`` and
``OUT/bench.md`` hold, per family: training steps and seconds, sampling NFE and seconds per image,
FD with its bootstrap CI, macro alignment AUROC, and the ratios to the baseline (FD, NFE, training
time).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_RECIPES", "run_bench", "render_table"]

DEFAULT_RECIPES = ("ddpm_baseline_phantom", "ldm_unet_phantom", "rf_dit_phantom", "crossflow_phantom")


def _train(recipe: str, run: Path, overrides: list[str], progress: bool) -> dict[str, Any]:
    from unicxr.train.config import load_recipe
    from unicxr.train.trainer import train

    loaded = load_recipe(recipe, overrides)
    t0 = time.perf_counter()
    train(loaded, run, progress=progress)
    summary = json.loads((run / "summary.json").read_text())
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def run_bench(
    cache: str | Path,
    features: str,
    out: str | Path,
    *,
    recipes: tuple[str, ...] = DEFAULT_RECIPES,
    overrides: list[str] | None = None,
    max_minutes: float | None = None,
    split: str = "test",
    max_prompts: int | None = None,
    n_boot: int = 200,
    seed: int = 0,
    baseline: str = "ddpm_baseline_phantom",
    progress: bool = True,
) -> dict[str, Any]:
    """Train, sample and score every recipe (see module docstring); returns the bench JSON."""
    from unicxr.eval.image_eval import evaluate_images, json_safe
    from unicxr.pipelines.generate import generate_images, read_prompts
    from unicxr.utils.io import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prompts, _ = read_prompts(prompts=cache, split=split)
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    rows: dict[str, Any] = {}
    for recipe in recipes:
        sets = [f"data.cache={cache}", *(overrides or [])]
        if max_minutes is not None:
            sets.append(f"train.max_minutes={max_minutes}")
        run = out / recipe / "run"
        train_summary = _train(recipe, run, sets, progress)
        t0 = time.perf_counter()
        gen = generate_images(run, prompts, out / recipe / "images", seed=seed, progress=progress)
        sample_s = time.perf_counter() - t0
        ev = evaluate_images(cache, out / recipe / "images", features, out=out / recipe / "eval", real_split=split,
                             n_boot=n_boot, seed=seed, diversity=False, progress=progress)
        fd = ev["metrics"]["fd"]
        align = ev.get("alignment", {})
        rows[recipe] = {
            "train_steps": train_summary["steps"],
            "train_seconds": train_summary.get("train_seconds", train_summary["wall_s"]),
            "stopped_by_time": train_summary.get("stopped_by_time", False),
            "nfe_per_image": gen["nfe_per_image"],
            "sampler": gen["sampler"],
            "steps": gen["steps"],
            "sample_seconds_per_image": sample_s / max(gen["images"], 1),
            "fd": fd.get("value"),
            "fd_ci": [fd.get("ci_low"), fd.get("ci_high")],
            "alignment_macro_auroc": (align.get("macro") or {}).get("auroc_fake"),
            "alignment_per_finding": {k: v.get("auroc_fake") for k, v in (align.get("per_finding") or {}).items()},
            "n_images": gen["images"],
        }
    base = rows.get(baseline)
    if base is not None:
        for r in rows.values():
            r["fd_ratio_to_baseline"] = _ratio(r["fd"], base["fd"])
            r["nfe_ratio_to_baseline"] = _ratio(r["nfe_per_image"], base["nfe_per_image"])
            r["train_time_ratio_to_baseline"] = _ratio(r["train_seconds"], base["train_seconds"])
    result = json_safe({"cache": str(cache), "features": features, "split": split, "max_minutes": max_minutes,
                        "overrides": overrides or [], "baseline": baseline, "families": rows})
    atomic_write_text(out / "bench.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "bench.md", render_table(result))
    return result


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return float(a) / float(b)


def render_table(result: dict[str, Any]) -> str:
    """Markdown table of a bench result."""

    def f(x: Any, d: int = 3) -> str:
        return "–" if x is None else (f"{x:.{d}g}" if isinstance(x, float) else str(x))

    lines = [
        f"Generators on `{result['cache']}` ({result['split']} split), features `{result['features']}`, "
        f"budget {result['max_minutes']} min per family; ratios against `{result['baseline']}`.",
        "",
        "| family | train steps | train s | sampler × steps | NFE | s/image | FD [95% CI] | align AUROC | FD ratio | NFE ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["families"].items():
        ci = r["fd_ci"]
        lines.append(
            f"| {name} | {r['train_steps']} | {f(r['train_seconds'], 4)} | {r['sampler']} × {r['steps']} | "
            f"{r['nfe_per_image']} | {f(r['sample_seconds_per_image'])} | {f(r['fd'])} [{f(ci[0])}, {f(ci[1])}] | "
            f"{f(r['alignment_macro_auroc'])} | {f(r.get('fd_ratio_to_baseline'))} | {f(r.get('nfe_ratio_to_baseline'))} |"
        )
    return "\n".join(lines) + "\n"
