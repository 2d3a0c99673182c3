"""Per-finding classification metrics: AUROC, AUPRC, F1 at thresholds, calibration (ECE).

Pure NumPy over (N, 14) probabilities and targets (1/0, NaN = masked), shared by the classifier
task's validation, ``unicxr eval findings`` and the report generator's auxiliary head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from unicxr.labels import FINDINGS
from unicxr.utils.metrics import auprc, auroc, best_f1_threshold, expected_calibration_error, f1_at

__all__ = ["finding_table", "choose_thresholds", "summary_metrics", "ThresholdObjective"]


def _key(name: str) -> str:
    return name.lower().replace(" ", "_")


ThresholdObjective = Literal["f1", "micro_f1"]


def choose_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    default: float = 0.5,
    min_pos: int = 10,
    objective: ThresholdObjective = "f1",
) -> list[float]:
    """Decision thresholds for (N, F) probabilities and targets (1/0, NaN = masked).

    ``f1``: each finding's own F1-maximising threshold (``default`` where fewer than ``min_pos``
    positives). ``micro_f1``: thresholds that together maximise the F1 pooled over all findings (the
    CE micro-F1 of report generation): a weak finding's own-F1 optimum is a low threshold that floods
    the pooled count with false positives, so here it is set higher. Coordinate ascent from
    ``default`` over each finding's probability quantiles, a few sweeps.
    """
    if objective == "micro_f1":
        return _micro_f1_thresholds(probs, targets, default)
    out = []
    for j in range(probs.shape[1]):
        y = targets[:, j]
        ok = np.isfinite(y)
        if int((y[ok] == 1).sum()) < min_pos:
            out.append(float(default))
        else:
            out.append(best_f1_threshold(y[ok], probs[ok, j], default))
    return out


def _micro_f1_thresholds(probs: np.ndarray, targets: np.ndarray, default: float, sweeps: int = 3) -> list[float]:
    n_f = probs.shape[1]
    grids, counts = [], []  # per finding: candidate thresholds (K,), (TP, FP, FN) at each (K, 3)
    for j in range(n_f):
        y = targets[:, j]
        ok = np.isfinite(y)
        yy, pp = y[ok] == 1, probs[ok, j]
        cand = np.unique(np.concatenate([[default, 1.0 + 1e-6], np.quantile(pp, np.linspace(0, 1, 101))]) if pp.size else [default])
        pred = pp[None, :] >= cand[:, None]
        tp = (pred & yy[None]).sum(1)
        fp = (pred & ~yy[None]).sum(1)
        fn = yy.sum() - tp
        grids.append(cand)
        counts.append(np.stack([tp, fp, fn], 1).astype(np.float64))
    pick = [int(np.argmin(np.abs(g - default))) for g in grids]
    for _ in range(sweeps):
        changed = False
        for j in range(n_f):
            others = sum(counts[k][pick[k]] for k in range(n_f) if k != j)
            tot = others[None, :] + counts[j]
            f1 = 2 * tot[:, 0] / np.maximum(2 * tot[:, 0] + tot[:, 1] + tot[:, 2], 1e-12)
            best = int(np.argmax(f1 + 1e-12 * -np.abs(grids[j] - default)))  # ties: nearest the default
            if f1[best] > f1[pick[j]] + 1e-12:
                pick[j], changed = best, True
        if not changed:
            break
    return [float(min(grids[j][pick[j]], 1.0)) for j in range(n_f)]


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
