"""End-to-end image evaluation: real set vs fake set in one named feature space.

``evaluate_images`` extracts features (and encoder probabilities) for both sets, computes FD, KID,
MMD, PRDC and per-finding FD over the full sets with bootstrap CIs, prompt alignment when the fake
set has prompted labels and the extractor a classifier head (per finding, and per finding split by
each co-prompted finding: ``alignment.cooccurrence``), MS-SSIM diversity among same-prompt
fakes, and (with ``out``) writes ``metrics.json``, ``report.md``, ``report.html`` and plots.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unicxr.data.image_sets import open_image_set
from unicxr.eval.features import FeatureExtractor, extract_features, parse_features_spec
from unicxr.eval.image_metrics import compute_feature_metrics, ms_ssim_diversity

__all__ = ["evaluate_images", "diversity_by_prompt", "write_outputs", "json_safe"]


def _groups(ds: Any) -> dict[str, list[int]]:
    """Indices of fakes sharing a prompt (or, without prompts, the same prompted label vector)."""
    keys: list[str] | None = None
    if getattr(ds, "prompts", None) is not None:
        keys = list(ds.prompts)
    elif getattr(ds, "labels", None) is not None:
        keys = ["|".join("n" if math.isnan(v) else str(int(v)) for v in row) for row in ds.labels]
    out: dict[str, list[int]] = {}
    if keys is None:
        return out
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return {k: v for k, v in out.items() if len(v) >= 2}


def _positive_sets(labels: np.ndarray) -> list[frozenset[int]]:
    """The set of positive findings (value 1) of each label row (B, 14)."""
    return [frozenset(np.flatnonzero(np.asarray(row) == 1).tolist()) for row in labels]


def diversity_by_prompt(
    ds: Any,
    *,
    real: Any | None = None,
    max_groups: int = 20,
    max_per_group: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Mean pairwise MS-SSIM within same-prompt groups of a fake set, averaged over groups.

    At most ``max_groups`` groups (seeded choice) and ``max_per_group`` images per group are used.
    With ``real`` (an image set with labels) and prompted labels on the fakes, each group also gets the
    same number of real images with the same positive findings (seeded choice) and their MS-SSIM: the
    diversity the prompt's labels allow in real data (``real_ms_ssim``, over the groups with ≥ 2 such
    real images).
    """
    from tqdm.auto import tqdm

    groups = _groups(ds)
    if not groups:
        return {"ms_ssim": None, "n_groups": 0, "reason": "no prompts/labels with >= 2 images per prompt"}
    rng = np.random.default_rng(seed)
    keys = sorted(groups)
    if len(keys) > max_groups:
        keys = [keys[i] for i in sorted(rng.choice(len(keys), max_groups, replace=False))]
    use_real = real is not None and getattr(real, "labels", None) is not None and getattr(ds, "labels", None) is not None
    real_sets = _positive_sets(real.labels) if use_real else []
    per: list[dict[str, Any]] = []
    for k in tqdm(keys, desc="MS-SSIM diversity", disable=not progress, leave=False):
        idx = groups[k]
        if len(idx) > max_per_group:
            idx = sorted(rng.choice(idx, max_per_group, replace=False).tolist())
        imgs = torch.stack([ds[i]["image"] for i in idx])
        row = {"group": k, **ms_ssim_diversity(imgs, max_pairs=None, seed=seed)}
        if use_real:
            want = _positive_sets(ds.labels[idx[:1]])[0]
            match = [j for j, sset in enumerate(real_sets) if sset == want]
            row["n_real_same_labels"] = len(match)
            if len(match) >= 2:
                pick = sorted(rng.choice(match, min(len(idx), len(match)), replace=False).tolist())
                rimgs = torch.stack([real[j]["image"] for j in pick])
                if rimgs.shape[-2:] != imgs.shape[-2:]:
                    rimgs = torch.nn.functional.interpolate(rimgs, size=imgs.shape[-2:], mode="bicubic",
                                                            antialias=True, align_corners=False).clamp(0, 1)
                row["real_ms_ssim"] = ms_ssim_diversity(rimgs, max_pairs=None, seed=seed)["ms_ssim"]
        per.append(row)
    out = {
        "ms_ssim": float(np.mean([p["ms_ssim"] for p in per])),
        "n_groups": len(per),
        "kernel_size": per[0]["kernel_size"],
        "levels": per[0]["levels"],
        "groups": per,
    }
    if use_real:
        both = [p for p in per if "real_ms_ssim" in p]
        out["real_ms_ssim"] = float(np.mean([p["real_ms_ssim"] for p in both])) if both else None
        out["fake_ms_ssim_same_groups"] = float(np.mean([p["ms_ssim"] for p in both])) if both else None
        out["n_groups_real"] = len(both)
    return out


