"""Template reports: 14 finding labels → a fixed ``FINDINGS: ... IMPRESSION: ...`` text.

The baseline a learned report generator is compared with (a classifier's labels written with one
fixed sentence per finding), and the report ``unicxr report`` writes for classifier-only models.
Every sentence is read back correctly by :func:`unicxr.text.label_reports`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unicxr.labels import FINDINGS

__all__ = ["POSITIVE_SENTENCES", "NEGATIVE_SENTENCES", "template_report", "template_reports"]

POSITIVE_SENTENCES: dict[str, str] = {
    "Enlarged Cardiomediastinum": "The cardiomediastinal silhouette is enlarged.",
    "Cardiomegaly": "The heart is enlarged.",
    "Lung Opacity": "There is an opacity in the lung.",
    "Lung Lesion": "There is a pulmonary nodule.",
    "Edema": "There is pulmonary edema.",
    "Consolidation": "There is focal consolidation.",
    "Pneumonia": "Findings are consistent with pneumonia.",
    "Atelectasis": "There is atelectasis.",
    "Pneumothorax": "There is a pneumothorax.",
    "Pleural Effusion": "There is a pleural effusion.",
    "Pleural Other": "There is pleural thickening.",
    "Fracture": "There is a rib fracture.",
    "Support Devices": "Support devices are in place.",
}
# negatives stated in a normal template (the usual checklist of a chest radiograph report)
NEGATIVE_SENTENCES: dict[str, str] = {
    "Cardiomegaly": "The heart is normal in size.",
    "Edema": "No pulmonary edema.",
    "Consolidation": "No focal consolidation.",
    "Pneumothorax": "No pneumothorax.",
    "Pleural Effusion": "No pleural effusion.",
}


def template_report(labels: Sequence[float] | np.ndarray) -> str:
    """One report from 14 labels (1 = present; anything else = absent).

    Returns:
        ``"FINDINGS: <positive sentences> <checklist negatives> IMPRESSION: <positives or 'No acute
        cardiopulmonary abnormality.'>"``.
    """
    lab = np.asarray(labels, dtype=np.float32).reshape(-1)
    if lab.shape[0] != len(FINDINGS):
        raise ValueError(f"expected {len(FINDINGS)} labels, got {lab.shape[0]}")
    present = [f for j, f in enumerate(FINDINGS) if f != "No Finding" and lab[j] == 1]
    pos = [POSITIVE_SENTENCES[f] for f in present]
    neg = [s for f, s in NEGATIVE_SENTENCES.items() if f not in present]
    findings = " ".join(pos + neg)
    impression = " ".join(pos) if pos else "No acute cardiopulmonary abnormality."
    return f"FINDINGS: {findings} IMPRESSION: {impression}"


def template_reports(labels: np.ndarray) -> list[str]:
    """Reports for (N, 14) labels."""
    return [template_report(row) for row in np.asarray(labels)]
