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

__all__ = ["auroc", "binary_targets", "alignment_from_probabilities", "cooccurrence_alignment", "alignment"]


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


def _subgroup_auroc(y: np.ndarray, p: np.ndarray, pos: np.ndarray) -> float:
    """AUROC of scores ``p`` (N,) for the positives in boolean mask ``pos`` against every negative of ``y``."""
    keep = pos | (y == 0)
    return auroc(y[keep], p[keep])


def _bootstrap_group_aurocs(
    neg: np.ndarray, groups: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """AUROC of each positive-score group against the negative scores ``neg`` on ``n_boot`` resamples
    (negatives and each group resampled separately; the negatives' resample is shared by the groups).

    Vectorised: a positive's share of lower-scored negatives (ties half) is a cumulative sum of the
    resampled negative counts at its place in the sorted negatives. Returns (n_boot, len(groups)).
    """
    order = np.sort(neg)
    counts = rng.multinomial(neg.size, np.full(neg.size, 1.0 / neg.size), size=n_boot)  # (B, n_neg)
    cum = np.concatenate([np.zeros((n_boot, 1)), np.cumsum(counts, axis=1)], axis=1)  # (B, n_neg + 1)
    out = np.empty((n_boot, len(groups)))
    for i, g in enumerate(groups):
        lo, hi = np.searchsorted(order, g, "left"), np.searchsorted(order, g, "right")
        share = (cum[:, lo] + 0.5 * (cum[:, hi] - cum[:, lo])) / neg.size  # (B, n_pos)
        w = rng.multinomial(g.size, np.full(g.size, 1.0 / g.size), size=n_boot)  # (B, n_pos)
        out[:, i] = (w * share).sum(axis=1) / g.size
    return out


def cooccurrence_alignment(
    fake_probs: Any,
    fake_labels: Any,
    real_probs: Any,
    real_labels: Any,
    *,
    findings: Sequence[str] = FINDINGS,
    min_group: int = 5,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Alignment of finding F split by whether another finding G is prompted beside it.

    For every pair (F, G) where at least ``min_group`` prompted F-positives also carry G and at least
    ``min_group`` do not, the F-AUROC of generated images is computed twice against all F-negatives:
    over the F-positives *with* G and over those *without* G. The same split of the real images (true
    labels) gives the encoder's own AUROC in each group, so a drop that the real images share is the
    judge's, not the generator's. ``drop_fake = auroc_fake_without - auroc_fake_with``; its CI resamples
    the with-group, the without-group and the negatives separately.

    Args:
        fake_probs, real_probs: (M, F) / (N, F) encoder probabilities.
        fake_labels, real_labels: (M, F) prompted / (N, F) true labels (1/0/-1/blank as in
            :func:`binary_targets`).

    Returns:
        Rows ``{finding, with, n_with, n_without, n_neg, auroc_fake_with, auroc_fake_without, drop_fake,
        drop_fake_ci, auroc_real_with, auroc_real_without, n_real_with}``, largest ``drop_fake`` first;
        the real AUROCs are NaN where the real set has fewer than ``min_group`` such positives.
    """
    fp = np.asarray(fake_probs, dtype=np.float64)
    rp = np.asarray(real_probs, dtype=np.float64)
    fy = binary_targets(fake_labels)
    ry = binary_targets(real_labels)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for j, name in enumerate(findings):
        neg = (fy[:, j] == 0) & np.isfinite(fp[:, j])
        pos = (fy[:, j] == 1) & np.isfinite(fp[:, j])
        rpos = ry[:, j] == 1
        if neg.sum() < min_group:
            continue
        for k, other in enumerate(findings):
            p_with, p_without = pos & (fy[:, k] == 1), pos & (fy[:, k] != 1)
            if k == j or min(p_with.sum(), p_without.sum()) < min_group:
                continue
            a_w = _subgroup_auroc(fy[:, j], fp[:, j], p_with)
            a_wo = _subgroup_auroc(fy[:, j], fp[:, j], p_without)
            r_with, r_without = rpos & (ry[:, k] == 1), rpos & (ry[:, k] != 1)
            enough_real = min(r_with.sum(), r_without.sum()) >= min_group
            row: dict[str, Any] = {
                "finding": name,
                "with": other,
                "n_with": int(p_with.sum()),
                "n_without": int(p_without.sum()),
                "n_neg": int(neg.sum()),
                "auroc_fake_with": a_w,
                "auroc_fake_without": a_wo,
                "drop_fake": a_wo - a_w,
                "n_real_with": int(r_with.sum()),
                "auroc_real_with": _subgroup_auroc(ry[:, j], rp[:, j], r_with) if enough_real else float("nan"),
                "auroc_real_without": _subgroup_auroc(ry[:, j], rp[:, j], r_without) if enough_real else float("nan"),
            }
            if n_boot:
                reps = _bootstrap_group_aurocs(fp[neg, j], [fp[p_with, j], fp[p_without, j]], n_boot, rng)
                drop = reps[:, 1] - reps[:, 0]
                row["drop_fake_ci"] = [float(np.quantile(drop, alpha / 2)), float(np.quantile(drop, 1 - alpha / 2))]
            rows.append(row)
    rows.sort(key=lambda r: -r["drop_fake"] if np.isfinite(r["drop_fake"]) else np.inf)
    return rows


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
