"""Fractures, nodules and effusions are drawn where and how the report says (visible, plausible)."""

from __future__ import annotations

import numpy as np

from unicxr.labels import FINDINGS
from unicxr.phantom.findings import fracture_ribs
from unicxr.phantom.simulate import simulate


def test_fracture_kind_parsing() -> None:
    assert fracture_ribs("rib3x1") == (3, 1, False)
    assert fracture_ribs("rib5x3h") == (5, 3, True)


def test_fracture_breaks_the_reported_ribs_over_the_lung() -> None:
    j = FINDINGS.index("Fracture")
    healing = 0
    for seed in range(8):
        base = simulate(seed, 128, findings={}, view="PA", masks=True)
        case = simulate(seed, 128, findings={"Fracture": "severe"}, view="PA", masks=False)
        assert case.labels[j] == 1.0
        assert "rib" in case.sections["findings"]
        healing += "healing" in case.sections["findings"].lower()
        diff = np.abs(case.image - base.image)
        r, c = np.unravel_index(np.argmax(diff), diff.shape)
        # a clear local change (lucent line, step or callus) that lies over the lung, not the heart
        assert diff.max() > 0.08
        assert base.masks["lungs"][r, c] and not base.masks["heart"][r, c]
        side = case.params["laterality_fracture"]
        assert (c < 64) == (side == "right")
    assert 0 < healing < 8


def test_lesions_project_over_lung_not_heart() -> None:
    for seed in range(10):
        case = simulate(seed, 128, findings={"Lung Lesion": "moderate"}, view="PA")
        les = case.masks["lesion"]
        assert les.sum() >= 20  # at least ~5 px across at 128 px
        assert (les & case.masks["heart"]).sum() <= 0.1 * les.sum()
        assert (les & case.masks["lungs"]).sum() >= 0.8 * les.sum()


def test_effusion_upper_border_is_graded() -> None:
    base = simulate(7, 128, findings={}, view="PA", masks=False)
    case = simulate(7, 128, findings={"Pleural Effusion": "severe"}, view="PA")
    m = case.masks["effusion"]
    cols = np.nonzero(m.any(axis=0))[0]
    c = int(cols.min() + 0.2 * (cols.max() - cols.min()))  # over the image-left lung, lateral half
    d = case.image[:, c] - base.image[:, c]
    top = int(np.nonzero(m[:, c])[0].min())
    # the added density rises over several pixels above the mask's top, not in one step
    ramp = d[max(top - 12, 0) : top + 12]
    steps = np.diff(ramp)
    assert ramp.max() - ramp.min() > 0.1
    assert steps.max() < 0.5 * (ramp.max() - ramp.min())
