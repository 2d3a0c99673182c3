"""Prompt alignment: does a generated image show the findings it was prompted with?

The evaluation encoder scores each generated image; with the *prompted* labels as ground truth the
per-finding AUROC on generated images is compared with the encoder's AUROC on real test images (true
labels). ``ratio = AUROC_fake / AUROC_real``: 1 means generated images carry the finding as
recognisably as real ones; 0.5 / AUROC_real means the prompt had no visible effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unicxr.labels import FINDINGS, UncertainPolicy, apply_policy
from unicxr.utils.metrics import auroc

__all__ = ["auroc", "binary_targets", "alignment_from_probabilities", "alignment"]


def binary_targets(labels: Any, policy: UncertainPolicy | str = UncertainPolicy.IGNORE) -> np.ndarray:
    """(N, 14) labels (1/0/-1/NaN) → binary targets: blank = negative, uncertain per ``policy`` (default
    ignored = NaN)."""
    return apply_policy(np.asarray(labels, dtype=np.float32), policy, blank_as_negative=True)


def _per_finding(
    y: np.ndarray, p: np.ndarray, j: int, n_boot: int, rng: np.random.Generator
) -> tuple[float, np.ndarray, int, int]:
    keep = np.isfinite(y[:, j]) & np.isfinite(p[:, j])
    yj, pj = y[keep, j], p[keep, j]
    n_pos = int((yj == 1).sum())
    n_neg = int((yj == 0).sum())
    val = auroc(yj, pj)
    reps = np.full(n_boot, np.nan)
    if np.isfinite(val):
        for b in range(n_boot):
            idx = rng.integers(0, yj.size, yj.size)
            reps[b] = auroc(yj[idx], pj[idx])
    return val, reps, n_pos, n_neg


def alignment_from_probabilities(
    fake_probs: Any,
    fake_labels: Any,
    real_probs: Any,
    real_labels: Any,
    *,
    findings: Sequence[str] = FINDINGS,
    min_positives: int = 5,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Per-finding AUROC on generated vs real images and their ratio, with bootstrap CIs.

    Args:
        fake_probs: (M, F) encoder probabilities of generated images.
        fake_labels: (M, F) prompted labels (1 = prompted positive; 0/blank = not prompted).
        real_probs: (N, F) encoder probabilities of real test images.
        real_labels: (N, F) true labels (1/0/-1/blank; uncertain ignored, blank negative).
        min_positives: a finding needs this many positives *and* negatives in a set to be scored.
        n_boot: bootstrap replicates (fake and real resampled independently).

    Returns:
        ``{"per_finding": {name: {auroc_fake, auroc_real, ratio, ci..., n_pos_fake, ...}},
        "macro": {auroc_fake, auroc_real, ratio}, "findings_scored": [...]}``; the macro averages run over
        findings scored in both sets.
    """
    fp = np.asarray(fake_probs, dtype=np.float64)
    rp = np.asarray(real_probs, dtype=np.float64)
    fy = binary_targets(fake_labels)
    ry = binary_targets(real_labels)
    f = len(findings)
    for name, arr in (("fake_probs", fp), ("fake_labels", fy), ("real_probs", rp), ("real_labels", ry)):
        if arr.ndim != 2 or arr.shape[1] != f:
            raise ValueError(f"{name}: expected shape (N, {f}), got {arr.shape}")
    if fp.shape[0] != fy.shape[0] or rp.shape[0] != ry.shape[0]:
        raise ValueError("probabilities and labels must have the same number of rows")
    rng = np.random.default_rng(seed)
    per: dict[str, dict[str, Any]] = {}
    scored: list[str] = []
    macro_f, macro_r, macro_ratio_reps = [], [], []
    for j, name in enumerate(findings):
        af, reps_f, pf, nf = _per_finding(fy, fp, j, n_boot, rng)
        ar, reps_r, pr, nr = _per_finding(ry, rp, j, n_boot, rng)
        entry: dict[str, Any] = {
            "auroc_fake": af,
            "auroc_real": ar,
            "n_pos_fake": pf,
            "n_neg_fake": nf,
            "n_pos_real": pr,
            "n_neg_real": nr,
        }
        ok_f = min(pf, nf) >= min_positives and np.isfinite(af)
        ok_r = min(pr, nr) >= min_positives and np.isfinite(ar)
        if not (ok_f and ok_r):
            entry["skipped"] = f"fewer than {min_positives} positives or negatives"
            entry["ratio"] = float("nan")
            per[name] = entry
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_reps = reps_f / reps_r
        entry["ratio"] = af / ar if ar > 0 else float("nan")
        if n_boot:
            for key, reps in (("auroc_fake", reps_f), ("auroc_real", reps_r), ("ratio", ratio_reps)):
                r = reps[np.isfinite(reps)]
                if r.size:
                    entry[f"{key}_ci"] = [
                        float(np.quantile(r, alpha / 2)),
                        float(np.quantile(r, 1 - alpha / 2)),
                    ]
        per[name] = entry
        scored.append(name)
        macro_f.append(af)
        macro_r.append(ar)
        macro_ratio_reps.append(ratio_reps)
    macro: dict[str, Any] = {"auroc_fake": float("nan"), "auroc_real": float("nan"), "ratio": float("nan")}
    if scored:
        macro = {
            "auroc_fake": float(np.mean(macro_f)),
            "auroc_real": float(np.mean(macro_r)),
            "ratio": float(np.mean(np.array(macro_f) / np.array(macro_r))),
        }
        if n_boot:
            reps = np.nanmean(np.stack(macro_ratio_reps), axis=0)
            reps = reps[np.isfinite(reps)]
            if reps.size:
                macro["ratio_ci"] = [
                    float(np.quantile(reps, alpha / 2)),
                    float(np.quantile(reps, 1 - alpha / 2)),
                ]
    return {"per_finding": per, "macro": macro, "findings_scored": scored, "n_boot": n_boot, "seed": seed}


def alignment(
    extractor: Any,
    fake_images: Any,
    fake_labels: Any,
    real_images: Any,
    real_labels: Any,
    *,
    batch_size: int = 32,
    progress: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score images with ``extractor.probabilities`` (a :class:`unicxr.eval.features.FeatureExtractor`)
    and compute :func:`alignment_from_probabilities`. Images: (N, 1, H, W) tensors or iterables."""
    from unicxr.eval.features import extract_features

    if not extractor.has_probabilities:
        raise ValueError(f"{extractor.name}: this feature extractor has no finding probabilities")
    _, pf = extract_features(
        extractor, fake_images, batch_size=batch_size, probabilities=True, progress=progress
    )
    _, pr = extract_features(
        extractor, real_images, batch_size=batch_size, probabilities=True, progress=progress
    )
    out = alignment_from_probabilities(pf, fake_labels, pr, real_labels, **kwargs)
    out["encoder"] = extractor.name
    return out
