"""Small statistics shared across layers (training-time validation, evaluation, benchmarks)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["auroc", "bootstrap_aurocs", "paired_auroc_deltas", "auprc", "f1_at", "best_f1_threshold", "expected_calibration_error"]


def auroc(y: Any, score: Any) -> float:
    """Area under the ROC curve of scores for binary targets (NaN targets ignored; ties averaged).

    Returns NaN when only one class is present. Equals the Mann-Whitney U statistic / (P * N).
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep], s[keep]
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_aurocs(y: Any, score: Any, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """AUROC of every column on ``n_boot`` shared resamples of the rows (paired across columns, so a
    mean over columns has a valid interval too).

    Args:
        y: (N, F) binary targets (NaN ignored per column); score: (N, F) scores.

    Returns:
        (n_boot, F) replicates; NaN where a resample lacks a class.
    """
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.full((n_boot, y.shape[1]), np.nan)
    for b in range(n_boot):
        idx = rng.integers(0, y.shape[0], y.shape[0])
        for j in range(y.shape[1]):
            out[b, j] = auroc(y[idx, j], s[idx, j])
    return out


def paired_auroc_deltas(y: Any, before: Any, after: Any, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of AUROC(after) − AUROC(before) per column, both on the same resamples of the
    rows (paired: the change of one scorer on the same images, e.g. an encoder on originals and on their
    reconstructions).

    Args:
        y: (N, F) binary targets (NaN ignored per column); before, after: (N, F) scores.

    Returns:
        (n_boot, F) replicates; NaN where a resample lacks a class.
    """
    # the same seed and row count draw the same resamples in both calls
    return bootstrap_aurocs(y, after, n_boot, seed) - bootstrap_aurocs(y, before, n_boot, seed)


def auprc(y: Any, score: Any) -> float:
    """Average precision (area under the precision-recall curve, step-wise; NaN targets ignored).

    Returns NaN when there is no positive.
    """
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep] == 1, s[keep]
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    tp = np.cumsum(y)
    # evaluate only at the last index of each run of tied scores
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp_at, n_at = tp[last], last + 1
    precision = tp_at / n_at
    recall_gain = np.diff(np.r_[0, tp_at]) / n_pos
    return float((precision * recall_gain).sum())


def f1_at(y: Any, score: Any, threshold: float) -> float:
    """F1 of ``score >= threshold`` against binary targets (NaN targets ignored; 0 when undefined)."""
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    keep = np.isfinite(y)
    pos, pred = y[keep] == 1, s[keep] >= threshold
    tp = int((pos & pred).sum())
    denom = int(pos.sum()) + int(pred.sum())
    return 2.0 * tp / denom if denom else 0.0


def best_f1_threshold(y: Any, score: Any, default: float = 0.5) -> float:
    """Threshold maximising F1 on (validation) data; ``default`` when there is no positive.

    The threshold is placed midway between the chosen score and the next lower one, so it generalises
    a little better than the exact score.
    """
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep] == 1, s[keep]
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return float(default)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    tp = np.cumsum(y)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    f1 = 2 * tp[last] / (n_pos + last + 1)
    j = int(np.argmax(f1))
    cut = last[j]
    nxt = s[cut + 1] if cut + 1 < len(s) else s[cut] - 1e-3
    return float((s[cut] + nxt) / 2.0)


def expected_calibration_error(y: Any, prob: Any, n_bins: int = 10) -> float:
    """ECE: sum over equal-width probability bins of |mean(y) - mean(p)| × bin fraction (NaN ignored)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    if len(y) == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(float(y[m].mean()) - float(p[m].mean()))
    return float(ece)
