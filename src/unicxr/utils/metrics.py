"""Small statistics shared across layers (training-time validation, evaluation, benchmarks)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["auroc"]


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
