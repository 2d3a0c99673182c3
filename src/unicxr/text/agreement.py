"""Agreement of labeler output with reference labels (1 / 0 / -1 / blank), per class and micro-averaged.

The mention-level view used for labeler validation (CheXpert/CheXbert style): each of the three
non-blank classes (positive, negative, uncertain) is scored as its own detection task over all
(report, finding) cells; blank is the background. The micro-F1 pools the three classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unicxr.labels import FINDINGS

__all__ = ["ClassScore", "Agreement", "label_agreement"]

_CLASSES = (("positive", 1.0), ("negative", 0.0), ("uncertain", -1.0))


@dataclass
class ClassScore:
    """Counts and scores of one class."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else float("nan")

    @property
    def support(self) -> int:
        return self.tp + self.fn


@dataclass
class Agreement:
    """Per-class scores, their micro pool, exact cell accuracy and the disagreeing cells."""

    classes: dict[str, ClassScore]
    micro: ClassScore
    accuracy: float
    mismatches: list[tuple[int, str, float, float]] = field(default_factory=list)  # (row, finding, pred, ref)

    def summary(self) -> str:
        """One line per class plus the micro F1 (for logs and reports)."""
        lines = [
            f"{k:9s} support={v.support:6d} P={v.precision:.4f} R={v.recall:.4f} F1={v.f1:.4f}"
            for k, v in self.classes.items()
        ]
        lines.append(f"micro     F1={self.micro.f1:.4f}  cell accuracy={self.accuracy:.4f}")
        return "\n".join(lines)


def label_agreement(pred: np.ndarray, ref: np.ndarray, include_no_finding: bool = True) -> Agreement:
    """Compare predicted and reference label arrays (N, 14) with values 1/0/-1/NaN.

    Args:
        pred: labeler output (N, 14).
        ref: reference labels (N, 14).
        include_no_finding: score the derived No Finding column too.

    Returns:
        :class:`Agreement` (mismatches list every disagreeing cell, blank counted as a value).
    """
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 2 or p.shape[1] != len(FINDINGS):
        raise ValueError(f"expected two (N, 14) arrays, got {p.shape} and {r.shape}")
    cols = list(range(len(FINDINGS))) if include_no_finding else list(range(1, len(FINDINGS)))
    p, r = p[:, cols], r[:, cols]
    classes: dict[str, ClassScore] = {}
    tp = fp = fn = 0
    for name, v in _CLASSES:
        pi, ri = p == v, r == v
        c = ClassScore(int(np.sum(pi & ri)), int(np.sum(pi & ~ri)), int(np.sum(~pi & ri)))
        classes[name] = c
        tp, fp, fn = tp + c.tp, fp + c.fp, fn + c.fn
    same = (p == r) | (np.isnan(p) & np.isnan(r))
    mism = [(int(i), FINDINGS[cols[j]], float(p[i, j]), float(r[i, j])) for i, j in zip(*np.nonzero(~same), strict=True)]
    return Agreement(classes, ClassScore(tp, fp, fn), float(same.mean()) if same.size else float("nan"), mism)
