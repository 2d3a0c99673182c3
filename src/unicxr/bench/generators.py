"""Side-by-side generator benchmark: each family trained on the same data for the same budget, then
sampled on the same test prompts and scored by the same evaluation encoder.

For every recipe (default: the DDPM baseline, LDM-UNet, rectified-flow DiT, CrossFlow) the bench
trains into ``OUT/<recipe>/run`` with the shared overrides and ``train.max_minutes`` (the same
wall-clock budget for all), generates one image per test report (its default sampler and steps),
and runs ``unicxr eval images`` against the real test split. ``OUT/bench.json`` and
``OUT/bench.md`` hold, per family: training steps and seconds, sampling NFE and seconds per image,
FD with its bootstrap CI, macro alignment AUROC, and the ratios to the baseline (FD, NFE, training
time). NFE counts solver calls; guidance other than 1 doubles the denoiser passes of each call (the
null branch), so the passes and their ratio are reported beside it.

* **Anytime curve** (``snapshots``, fractions of the budget): the non-baseline families also save their
  weights at those fractions of ``max_minutes`` (``train.snapshot_minutes``); each snapshot is sampled
  and scored like the final model, which gives FD against training time and the first time a family
  reached the baseline's final FD (``time_to_baseline_fd_ratio``: the first measured point at or below
  it, over the baseline's training time; an upper bound, as the FD may have got there between points;
  ``time_to_baseline_fd_ratio_after``: the point before it, still above, a lower bound; the table shows
  both as an interval).
* **Diversity** (``diversity_prompts`` K > 0; not for the baseline, whose 1000-step sampling dominates
  the bench's cost): 8 samples for each of K test prompts whose positive
  findings match at least 8 real training images exactly; mean pairwise MS-SSIM among the 8 samples
  against 8 such real images (lower = more diverse).
* **Resumable**: a family whose ``OUT/<recipe>/row.json`` exists is not run again (only its diversity is
  added, when asked for and missing), a finished
  ``run/`` is not retrained, and the image batches an interrupted call wrote are kept (``generate``'s
  resume: same bytes; the seconds per image are timed over the images sampled by the last call), so
  families can run in separate processes (``--recipe``) into one OUT and a bench can span sessions; every
  call writes the table of all families present.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_RECIPES", "run_bench", "render_table", "pick_diversity_prompts", "add_baseline_ratios"]

DEFAULT_RECIPES = ("ddpm_baseline_phantom", "ldm_unet_phantom", "rf_dit_phantom", "crossflow_phantom")
DIVERSITY_N = 8


def _train(recipe: str, run: Path, overrides: list[str], progress: bool) -> dict[str, Any]:
    from unicxr.train.config import load_recipe
    from unicxr.train.trainer import train

    summary_path = run / "summary.json"
    if summary_path.exists():  # finished earlier (resumed bench): reuse it
        return {**json.loads(summary_path.read_text()), "reused": True}
    loaded = load_recipe(recipe, overrides)
    t0 = time.perf_counter()
    train(loaded, run, progress=progress)
    summary = json.loads(summary_path.read_text())
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def _score(model: Path, prompts: list, folder: Path, cache: str | Path, features: str, split: str, *, n_boot: int,
           seed: int, progress: bool) -> dict[str, Any]:
    """Sample one image per prompt with ``model``'s defaults into ``folder/images`` and score them."""
    from unicxr.eval.image_eval import evaluate_images
    from unicxr.pipelines.generate import generate_images

    t0 = time.perf_counter()
    gen = generate_images(model, prompts, folder / "images", seed=seed, progress=progress, resume=True)
    sample_s = time.perf_counter() - t0  # over the images sampled now (an interrupted bench keeps whole batches)
    ev = evaluate_images(cache, folder / "images", features, out=folder / "eval", real_split=split, n_boot=n_boot,
                         seed=seed, diversity=False, progress=progress)
    fd = ev["metrics"]["fd"]
    align = ev.get("alignment", {})
    return {
        "nfe_per_image": gen["nfe_per_image"],
        "guidance": gen["guidance"],
        "network_passes_per_image": gen["network_passes_per_image"],
        "sampler": gen["sampler"],
        "steps": gen["steps"],
        "sample_seconds_per_image": sample_s / max(gen["images_sampled"], 1),
        "images_timed": gen["images_sampled"],
        "fd": fd.get("value"),
        "fd_ci": [fd.get("ci_low"), fd.get("ci_high")],
        "alignment_macro_auroc": (align.get("macro") or {}).get("auroc_fake"),
        "alignment_per_finding": {k: v.get("auroc_fake") for k, v in (align.get("per_finding") or {}).items()},
        "n_images": gen["images"],
    }


