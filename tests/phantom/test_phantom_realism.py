"""Physical-plausibility checks of the phantom's anatomy model (heart, abdomen, ribs, effusion) and the
PNG encoder."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from unicxr.phantom.acquisition import sample_acquisition
from unicxr.phantom.anatomy import LEFT, RIGHT, Scene, follow_up_anatomy, sample_anatomy
from unicxr.phantom.grid import Grid
from unicxr.phantom.simulate import simulate
from unicxr.phantom.writer import encode_png_gray


def _scene(seed: int, size: int = 128) -> Scene:
    rng = np.random.default_rng(seed)
    sc = Scene(Grid(size), sample_anatomy(rng))
    sc.render_anatomy(rng)
    return sc


def test_heart_thickness_falls_off_and_lung_overlaps_it() -> None:
    sc = _scene(1)
    prof = sc.heart_prof
    inside = prof > 0
    # ellipsoid-like: thick centre, thin rim (not a flat plateau with a hard edge)
    assert prof.max() > 0.95
    assert np.mean(prof[inside] < 0.5) > 0.1
    # the heart displaces only part of the lung air: some air stays in front of / behind it
    assert sc.occl.max() <= 0.9
    both = inside & (sc.air > 0.1 * sc.a.lung_depth)
    assert both.sum() > 0.3 * inside.sum()
    # about two thirds of the silhouette lies left of the midline (image right on a PA view)
    cols = np.nonzero(inside.any(axis=0))[0]
    u = sc.g.U[sc.g.size // 2, cols]
    left = np.sum(u > sc.midline) / len(cols)
    assert 0.55 < left < 0.8


def test_posterior_ribs_are_arcs_and_the_outline_is_one_silhouette() -> None:
    sc = _scene(2, 128)
    for r in sc.rib_table():
        if not r["post"] or r["k"] in (0, 10):
            continue
        t = np.linspace(0.0, 1.0, 101)
        v = r["v0"] + r["A"] * t**3.5 - r["B"] * np.sin(np.pi * t**0.8) + r["D"] * (1 - t) ** 1.1
        # rises from the spine to a crest, then sweeps down laterally well below its medial end
        assert v.min() < v[0] - 0.5 * sc.a.rib_space and 0.2 < t[np.argmin(v)] < 0.6
        assert v[-1] > v[0] + 1.0 * sc.a.rib_space
    # the heart outline: every row of the silhouette is one run (no notch between separate lobes)
    h = sc.heart_prof > 0.05
    for row in np.nonzero(h.any(axis=1))[0]:
        cols = np.nonzero(h[row])[0]
        assert cols.max() - cols.min() + 1 == cols.size


def test_shoulders_clavicles_reach_the_humeral_heads() -> None:
    sc = _scene(3, 128)
    top = sc.bone[: 40]
    # bone near both upper corners (humeral heads / acromion) and clavicles across the upper chest
    assert top[:, :14].max() > 0.08 and top[:, -14:].max() > 0.08
    assert (top.max(axis=0) > 0.05).mean() > 0.8


def test_heart_is_darker_than_the_abdomen_and_abdomen_is_graded() -> None:
    heart, belly, flank = [], [], []
    for seed in range(6):
        case = simulate(seed, 128, findings={}, view="PA")
        img, h = case.image, case.masks["heart"]
        rows = np.nonzero(h.any(axis=1))[0]
        heart.append(float(np.median(img[h])))
        low = img[min(rows.max() + 12, 120) :, 40:88]
        belly.append(float(np.median(low)))
        flank.append(float(np.median(img[min(rows.max() + 12, 120) :, 10:22])))
        assert img[min(rows.max() + 12, 120) :, 20:108].max() < 0.995  # not saturated
    assert np.mean(heart) < np.mean(belly)
    assert np.mean(flank) < np.mean(belly)  # soft tissue thins toward the flanks


def test_ribs_vary_per_rib_and_patient_but_not_between_studies() -> None:
    rng = np.random.default_rng(3)
    a1, a2 = sample_anatomy(rng), sample_anatomy(rng)

    def gaps(anat) -> np.ndarray:
        sc = Scene(Grid(64), anat)
        post = [r for r in sc.rib_table() if r["post"] and r["side"] == RIGHT]
        return np.diff([r["v0"] for r in post])

    g1 = gaps(a1)
    assert np.std(g1) > 0.002  # spacing is not perfectly regular
    assert not np.allclose(g1, gaps(a2))
    widths = [r["hw"] for r in Scene(Grid(64), a1).rib_table() if r["post"]]
    assert np.std(widths) > 0.0005
    # a follow-up study of the same patient keeps the same ribs
    assert np.allclose(g1, gaps(follow_up_anatomy(a1, rng)))


def test_anterior_ribs_fade_medially() -> None:
    sc = Scene(Grid(256), sample_anatomy(np.random.default_rng(4)))
    only = [r for r in sc.rib_table() if not r["post"] and r["side"] == LEFT and r["k"] == 4]
    sc._rib_cache = only
    sc._ribs(np.random.default_rng(0))
    r = only[0]
    m = sc.a.mid
    cols = []
    for t in (0.05, 0.8):
        u = m + r["a0"] + t * (r["a1"] - r["a0"])
        cols.append(sc.bone[:, int(round((u * sc.g.zoom + 1) * 128 - 0.5))].max())
    assert cols[0] < 0.2 * cols[1]


def test_gastric_bubble_under_left_dome_in_most_patients() -> None:
    hits = 0
    for seed in range(30):
        sc = _scene(seed, 128)
        gas = sc.airway * (sc.g.V > sc.dome_top(LEFT))
        if gas.max() > 0.07:  # stronger than colonic gas (< 0.065)
            hits += 1
            r, c = np.unravel_index(np.argmax(gas), gas.shape)
            assert sc.g.U[r, c] > sc.midline  # patient's left
            rows = np.nonzero((gas > 0.02).any(axis=1))[0]
            colsb = np.nonzero((gas > 0.02).any(axis=0))[0]
            assert len(rows) >= 4 and len(colsb) <= 3.5 * len(rows)  # round/oval pocket, not a thin slit
    assert hits >= 18


def test_large_effusion_has_a_meniscus_higher_laterally() -> None:
    case = simulate(7, 128, findings={"Pleural Effusion": "severe"}, view="PA")
    side = case.params["laterality_pleural_effusion"]
    m = case.masks["effusion"]
    cols = np.nonzero(m.any(axis=0))[0]
    tops = {c: int(np.nonzero(m[:, c])[0].min()) for c in cols}
    if side == "left" or side == "bilateral":
        lat, med = cols.max() - 2, cols[cols > 64].min() + 4
    else:
        lat, med = cols.min() + 2, cols[cols < 64].max() - 4
    assert tops[lat] < tops[med] - 3  # fluid climbs the lateral chest wall (concave-up surface)


def test_png_encoder_round_trips_8_and_16_bit() -> None:
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint16):
        a = rng.integers(0, np.iinfo(dtype).max, (37, 53), endpoint=True).astype(dtype)
        b = encode_png_gray(a)
        assert b == encode_png_gray(a)
        back = np.asarray(Image.open(io.BytesIO(b)))
        assert back.dtype == dtype and np.array_equal(back, a)


def test_acquisition_noise_is_deterministic_per_seed() -> None:
    a = simulate(5, 64, masks=False).image
    b = simulate(5, 64, masks=False).image
    assert np.array_equal(a, b)
    assert sample_acquisition(np.random.default_rng(1), "PA") == sample_acquisition(np.random.default_rng(1), "PA")
