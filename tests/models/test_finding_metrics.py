"""Thresholds chosen on validation probabilities: per-finding F1 vs pooled (micro) F1."""

from __future__ import annotations

import numpy as np

from unicxr.models.finding_metrics import choose_thresholds
from unicxr.utils.metrics import f1_at


def _micro_f1(probs: np.ndarray, targets: np.ndarray, th: list[float]) -> float:
    tp = fp = fn = 0
    for j, t in enumerate(th):
        ok = np.isfinite(targets[:, j])
        y, p = targets[ok, j] == 1, probs[ok, j] >= t
        tp += int((p & y).sum())
        fp += int((p & ~y).sum())
        fn += int((~p & y).sum())
    return 2 * tp / (2 * tp + fp + fn)


def _data(seed: int = 0, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.stack([rng.random(n) < 0.3, rng.random(n) < 0.25, rng.random(n) < 0.05], 1).astype(np.float64)
    # two good findings, one rare and nearly uninformative
    p = np.stack([
        np.clip(0.75 * y[:, 0] + rng.normal(0.15, 0.15, n), 0, 1),
        np.clip(0.6 * y[:, 1] + rng.normal(0.2, 0.18, n), 0, 1),
        np.clip(0.05 * y[:, 2] + rng.normal(0.1, 0.05, n), 0, 1),
    ], 1)
    y[rng.random((n, 3)) < 0.02] = np.nan  # masked entries are ignored
    return p, y


def test_micro_thresholds_beat_per_finding_thresholds_on_pooled_f1():
    p, y = _data()
    per = choose_thresholds(p, y, objective="f1", min_pos=5)
    micro = choose_thresholds(p, y, objective="micro_f1")
    assert len(micro) == 3 and all(0 <= t <= 1 for t in micro)
    # the weak rare finding's own optimum is a low threshold; pooled F1 raises it
    assert micro[2] > per[2]
    assert _micro_f1(p, y, micro) >= _micro_f1(p, y, per)
    # and the pooled optimum holds on fresh data from the same distribution (not just on the tuning set)
    p2, y2 = _data(seed=1)
    assert _micro_f1(p2, y2, micro) > _micro_f1(p2, y2, per)


def test_per_finding_thresholds_maximise_each_f1():
    p, y = _data()
    per = choose_thresholds(p, y, objective="f1", min_pos=5)
    for j in range(2):
        ok = np.isfinite(y[:, j])
        best = f1_at(y[ok, j], p[ok, j], per[j])
        assert all(best >= f1_at(y[ok, j], p[ok, j], t) - 1e-9 for t in np.linspace(0.05, 0.95, 19))
