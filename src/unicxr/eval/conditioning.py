"""Does a trained generator use its condition? Its own training loss on held-out images, three ways.

For each batch of real images the generator's denoising / flow term is computed with the **true**
conditions (findings and report of each image), with the conditions **shuffled** among the items
(each image gets another image's findings and report) and with the **null** condition (the
classifier-free-guidance branch; CrossFlow: the null indicator), all at the same noise and
timesteps. A generator that has learned its conditioning has a clearly lower loss with the true
conditions than with shuffled ones; equal losses mean the condition is ignored, whatever the images
look like. Cheap (forward passes only) and independent of any evaluation encoder, so it is a first
check before sampling and scoring alignment with ``unicxr eval images``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VARIANTS", "condition_use", "evaluate_conditioning", "render_conditioning"]

VARIANTS = ("true", "shuffled", "null")


def _derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of range(n) without fixed points (n >= 2): a cyclic shift of a shuffle."""
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, 1)
    return perm


def _term(loss: Any, logs: dict[str, float]) -> float:
    """The generator's denoising or flow term (not KL/contrastive extras, which shuffling also moves)."""
    for key in ("mse", "flow"):
        if key in logs:
            return float(logs[key])
    return float(loss)


def condition_use(
    model: Any,
    images: Any,
    labels: np.ndarray,
    reports: list[str],
    *,
    batch_size: int = 16,
    repeats: int = 4,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Loss of ``model`` (a :class:`~unicxr.models.generator_base.GeneratorBase`) on images
    (N, 1, H, W) in [0, 1] with their labels (N, 14) and reports, per variant of :data:`VARIANTS`.

    Every (batch, repeat) unit draws one noise/timestep sample shared by the three variants, so the
    gaps are paired. Returns the mean loss per variant, the gaps ``shuffled - true`` and
    ``null - true`` with 95% CIs over the units (normal approximation) and relative to the true loss.
    """
    import torch
    from tqdm.auto import tqdm

    n = len(reports)
    if n < 2:
        raise ValueError(f"conditioning check needs at least 2 items, got {n}")
    perm = _derangement(n, seed)
    shuffled_reports = [reports[i] for i in perm]
    x = torch.as_tensor(images, dtype=torch.float32)
    model.eval()
    units: dict[str, list[float]] = {v: [] for v in VARIANTS}
    starts = list(range(0, n, batch_size))
    bar = tqdm(total=len(starts) * repeats, desc="condition use", disable=not progress)
    with torch.no_grad():
        for s in starts:
            sl = slice(s, s + batch_size)
            z0 = model.to_latent(x[sl])
            true = model.condition_batch(labels[sl], reports[sl])
            # the null variant nulls the true condition inside the model (forced_drop)
            conds = {"true": true, "shuffled": model.condition_batch(labels[perm[sl]], shuffled_reports[sl]),
                     "null": true}
            for r in range(repeats):
                for v in VARIANTS:
                    torch.manual_seed(seed * 1_000_003 + s * 101 + r)  # same draws for every variant
                    with model.forced_drop(v == "null"):
                        loss, logs = model(z0, conds[v])
                    units[v].append(_term(loss, logs))
                bar.update(1)
    bar.close()
    arr = {v: np.asarray(u, dtype=np.float64) for v, u in units.items()}
    true_mean = float(arr["true"].mean())
    out: dict[str, Any] = {"n_items": n, "batch_size": batch_size, "repeats": repeats, "seed": seed,
                           "n_units": int(arr["true"].size), "loss": {v: float(a.mean()) for v, a in arr.items()}}
    for v in ("shuffled", "null"):
        d = arr[v] - arr["true"]
        half = 1.96 * float(d.std(ddof=1)) / np.sqrt(d.size) if d.size > 1 else float("nan")
        out[f"gap_{v}"] = {"mean": float(d.mean()), "ci": [float(d.mean() - half), float(d.mean() + half)],
                           "relative": float(d.mean() / true_mean) if true_mean else float("nan")}
    return out


def evaluate_conditioning(
    model_path: str | Path,
    cache: str | Path,
    *,
    split: str = "test",
    max_images: int | None = 256,
    batch_size: int = 16,
    repeats: int = 4,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`condition_use` of a saved generator (run folder or model directory) on a cache split."""
    import torch

    from unicxr.data import CXRDataset
    from unicxr.models.generator_base import load_generator
    from unicxr.utils.errors import UnicxrError

    model, model_dir = load_generator(model_path, device=device)
    if model.model_type == "unified":
        raise UnicxrError(f"{model_dir}: the unified model's generation loss takes a token prompt, not a "
                          "condition dict; the check covers ldm_unet, latent_dit and crossflow")
    ds = CXRDataset(cache, None if split == "all" else split, size=model.config.image_size, max_items=max_images,
                    fields=("image", "labels", "report"))
    if len(ds) < 2:
        raise UnicxrError(f"{cache}: split {split!r} has {len(ds)} item(s); the check needs at least 2")
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items]).to(device)
    labels = torch.stack([torch.as_tensor(it["labels"]) for it in items]).numpy()
    res = condition_use(model, images, labels, [it["report"] for it in items], batch_size=batch_size,
                        repeats=repeats, seed=seed, progress=progress)
    return {"model": str(model_dir), "model_type": model.model_type, "cache": str(cache), "split": split, **res}


def render_conditioning(res: dict[str, Any]) -> str:
    """Markdown summary of :func:`evaluate_conditioning`."""
    lines = [
        "# Does the generator use its condition?",
        "",
        f"- model: `{res.get('model', '?')}` ({res.get('model_type', '?')}); data: `{res.get('cache', '?')}` split "
        f"`{res.get('split', '?')}`, {res['n_items']} images x {res['repeats']} noise draws "
        f"({res['n_units']} paired units of {res['batch_size']}).",
        "- loss: the model's own denoising / flow term at the same noise and timesteps for every variant.",
        "",
        "| condition | loss | gap to true [95% CI] | relative |",
        "|---|---|---|---|",
        f"| true | {res['loss']['true']:.5f} | – | – |",
    ]
    for v, what in (("shuffled", "shuffled among the images"), ("null", "null (guidance branch)")):
        g = res[f"gap_{v}"]
        lines.append(f"| {what} | {res['loss'][v]:.5f} | {g['mean']:+.5f} [{g['ci'][0]:+.5f}, {g['ci'][1]:+.5f}] "
                     f"| {100 * g['relative']:+.2f}% |")
    g = res["gap_shuffled"]
    verdict = ("the true condition lowers the loss: the model uses it" if g["ci"][0] > 0
               else "no loss difference that the CI separates from 0: the condition is (nearly) ignored")
    lines += ["", f"Verdict: {verdict}.", ""]
    return "\n".join(lines)
