"""Per-finding classification metrics: AUROC, AUPRC, F1 at thresholds, calibration (ECE).

Pure NumPy over (N, 14) probabilities and targets (1/0, NaN = masked), shared by the classifier
task's validation, ``unicxr eval findings`` and the report generator's auxiliary head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from unicxr.labels import FINDINGS
from unicxr.utils.metrics import auprc, auroc, best_f1_threshold, expected_calibration_error, f1_at

__all__ = ["finding_table", "choose_thresholds", "summary_metrics"]


def _key(name: str) -> str:
    return name.lower().replace(" ", "_")


def choose_thresholds(probs: np.ndarray, targets: np.ndarray, default: float = 0.5, min_pos: int = 10) -> list[float]:
    """Per-finding F1-maximising thresholds (``default`` where fewer than ``min_pos`` positives)."""
    out = []
    for j in range(probs.shape[1]):
        y = targets[:, j]
        ok = np.isfinite(y)
        if int((y[ok] == 1).sum()) < min_pos:
            out.append(float(default))
        else:
            out.append(best_f1_threshold(y[ok], probs[ok, j], default))
    return out


def finding_table(
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: Sequence[float] | None = None,
    names: Sequence[str] = FINDINGS,
    n_bins: int = 10,
) -> list[dict[str, Any]]:
    """One row per finding: ``finding``, ``n``, ``positives``, ``auroc``, ``auprc``, ``f1`` (at the
    threshold), ``threshold``, ``ece`` (NaN where undefined)."""
    th = list(thresholds) if thresholds is not None else [0.5] * probs.shape[1]
    rows = []
    for j, name in enumerate(names):
        y = targets[:, j]
        ok = np.isfinite(y)
        yy, pp = y[ok], probs[ok, j]
        rows.append({
            "finding": name,
            "n": int(ok.sum()),
            "positives": int((yy == 1).sum()),
            "auroc": auroc(yy, pp),
            "auprc": auprc(yy, pp),
            "f1": f1_at(yy, pp, th[j]) if (yy == 1).any() else float("nan"),
            "threshold": float(th[j]),
            "ece": expected_calibration_error(yy, pp, n_bins),
        })
    return rows


def summary_metrics(
    probs: np.ndarray, targets: np.ndarray, thresholds: Sequence[float] | None = None, min_count: int = 20
) -> dict[str, float]:
    """Flat metrics: ``macro_auroc`` / ``macro_auprc`` / ``macro_f1`` over findings with >= ``min_count``
    positives (and negatives), ``n_macro_findings``, ``ece`` (all finding entries pooled),
    ``macro_ece``, and ``auroc_<finding>`` / ``auprc_<finding>`` / ``f1_<finding>`` / ``ece_<finding>``."""
    rows = finding_table(probs, targets, thresholds)
    out: dict[str, float] = {}
    used = [r for r in rows if min(r["positives"], r["n"] - r["positives"]) >= min_count and math.isfinite(r["auroc"])]
    for m in ("auroc", "auprc", "f1", "ece"):
        out[f"macro_{m}"] = float(np.mean([r[m] for r in used])) if used else float("nan")
        for r in rows:
            out[f"{m}_{_key(r['finding'])}"] = r[m]
    out["n_macro_findings"] = float(len(used))
    ok = np.isfinite(targets)
    out["ece"] = expected_calibration_error(targets[ok], probs[ok])
    return out
