"""Label tokens: the 14 findings of an auxiliary classifier head, fed to a text decoder as tokens.

Shared by the report generator (:class:`~unicxr.models.report_generator.CXRReportGenerator`, as
memory tokens) and the unified model (:class:`~unicxr.models.unified.UnifiedModel`, as understanding
tokens between the image tokens and the text). Each label token mixes a learned "absent" and
"present" embedding per finding by the value ``p`` in [0, 1] it carries:

* ``soft``: the head's (detached) sigmoid probabilities;
* ``hard``: the head's 0/1 decisions at per-finding thresholds (chosen on validation);
* teacher forcing: where the given ``labels`` are not NaN, their value replaces the head's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["threshold_tensor", "label_token_values", "label_token_embeddings", "teacher_labels"]


def threshold_tensor(thresholds: Sequence[float] | None, n: int) -> torch.Tensor:
    """(n,) float32 decision thresholds (0.5 where none were chosen)."""
    return torch.tensor(tuple(thresholds) if thresholds else (0.5,) * n, dtype=torch.float32)


def label_token_values(
    aux: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    hard: bool = False,
    thresholds: Sequence[float] | None = None,
) -> torch.Tensor:
    """Values the label tokens carry, (B, F) in [0, 1].

    Args:
        aux: (B, F) aux head logits (detached here: the text loss does not train the head).
        labels: optional (B, F) teacher-forced values; NaN = use the head's value.
        hard: 0/1 decisions at ``thresholds`` (F,) (None: 0.5) instead of probabilities.
    """
    p = torch.sigmoid(aux.detach().float())
    if hard:
        p = (p >= threshold_tensor(thresholds, p.shape[-1]).to(p.device)).float()
    if labels is not None:
        p = torch.where(torch.isnan(labels), p, labels.to(p.device).float())
    return p


def label_token_embeddings(values: torch.Tensor, label_emb: torch.Tensor) -> torch.Tensor:
    """values (B, F) in [0, 1], label_emb (2, F, D) [absent, present] → tokens (B, F, D)."""
    p = values.to(label_emb.dtype)[..., None]
    return p * label_emb[1] + (1 - p) * label_emb[0]


def teacher_labels(target: torch.Tensor, p: float) -> torch.Tensor | None:
    """Teacher-forcing values for training: (B, F) true findings ``target`` (NaN where unknown) for a
    random share ``p`` of the items (global torch RNG), NaN for the rest; None when ``p`` is 0."""
    if p <= 0:
        return None
    keep = torch.rand(target.shape[0], 1, device=target.device) < p
    return torch.where(keep, target, torch.full_like(target, float("nan")))