def pick_diversity_prompts(prompts: list, real_labels: Any, k: int, *, need: int = DIVERSITY_N) -> list[int]:
    """Indices of the first ``k`` prompts with distinct positive-finding sets that at least ``need`` real
    label rows (N, 14) match exactly (so the real reference has as many images as the fakes)."""
    import numpy as np

    real_sets: dict[frozenset[int], int] = {}
    for row in np.asarray(real_labels):
        s = frozenset(np.flatnonzero(row == 1).tolist())
        real_sets[s] = real_sets.get(s, 0) + 1
    picked: list[int] = []
    seen: set[frozenset[int]] = set()
    for i, p in enumerate(prompts):
        s = frozenset(np.flatnonzero(np.asarray(p.labels) == 1).tolist())
        if s not in seen and real_sets.get(s, 0) >= need:
            seen.add(s)
            picked.append(i)
            if len(picked) == k:
                break
    return picked


def _diversity(model: Path, prompts: list, folder: Path, cache: str | Path, k: int, *, seed: int,
               progress: bool) -> dict[str, Any]:
    """MS-SSIM among 8 samples of each of ``k`` prompts vs among 8 real training images with the same
    positive findings (see module docstring)."""
    from unicxr.data.image_sets import open_image_set
    from unicxr.eval.image_eval import diversity_by_prompt
    from unicxr.pipelines.generate import generate_images

    real = open_image_set(cache, split="train")
    idx = pick_diversity_prompts(prompts, real.labels, k)
    if not idx:
        return {"ms_ssim": None, "n_groups": 0, "reason": f"no prompt matches {DIVERSITY_N} real training images"}
    generate_images(model, [prompts[i] for i in idx], folder / "images", n=DIVERSITY_N, seed=seed, progress=progress)
    div = diversity_by_prompt(open_image_set(folder / "images"), real=real, max_groups=len(idx),
                              max_per_group=DIVERSITY_N, seed=seed, progress=progress)
    return {k2: div.get(k2) for k2 in ("ms_ssim", "real_ms_ssim", "fake_ms_ssim_same_groups", "n_groups",
                                        "n_groups_real")}


def _family(recipe: str, out: Path, cache: str | Path, features: str, prompts: list, *, sets: list[str],
            split: str, snapshot_minutes: list[float], diversity_prompts: int, n_boot: int, seed: int,
            progress: bool) -> dict[str, Any]:

    fam = out / recipe
    run = fam / "run"
    if snapshot_minutes:
        sets = [*sets, "train.snapshot_minutes=[" + ",".join(f"{m:g}" for m in snapshot_minutes) + "]"]
    summary = _train(recipe, run, sets, progress)
    row: dict[str, Any] = {
        "train_steps": summary["steps"],
        "train_seconds": summary.get("train_seconds", summary.get("wall_s")),
        "stopped_by_time": summary.get("stopped_by_time", False),
        "reused_run": bool(summary.get("reused", False)),
        **_score(run, prompts, fam, cache, features, split, n_boot=n_boot, seed=seed, progress=progress),
    }
    curve = []
    snaps = sorted(((json.loads(sj.read_text()), sj.parent) for sj in (run / "snapshots").glob("min*/snapshot.json")),
                   key=lambda x: x[0]["minutes"])
    for info, snap in snaps:
        s = _score(snap, prompts, fam / "snapshots" / snap.name, cache, features, split, n_boot=n_boot, seed=seed,
                   progress=progress)
        curve.append({**info, **{k: s[k] for k in ("fd", "fd_ci", "alignment_macro_auroc")}})
    curve.append({"minutes": None, "step": row["train_steps"], "seconds": row["train_seconds"], "fd": row["fd"],
                  "fd_ci": row["fd_ci"], "alignment_macro_auroc": row["alignment_macro_auroc"]})
    row["curve"] = curve
    _save_row(fam, row, prompts, cache, diversity_prompts, seed=seed, progress=progress)
    return row