def evaluate_images(
    real: str | Path,
    fake: str | Path,
    features: str | FeatureExtractor,
    *,
    out: str | Path | None = None,
    real_split: str | None = "test",
    fake_split: str | None = None,
    n_boot: int = 200,
    seed: int = 0,
    batch_size: int = 32,
    max_images: int | None = None,
    device: str = "cpu",
    diversity: bool = True,
    alignment: bool = True,
    min_per_finding: int = 20,
    kid_subset_size: int = 1000,
    save_features: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate fake images against real ones; see the module docstring. Returns the JSON result."""
    from unicxr import __version__

    t0 = time.perf_counter()
    real_ds = open_image_set(real, split=real_split, max_images=max_images, seed=seed)
    fake_ds = open_image_set(fake, split=fake_split, max_images=max_images, seed=seed + 1)
    ext = parse_features_spec(features, device=device) if isinstance(features, str) else features
    want_p = alignment and ext.has_probabilities
    fr, pr = extract_features(
        ext, real_ds, batch_size=batch_size, probabilities=want_p, progress=progress, desc="real features"
    )
    t_feat = time.perf_counter()
    ff, pf = extract_features(
        ext, fake_ds, batch_size=batch_size, probabilities=want_p, progress=progress, desc="fake features"
    )
    t_feat2 = time.perf_counter()
    real_labels, fake_labels = real_ds.labels, fake_ds.labels
    metrics = compute_feature_metrics(
        fr,
        ff,
        real_labels=real_labels if fake_labels is not None else None,
        fake_labels=fake_labels if real_labels is not None else None,
        n_boot=n_boot,
        seed=seed,
        kid_subset_size=kid_subset_size,
        min_per_finding=min_per_finding,
    )
    metrics["warnings"] = [*ext.warnings, *metrics["warnings"]]  # extractor fallbacks come first
    result: dict[str, Any] = {
        "unicxr_version": __version__,
        "real": {**real_ds.describe(), "split": real_split},
        "fake": {**fake_ds.describe(), "split": fake_split},
        "features": ext.describe(),
        "n_boot": n_boot,
        "seed": seed,
        "metrics": metrics,
    }
    if want_p and fake_labels is not None and real_labels is not None:
        from unicxr.eval.alignment import alignment_from_probabilities, cooccurrence_alignment

        result["alignment"] = alignment_from_probabilities(
            pf, fake_labels, pr, real_labels, n_boot=n_boot, seed=seed
        )
        result["alignment"]["encoder"] = ext.name
        result["alignment"]["cooccurrence"] = cooccurrence_alignment(
            pf, fake_labels, pr, real_labels, n_boot=n_boot, seed=seed
        )
    if diversity:
        result["diversity"] = diversity_by_prompt(fake_ds, real=real_ds, seed=seed, progress=progress)
    n_img = len(real_ds) + len(fake_ds)
    result["timing"] = {
        "features_s": (t_feat2 - t0),
        "real_features_img_per_s": len(real_ds) / max(t_feat - t0, 1e-9),
        "fake_features_img_per_s": len(fake_ds) / max(t_feat2 - t_feat, 1e-9),
        "total_s": time.perf_counter() - t0,
        "n_images": n_img,
    }
    if out is not None:
        write_outputs(result, out, fr, ff, seed=seed, save_features=save_features)
    return result


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_safe(o: Any) -> Any:
    """NaN/inf → None so that metrics.json is strict JSON."""
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return None if not math.isfinite(float(o)) else float(o)
    return o


def write_outputs(
    result: dict[str, Any],
    out: str | Path,
    real_feats: np.ndarray,
    fake_feats: np.ndarray,
    *,
    seed: int = 0,
    save_features: bool = False,
) -> dict[str, Path]:
    """Write ``metrics.json``, plots, ``report.md`` and ``report.html`` into ``out``; returns their paths."""
    import io

    from unicxr.eval.image_report import (
        plot_alignment,
        plot_pca,
        plot_per_finding_fd,
        render_html,
        render_markdown,
    )
    from unicxr.utils.io import atomic_write_bytes, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    plots["PCA of real vs fake features"] = plot_pca(
        real_feats,
        fake_feats,
        out / "pca.png",
        seed=seed,
        title=f"PCA of {result['features']['name']} features",
    )
    pf = result["metrics"].get("per_finding_fd")
    if pf:
        p = plot_per_finding_fd(pf, out / "per_finding_fd.png")
        if p is not None:
            plots["per-finding FD"] = p
    if result.get("alignment"):
        p = plot_alignment(result["alignment"], out / "alignment.png")
        if p is not None:
            plots["alignment"] = p
    result = {**result, "files": {k: v.name for k, v in plots.items()}}
    paths = {"metrics": out / "metrics.json", "markdown": out / "report.md", "html": out / "report.html"}
    atomic_write_text(paths["metrics"], json.dumps(json_safe(result), indent=2, default=_json_default) + "\n")
    atomic_write_text(paths["markdown"], render_markdown(result, {k: v.name for k, v in plots.items()}))
    atomic_write_text(paths["html"], render_html(result, plots))
    if save_features:
        buf = io.BytesIO()
        np.savez(buf, real=real_feats, fake=fake_feats)
        paths["features"] = out / "features.npz"
        atomic_write_bytes(paths["features"], buf.getvalue())
    return {**paths, **{f"plot:{k}": v for k, v in plots.items()}}
