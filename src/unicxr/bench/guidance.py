"""Guidance sweep: FD against prompt alignment for trained generators (a Pareto curve per model).

For each model and each classifier-free guidance scale, the sweep samples one image per prompt (the
first ``max_prompts`` reports of a cache split, the same prompts and seeds for every point), then
scores the images against the real split with :func:`unicxr.eval.image_eval.evaluate_images`: FD with
its bootstrap CI in the given feature space, and the evaluation encoder's macro alignment AUROC on the
prompted labels. ``OUT/sweep.json``, ``OUT/sweep.md`` and ``OUT/pareto.png`` (FD on x, alignment on
y, one line per model, points labelled by the scale) hold the result, as in the MONAI Generative
Models paper's CLIP-score-vs-FID figure. Low guidance usually gives the lower FD, high guidance the
better alignment; the curve shows where a model trades one for the other. A point whose
``OUT/<model>/g<scale>/point.json`` matches (same model, scale, sampler, steps, prompts, seed, features)
is reused, so a sweep resumes, and models swept in separate processes into one OUT are tabulated
together by a last call with all of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_GUIDANCE", "run_sweep", "render_sweep", "plot_sweep"]

DEFAULT_GUIDANCE = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


_GENERIC = {"model", "model_ema", "run"}


def _name(model: str | Path, taken: set[str]) -> str:
    """A short unique label for a model path: its folder name, going up past generic names (``model``,
    ``model_ema``, ``run``), so ``bench/rf_dit_phantom/run`` is ``rf_dit_phantom``."""
    p = Path(model)
    while p.name in _GENERIC and p.parent != p:
        p = p.parent
    base = p.name
    name, k = base or "model", 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def run_sweep(
    models: list[str | Path],
    cache: str | Path,
    features: str,
    out: str | Path,
    *,
    guidances: tuple[float, ...] = DEFAULT_GUIDANCE,
    split: str = "test",
    max_prompts: int | None = 128,
    steps: int | None = None,
    sampler: str | None = None,
    n_boot: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample and score every (model, guidance) point; see the module docstring. Returns the JSON."""
    from unicxr.eval.features import parse_features_spec
    from unicxr.eval.image_eval import evaluate_images, json_safe
    from unicxr.pipelines.generate import generate_images, read_prompts
    from unicxr.utils.errors import UnicxrError
    from unicxr.utils.io import atomic_write_text

    if not models:
        raise UnicxrError("--model: give at least one trained generator")
    if not guidances or any(g <= 0 for g in guidances):
        raise UnicxrError(f"--guidance: scales must be positive, got {list(guidances)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prompts, _ = read_prompts(prompts=cache, split=split)
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    ext = parse_features_spec(features)  # one extractor for every point
    taken: set[str] = set()
    curves: dict[str, Any] = {}
    for model in models:
        name = _name(model, taken)
        points = []
        for g in guidances:
            d = out / name / f"g{g:g}"
            key = {"model": str(Path(model).resolve()), "guidance": g, "steps": steps, "sampler": sampler,
                   "seed": seed, "n_prompts": len(prompts), "split": split, "cache": str(cache), "features": features,
                   "n_boot": n_boot}
            done = d / "point.json"
            prev = json.loads(done.read_text()) if done.exists() else {}
            if prev.get("key") == key:  # resumed sweep: reuse the point
                points.append(prev["point"])
                continue
            gen = generate_images(model, prompts, d, guidance=g, steps=steps, sampler=sampler, seed=seed,
                                  progress=progress, resume=True)
            ev = evaluate_images(cache, d, ext, real_split=split, n_boot=n_boot, seed=seed, diversity=False,
                                 progress=progress)
            fd = ev["metrics"]["fd"]
            macro = (ev.get("alignment") or {}).get("macro") or {}
            points.append({
                "guidance": g,
                "fd": fd.get("value"),
                "fd_ci": [fd.get("ci_low"), fd.get("ci_high")],
                "alignment_macro_auroc": macro.get("auroc_fake"),
                "alignment_ratio": macro.get("ratio"),
                "nfe_per_image": gen["nfe_per_image"],
                "network_passes_per_image": gen["network_passes_per_image"],
                "sampler": gen["sampler"],
                "steps": gen["steps"],
                "n_images": gen["images"],
            })
            atomic_write_text(done, json.dumps(json_safe({"key": key, "point": points[-1]}), indent=2) + "\n")
        curves[name] = {"model": str(model), "points": points}
    result = json_safe({"cache": str(cache), "split": split, "features": features, "n_prompts": len(prompts),
                        "seed": seed, "guidance": list(guidances), "models": curves})
    atomic_write_text(out / "sweep.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "sweep.md", render_sweep(result))
    plot_sweep(result, out / "pareto.png")
    return result


def render_sweep(result: dict[str, Any]) -> str:
    """Markdown table of a sweep: one row per (model, guidance)."""

    def f(x: Any) -> str:
        return "–" if x is None else f"{x:.3g}"

    lines = [
        f"Guidance sweep on `{result['cache']}` ({result['split']} split, {result['n_prompts']} prompts, seed "
        f"{result['seed']}), features `{result['features']}`.",
        "",
        "| model | guidance | FD [95% CI] | alignment macro AUROC | NFE (net passes) |",
        "|---|---|---|---|---|",
    ]
    for name, c in result["models"].items():
        for p in c["points"]:
            lo, hi = p["fd_ci"]
            lines.append(f"| {name} | {p['guidance']:g} | {f(p['fd'])} [{f(lo)}, {f(hi)}] | "
                         f"{f(p['alignment_macro_auroc'])} | {p['nfe_per_image']} "
                         f"({p.get('network_passes_per_image', '–')}) |")
    return "\n".join(lines) + "\n"


def plot_sweep(result: dict[str, Any], path: str | Path) -> Path:
    """FD (x) against alignment macro AUROC (y), one line per model, points labelled by guidance."""
    from unicxr.eval.image_report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, c in result["models"].items():
        pts = [p for p in c["points"] if p["fd"] is not None and p["alignment_macro_auroc"] is not None]
        if not pts:
            continue
        xs = [p["fd"] for p in pts]
        ys = [p["alignment_macro_auroc"] for p in pts]
        ax.plot(xs, ys, marker="o", label=name)
        for p, x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(f"{p['guidance']:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel("FD (lower is better)")
    ax.set_ylabel("alignment: macro AUROC on prompted labels")
    ax.set_title("Guidance sweep (labels: guidance scale)")
    ax.grid(alpha=0.3)
    if result["models"]:
        ax.legend(fontsize=8)
    return save_figure(fig, Path(path))
