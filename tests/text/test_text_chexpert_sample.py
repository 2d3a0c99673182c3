"""The CheXpert labeler's own sample output, cell by cell (acceptance: 56/56).

Expected values were hand-copied from ``labeled_reports.csv`` of the stanfordmlgroup/chexpert-labeler
repository (its output for the 4 reports of ``sample_reports.csv``), read through the project's code
search tool; blank cells are written as ``None``. Column order there differs from ours (Lung Lesion
comes before Lung Opacity), so cells are matched by name.
"""

from __future__ import annotations

import math

import pytest

from unicxr.labels import FINDINGS
from unicxr.text.labeler import RuleLabeler

SAMPLE: list[tuple[str, dict[str, float]]] = [
    (
        "Heart size normal and lungs are clear. No edema or pneumonia. No effusion",
        {"No Finding": 1.0, "Cardiomegaly": 0.0, "Edema": 0.0, "Pneumonia": 0.0, "Pleural Effusion": 0.0},
    ),
    (
        "1. Left pleural effusion with adjacent atelectasis. Right effusion is also present.\n\n"
        "2. Cardiomegaly without overt edema.",
        {"Cardiomegaly": 1.0, "Edema": 0.0, "Atelectasis": 1.0, "Pleural Effusion": 1.0},
    ),
    (
        "Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation.",
        {"Lung Opacity": 1.0, "Consolidation": -1.0, "Atelectasis": -1.0},
    ),
    (
        "1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.",
        {"Cardiomegaly": 1.0},
    ),
]


def _agree(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_chexpert_sample_56_of_56():
    lab = RuleLabeler()
    ok, bad = 0, []
    for text, expected in SAMPLE:
        out = lab(text)
        for i, name in enumerate(FINDINGS):
            e = expected.get(name, math.nan)
            if _agree(float(out[i]), e):
                ok += 1
            else:
                bad.append(f"{text[:40]!r} {name}: expected {e}, got {out[i]}")
    print(f"\nCheXpert sample: {ok}/{len(SAMPLE) * len(FINDINGS)} cells agree")
    assert ok == 56, bad


@pytest.mark.parametrize("convention", ["unicxr"])
def test_old_convention_differs_only_in_zeros(convention):
    """The earlier output writes 0 where CheXpert leaves cells blank (that cost 8 of the 56 cells)."""
    lab = RuleLabeler(convention=convention)
    diff = 0
    for text, expected in SAMPLE:
        out = lab(text)
        for i, name in enumerate(FINDINGS):
            e = expected.get(name, math.nan)
            if not _agree(float(out[i]), e):
                assert math.isnan(e) and out[i] == 0.0, (text, name)
                diff += 1
    assert diff > 0
