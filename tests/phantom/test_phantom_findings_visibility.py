"""Fractures, nodules and effusions are drawn where and how the report says (visible, plausible)."""

from __future__ import annotations

import numpy as np

from unicxr.labels import FINDINGS
from unicxr.phantom.anatomy import LEFT, Scene, sample_anatomy
from unicxr.phantom.config import PhantomConfig
from unicxr.phantom.findings import Finding, apply_geometry, fracture_clavicle, fracture_ribs, render_findings
from unicxr.phantom.grid import Grid
from unicxr.phantom.simulate import simulate


def test_fracture_kind_parsing() -> None:
    assert fracture_ribs("rib3x1") == (3, 1, False)
    assert fracture_ribs("rib5x3h") == (5, 3, True)
    assert fracture_ribs("clavicle") == (-1, 0, False)
    assert fracture_ribs("clavicleh") == (-1, 0, True)
    assert fracture_ribs("clavicle+rib4x2h") == (4, 2, True)
    assert [fracture_clavicle(k) for k in ("rib3x1", "clavicle", "clavicle+rib4x2h")] == [False, True, True]


def test_fracture_breaks_the_reported_bone_on_the_reported_side() -> None:
    j = FINDINGS.index("Fracture")
    healing = ribs = clavicles = 0
    for seed in range(14):
        base = simulate(seed, 128, findings={}, view="PA", masks=True)
        case = simulate(seed, 128, findings={"Fracture": "severe"}, view="PA", masks=False)
        assert case.labels[j] == 1.0
        text = case.sections["findings"].lower()
        clavicle, rib = "clavic" in text, "rib" in text
        assert clavicle or rib
        clavicles += clavicle
        ribs += rib
        healing += "healing" in text
        diff = np.abs(case.image - base.image)
        r, c = np.unravel_index(np.argmax(diff), diff.shape)
        # a clear local change (lucent line, step, haematoma or callus) on the reported side: over the
        # lung and not the heart for ribs, in the upper chest for a clavicle
        assert diff.max() > 0.12
        if clavicle and not rib:
            assert r < 0.4 * 128
        elif rib and not clavicle:
            assert base.masks["lungs"][r, c] and not base.masks["heart"][r, c]
        side = case.params["laterality_fracture"]
        assert (c < 64) == (side == "right")
    assert 0 < healing < 14 and ribs >= 7 and clavicles >= 1


def test_clavicle_choice_leaves_every_other_draw_unchanged(monkeypatch) -> None:
    """Which bone breaks is drawn from the finding's own stream: the same patients, findings and
    labels come out whether no Fracture or every Fracture is a clavicle fracture."""
    import unicxr.phantom.findings as fmod
    from unicxr.phantom.simulate import make_plan

    plans = {}
    for share in (0.0, 1.0):
        monkeypatch.setattr(fmod, "CLAVICLE_SHARE", share)
        plans[share] = make_plan(3, 400, PhantomConfig())
    n_frac = 0
    for a, b in zip(plans[0.0], plans[1.0], strict=True):
        assert a.anatomy == b.anatomy and a.view == b.view and a.seed == b.seed
        assert a.findings.keys() == b.findings.keys()
        for name, fa in a.findings.items():
            fb = b.findings[name]
            if name == "Fracture":
                n_frac += 1
                assert fa.kind.startswith("rib") and fb.kind.startswith("clavicle")
                # with rib fractures, the very ribs the rib-only draw broke
                assert fb.kind.partition("+")[2] in ("", fa.kind)
                assert fa.kind.endswith("h") == fb.kind.endswith("h")
                assert (fa.label, fa.severity, fa.side, fa.value, fa.seed) == (fb.label, fb.severity, fb.side, fb.value, fb.seed)
            else:
                assert fa == fb
    assert n_frac >= 5


def test_acute_rib_fracture_has_an_extrapleural_haematoma_on_its_side() -> None:
    anat = sample_anatomy(np.random.default_rng(2))
    fills = {}
    for kind in ("rib4x3", "rib4x3h"):
        sc = Scene(Grid(128), anat)
        f = Finding("Fracture", 1.0, "severe", side="left", kind=kind, value=0.7, seed=5)
        apply_geometry(sc, {"Fracture": f})
        sc.render_anatomy(np.random.default_rng(0))
        render_findings(sc, {"Fracture": f}, None)
        fills[kind] = sc.fill
    assert PhantomConfig().prevalence["Fracture"] == 0.04  # learnability is not bought with prevalence
    acute = fills["rib4x3"]
    U = sc.g.U
    # soft tissue along the left lateral chest wall only, none for healing fractures
    assert acute[U > sc.midline + 0.5 * anat.W].sum() > 1.0
    assert acute[U < sc.midline].sum() == 0.0
    assert fills["rib4x3h"].sum() == 0.0


def test_clavicle_fracture_steps_the_shaft() -> None:
    anat = sample_anatomy(np.random.default_rng(4))
    sc0, sc1 = Scene(Grid(256), anat), Scene(Grid(256), anat)
    sc1.clavicle_fracture = (LEFT, 0.5, 2.0, 0.045, 0.0)
    sc0._clavicles()
    sc1._clavicles()
    m = anat.mid
    a0, a1 = 0.07, anat.W + 0.17

    def centre(sc: Scene, t: float) -> float:
        col = int(round(((m + a0 + t * (a1 - a0)) + 1.0) * 128 - 0.5))
        prof = sc.bone[:, col]
        return float((prof * np.arange(256)).sum() / prof.sum())

    # lateral to the break the shaft drops by more than a shaft width (~7 px); medially unchanged
    assert centre(sc1, 0.62) - centre(sc0, 0.62) > 6.0
    assert abs(centre(sc1, 0.2) - centre(sc0, 0.2)) < 0.5
    assert np.abs(sc0.bone[:, :128] - sc1.bone[:, :128]).max() == 0.0  # the right clavicle is intact


