"""simulate(): shapes, determinism and that each finding changes the image where it should."""

from __future__ import annotations

import numpy as np
import pytest

from unicxr.labels import FINDINGS
from unicxr.phantom import MASK_NAMES, PhantomConfig, simulate
from unicxr.phantom.config import parse_prevalence
from unicxr.utils.errors import UnicxrError


def test_case_shapes_ranges_and_determinism() -> None:
    a = simulate(3, 96)
    b = simulate(3, 96)
    c = simulate(4, 96)
    assert a.image.shape == (96, 96) and a.image.dtype == np.float32
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0 and a.image.std() > 0.1
    assert a.labels.shape == (len(FINDINGS),) and a.labels.dtype == np.float32
    assert np.array_equal(a.image, b.image) and a.report == b.report
    assert np.array_equal(a.labels, b.labels, equal_nan=True)
    assert not np.array_equal(a.image, c.image)
    assert set(a.masks) == set(MASK_NAMES)
    assert all(m.dtype == bool and m.shape == (96, 96) for m in a.masks.values())
    assert "FINDINGS:" in a.report and "IMPRESSION:" in a.report
    assert "severity_cardiomegaly" in a.params and "acq_view" in a.params


def test_anatomy_contrast_lungs_dark_heart_bright() -> None:
    for seed in range(4):
        c = simulate(seed, 128, findings={}, view="PA")
        assert c.labels[0] == 1.0
        lungs, heart = c.masks["lungs"], c.masks["heart"]
        assert lungs.mean() > 0.2 and heart.mean() > 0.04
        assert c.image[lungs & ~heart].mean() + 0.15 < c.image[heart & ~lungs].mean()
        # the abdomen below the lungs is bright
        assert c.image[-10:, 50:78].mean() > c.image[lungs].mean() + 0.2


def _ctr(case) -> float:
    cols_h = np.where(case.masks["heart"].any(axis=0))[0]
    cols_l = np.where(case.masks["lungs"].any(axis=0))[0]
    return (cols_h.max() - cols_h.min()) / (cols_l.max() - cols_l.min())


def test_cardiomegaly_widens_the_heart() -> None:
    for seed in range(3):
        normal = simulate(seed, 128, findings={}, view="PA")
        big = simulate(seed, 128, findings={"Cardiomegaly": "severe"}, view="PA")
        assert big.labels[FINDINGS.index("Cardiomegaly")] == 1.0
        assert _ctr(normal) < 0.5 < _ctr(big)


@pytest.mark.parametrize("sev", ["mild", "severe"])
def test_effusion_whitens_the_base_and_has_a_mask(sev: str) -> None:
    base = simulate(7, 128, findings={}, view="PA")
    eff = simulate(7, 128, findings={"Pleural Effusion": sev}, view="PA")
    m = eff.masks["effusion"]
    assert m.any()
    assert eff.image[m].mean() > base.image[m].mean() + 0.05
    if sev == "severe":
        assert m.sum() > 3 * simulate(7, 128, findings={"Pleural Effusion": "mild"}, view="PA").masks["effusion"].sum()


def test_pneumothorax_is_lucent_without_markings() -> None:
    base = simulate(2, 128, findings={}, view="PA")
    ptx = simulate(2, 128, findings={"Pneumothorax": "moderate"}, view="PA")
    m = ptx.masks["pneumothorax"]
    assert m.sum() > 100
    assert ptx.image[m].mean() < base.image[m].mean() - 0.02
    # no vessel markings inside the pneumothorax (checked on the thickness maps)
    from unicxr.phantom.anatomy import Scene, sample_anatomy
    from unicxr.phantom.findings import render_findings, sample_findings
    from unicxr.phantom.grid import Grid
    from unicxr.phantom.vessels import render_vessels

    rng = np.random.default_rng(0)
    scene = Scene(Grid(128), sample_anatomy(rng))
    scene.render_anatomy(rng)
    render_vessels(scene)
    before = scene.vessels.copy()
    masks: dict[str, np.ndarray] = {}
    render_findings(scene, sample_findings(rng, PhantomConfig(), force={"Pneumothorax": "moderate"}), masks)
    zone = masks["pneumothorax"]
    assert zone.sum() > 50 and before[zone].sum() > 0
    assert scene.vessels[zone].sum() < 0.1 * before[zone].sum()


def test_devices_are_bright_and_masked() -> None:
    c = simulate(5, 128, findings={"Support Devices": ""})
    assert c.labels[FINDINGS.index("Support Devices")] == 1.0
    assert c.masks["devices"].sum() > 20
    assert np.percentile(c.image[c.masks["devices"]], 90) > 0.8


@pytest.mark.parametrize("name", list(FINDINGS[1:]))
def test_every_finding_changes_the_image(name: str) -> None:
    base = simulate(9, 96, findings={}, view="PA")
    case = simulate(9, 96, findings={name: "severe" if name != "Support Devices" else ""}, view="PA")
    assert case.labels[FINDINGS.index(name)] in (1.0, -1.0)
    diff = np.abs(case.image - base.image)
    # a visible, possibly local, change (a rib fracture is a small cortical break)
    assert diff.max() > (0.04 if name == "Fracture" else 0.08) and diff.mean() > 0.0002


def test_prevalence_parsing_and_config() -> None:
    assert parse_prevalence(["pleural_effusion=0.5", "Cardiomegaly=0"]) == {"Pleural Effusion": 0.5, "Cardiomegaly": 0.0}
    for bad in (["x"], ["Edema=2"], ["Nope=0.1"], ["Edema=abc"]):
        with pytest.raises(UnicxrError):
            parse_prevalence(bad)
    cfg = PhantomConfig().with_prevalence({"Pneumothorax": 1.0})
    hits = sum(simulate(s, 32, cfg, masks=False).labels[FINDINGS.index("Pneumothorax")] in (1.0, -1.0) for s in range(8))
    assert hits == 8