def _save_row(fam: Path, row: dict[str, Any], prompts: list, cache: str | Path, diversity_prompts: int, *,
              seed: int, progress: bool) -> None:
    """Add the family's diversity to ``row`` when asked for (K > 0) and missing, then write ``fam/row.json``."""
    from unicxr.eval.image_eval import json_safe
    from unicxr.utils.io import atomic_write_text

    if diversity_prompts > 0 and not row.get("diversity"):
        row["diversity"] = _diversity(fam / "run", prompts, fam / "diversity", cache, diversity_prompts, seed=seed,
                                      progress=progress)
    atomic_write_text(fam / "row.json", json.dumps(json_safe(row), indent=2) + "\n")


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
    snapshots: tuple[float, ...] = (),
    diversity_prompts: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, sample and score every recipe (see module docstring); returns the bench JSON of every
    family in ``out`` (run now or by an earlier call)."""
    from unicxr.eval.image_eval import json_safe
    from unicxr.pipelines.generate import read_prompts
    from unicxr.utils.errors import UnicxrError
    from unicxr.utils.io import atomic_write_text

    if snapshots and max_minutes is None:
        raise UnicxrError("--snapshots: fractions of the budget need --max-minutes")
    if any(not 0 < f < 1 for f in snapshots):
        raise UnicxrError(f"--snapshots {list(snapshots)}: fractions of the budget must lie in (0, 1)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prompts, _ = read_prompts(prompts=cache, split=split)
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    sets = [f"data.cache={cache}", *(overrides or [])]
    if max_minutes is not None:
        sets.append(f"train.max_minutes={max_minutes}")
    for recipe in recipes:
        row_path = out / recipe / "row.json"
        if row_path.exists():
            row = json.loads(row_path.read_text())
            if diversity_prompts > 0 and recipe != baseline and not row.get("diversity"):
                # a finished family asked for diversity later: only the diversity is sampled and added
                _save_row(out / recipe, row, prompts, cache, diversity_prompts, seed=seed, progress=progress)
            continue
        snap_min = [f * max_minutes for f in snapshots] if recipe != baseline and max_minutes else []
        _family(recipe, out, cache, features, prompts, sets=sets, split=split, snapshot_minutes=snap_min,
                diversity_prompts=diversity_prompts if recipe != baseline else 0, n_boot=n_boot, seed=seed,
                progress=progress)
    rows: dict[str, Any] = {}
    present = sorted(p.parent.name for p in out.glob("*/row.json"))
    for name in [*(r for r in recipes if r in present), *(r for r in present if r not in recipes)]:
        rows[name] = json.loads((out / name / "row.json").read_text())
    add_baseline_ratios(rows, baseline)
    result = json_safe({"cache": str(cache), "features": features, "split": split, "max_minutes": max_minutes,
                        "n_prompts": len(prompts), "overrides": overrides or [], "baseline": baseline,
                        "snapshots": list(snapshots), "families": rows})
    atomic_write_text(out / "bench.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "bench.md", render_table(result))
    return result


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return float(a) / float(b)


def _time_to_fd(curve: list[dict[str, Any]], target: float) -> tuple[float | None, float]:
    """(seconds of the first curve point with FD ≤ ``target`` or None, seconds of the last point before it
    still above ``target``, 0 when the first point reached it; when none reached it, the last point's)."""
    pts = sorted((p for p in curve if p.get("fd") is not None and p.get("seconds") is not None),
                 key=lambda p: p["seconds"])
    before = 0.0
    for p in pts:
        if p["fd"] <= target:
            return float(p["seconds"]), before
        before = float(p["seconds"])
    return None, before


def add_baseline_ratios(rows: dict[str, dict[str, Any]], baseline: str) -> None:
    """Fill each family's ratios to the baseline's row in place (FD, NFE, network passes, training time), and
    when the family reached the baseline's final FD on its anytime curve: ``time_to_baseline_fd_ratio``, the
    first measured point at or below it over the baseline's training time (an upper bound), and
    ``time_to_baseline_fd_ratio_after``, the last point before it that was still above (a lower bound; with no
    point reaching it, the last point: the family had not got there by then). No baseline row: no ratios."""
    base = rows.get(baseline)
    if base is None:
        return
    for r in rows.values():
        r["fd_ratio_to_baseline"] = _ratio(r["fd"], base["fd"])
        r["nfe_ratio_to_baseline"] = _ratio(r["nfe_per_image"], base["nfe_per_image"])
        r["network_pass_ratio_to_baseline"] = _ratio(r["network_passes_per_image"], base["network_passes_per_image"])
        r["train_time_ratio_to_baseline"] = _ratio(r["train_seconds"], base["train_seconds"])
        hit, before = (_time_to_fd(r.get("curve", []), base["fd"]) if base["fd"] is not None else (None, None))
        r["time_to_baseline_fd_ratio"] = _ratio(hit, base["train_seconds"])
        r["time_to_baseline_fd_ratio_after"] = _ratio(before, base["train_seconds"])


def render_table(result: dict[str, Any]) -> str:
    """Markdown tables of a bench result: the families, their anytime curves, their diversity."""

    def f(x: Any, d: int = 3) -> str:
        return "–" if x is None else (f"{x:.{d}g}" if isinstance(x, float) else str(x))

    def _reach(hi: float | None, lo: float | None) -> str:
        if hi is None:
            return "–" if not lo else f"> {lo:.3g} (not reached)"
        return f"≤ {hi:.3g}" if not lo else f"({lo:.3g}, {hi:.3g}]"

    lines = [
        f"Generators on `{result['cache']}` ({result['split']} split, {result.get('n_prompts', '?')} prompts), "
        f"features `{result['features']}`, budget {result['max_minutes']} min per family; ratios against "
        f"`{result['baseline']}`.",
        "",
        "| family | train steps | train s | sampler × steps | guidance | NFE (net passes) | s/image | FD [95% CI] | "
        "align AUROC | FD ratio | NFE ratio (passes) | time to baseline FD (ratio) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fams = result["families"]
    for name, r in fams.items():
        ci = r["fd_ci"]
        lines.append(
            f"| {name} | {r['train_steps']} | {f(r['train_seconds'], 4)} | {r['sampler']} × {r['steps']} | "
            f"{f(r.get('guidance'))} | {r['nfe_per_image']} ({f(r.get('network_passes_per_image'))}) | "
            f"{f(r['sample_seconds_per_image'])} | {f(r['fd'])} [{f(ci[0])}, {f(ci[1])}] | "
            f"{f(r['alignment_macro_auroc'])} | {f(r.get('fd_ratio_to_baseline'))} | "
            f"{f(r.get('nfe_ratio_to_baseline'))} ({f(r.get('network_pass_ratio_to_baseline'))}) | "
            f"{_reach(r.get('time_to_baseline_fd_ratio'), r.get('time_to_baseline_fd_ratio_after'))} |"
        )
    curves = [(n, p) for n, r in fams.items() if len(r.get("curve", [])) > 1 for p in r["curve"]]
    if curves:
        lines += ["", "FD against training time (snapshots at fractions of the budget; the last row of a family is "
                  "its final model):", "", "| family | train s | step | FD [95% CI] | align AUROC |",
                  "|---|---|---|---|---|"]
        for n, p in curves:
            ci = p["fd_ci"]
            lines.append(f"| {n} | {f(p['seconds'], 4)} | {p['step']} | {f(p['fd'])} [{f(ci[0])}, {f(ci[1])}] | "
                         f"{f(p['alignment_macro_auroc'])} |")
    divs = [(n, r["diversity"]) for n, r in fams.items() if r.get("diversity")]
    if divs:
        lines += ["", f"Diversity: mean pairwise MS-SSIM among {DIVERSITY_N} samples of one prompt vs among "
                  f"{DIVERSITY_N} real training images with the same positive findings (lower = more diverse):", "",
                  "| family | prompts | MS-SSIM fakes | MS-SSIM real (same groups) |", "|---|---|---|---|"]
        for n, d in divs:
            lines.append(f"| {n} | {f(d.get('n_groups'))} | {f(d.get('fake_ms_ssim_same_groups', d.get('ms_ssim')))} | "
                         f"{f(d.get('real_ms_ssim'))} |")
    return "\n".join(lines) + "\n"