def test_acute_displaced_clavicle_fracture_swells_the_soft_tissue_over_it() -> None:
    """Bleeding around an acute displaced break adds a lens of soft tissue over the break (left side,
    upper chest, about 3-4.5 cm thick at the centre); a healing or barely displaced break adds none."""
    anat = sample_anatomy(np.random.default_rng(4))

    def body(cf) -> np.ndarray:
        sc = Scene(Grid(256), anat)
        sc.clavicle_fracture = cf
        sc._clavicles()
        return sc.body

    base = body(None)
    swell = body((LEFT, 0.5, 2.0, 0.05, 0.0)) - base
    assert 0.17 <= swell.max() <= 0.21
    rows, cols = np.nonzero(swell > 0)
    assert cols.min() >= 128 and rows.max() < 128  # over the left clavicle, in the upper half
    assert np.abs(body((LEFT, 0.5, 2.0, 0.05, 1.0)) - base).max() == 0.0  # healing
    assert np.abs(body((LEFT, 0.5, 0.25, 0.015, 0.0)) - base).max() == 0.0  # subtle


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


def test_displaced_clavicle_fracture_fragments_override() -> None:
    """A displaced midshaft clavicle fracture draws overriding fragments: one broken end above the
    other (the bone is taller where they overlap) and a doubled, brighter stretch; a barely displaced
    (subtle) one is a lucent line instead (less bone, nothing brighter)."""
    anat = sample_anatomy(np.random.default_rng(4))

    def clavicles(cf) -> np.ndarray:
        sc = Scene(Grid(256), anat)
        sc.clavicle_fracture = cf
        sc._clavicles()
        return sc.bone[:, 128:]  # the left clavicle (image right half)

    intact = clavicles(None)
    displaced = clavicles((LEFT, 0.5, 2.0, 0.05, 0.0))
    subtle = clavicles((LEFT, 0.5, 0.25, 0.015, 0.0))
    tall = lambda b: (b > 0.03).sum(0)  # noqa: E731 - rows of bone per column
    assert (tall(displaced) - tall(intact)).max() >= 0.8 * np.median(tall(intact)[tall(intact) > 0])
    assert displaced.max() > 1.3 * intact.max()
    assert subtle.sum() < intact.sum() and subtle.max() <= intact.max() + 1e-6


def test_clavicle_fracture_with_rib_fractures_draws_and_reports_both() -> None:
    """Half of the clearly seen clavicle fractures come with rib fractures on the same side (as in
    blunt chest trauma): both bones break, the report names both, the labeler reads one Fracture."""
    from unicxr.phantom.findings import CLAVICLE_SHARE, CLAVICLE_WITH_RIBS
    from unicxr.phantom.report import noun_phrase
    from unicxr.phantom.simulate import make_plan, render_case
    from unicxr.text import label_reports

    plans = [p for p in make_plan(0, 4000, PhantomConfig()) if "Fracture" in p.findings]
    kinds = [p.findings["Fracture"].kind for p in plans]
    both = sum("+rib" in k for k in kinds)
    alone = sum(k in ("clavicle", "clavicleh") for k in kinds)
    assert abs((both + alone) / len(kinds) - CLAVICLE_SHARE) < 0.1
    assert abs(both / (both + alone) - CLAVICLE_WITH_RIBS) < 0.25
    # only clearly seen (label 1) fractures combine; a hedged one names one bone
    assert all(p.findings["Fracture"].label == 1.0 for p in plans if "+rib" in p.findings["Fracture"].kind)

    anat = sample_anatomy(np.random.default_rng(4))
    maps = {}
    for kind in ("clavicle", "rib4x2", "clavicle+rib4x2"):
        sc = Scene(Grid(128), anat)
        f = Finding("Fracture", 1.0, "severe", side="left", kind=kind, value=0.7, seed=5)
        apply_geometry(sc, {"Fracture": f})
        assert (sc.clavicle_fracture is not None) == kind.startswith("clavicle")
        assert len(sc.fractures) == (0 if kind == "clavicle" else 2)
        sc.render_anatomy(np.random.default_rng(0))
        render_findings(sc, {"Fracture": f}, None)
        maps[kind] = (sc.bone.copy(), sc.fill.copy())
    both_bone, both_fill = maps["clavicle+rib4x2"]
    np.testing.assert_array_equal(both_fill, maps["rib4x2"][1])  # the ribs' extrapleural haematoma
    assert not np.array_equal(both_bone, maps["rib4x2"][0])  # and the clavicle's step
    assert not np.array_equal(both_bone, maps["clavicle"][0])

    f = Finding("Fracture", 1.0, "moderate", side="right", kind="clavicle+rib5x2", value=0.6, seed=9)
    assert noun_phrase(f) == "right clavicle and 6th through 7th rib fractures"
    j = FINDINGS.index("Fracture")
    for p in [p for p in plans if "+rib" in p.findings["Fracture"].kind][:8]:
        report = render_case(p, 64, PhantomConfig(), masks=False).report
        assert "clavic" in report.lower() and "rib" in report.lower()
        assert label_reports([report])[0, j] == 1.0
