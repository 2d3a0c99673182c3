"""Pulmonary vascular trees: random branching trees from the hila, tapering toward the periphery."""

from __future__ import annotations

import math

import numpy as np

from unicxr.phantom.anatomy import LEFT, RIGHT, Scene
from unicxr.phantom.grid import blur

__all__ = ["render_vessels"]

# root directions (radians, 0 = lateral, positive = downward) with relative calibre
_ROOTS = ((-1.45, 0.8), (-0.75, 0.9), (-0.1, 0.9), (0.55, 1.0), (1.15, 1.0), (1.6, 0.75))


def _tree(
    rng: np.random.Generator, hu: float, hv: float, side: int, scale: float, upper_boost: float, gens: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample branch segments of one lung's tree.

    Returns:
        ``(p0, p1, r)``: segment start points (N, 2), end points (N, 2) and radii (N,) in canonical units.
    """
    base = np.array([r[0] for r in _ROOTS])
    cal = np.array([r[1] for r in _ROOTS])
    k = base.size
    angs = base + rng.normal(0, 0.12, size=k)
    rads = 0.0115 * cal * scale * (1.0 + np.where(angs < -0.5, upper_boost, 0.0))
    lens = 0.17 * rng.uniform(0.85, 1.15, size=k)
    # generation g has k 2^g branches of two sub-segments each, stored generation after generation
    # as [branch starts..., branch midpoints...] (u and v kept apart: no small (k, 2) temporaries)
    total = 2 * k * (2**gens - 1)
    p0 = np.empty((2, total))
    p1 = np.empty((2, total))
    rad = np.empty(total)
    pu = np.full(k, hu)
    pv = np.full(k, hv)
    o = 0
    for _ in range(gens):
        # slight curvature: each branch is two sub-segments, pts -> mid -> end
        half = lens * 0.5
        mu = side * np.cos(angs) * half
        mu += pu
        mv = np.sin(angs) * half
        mv += pv
        bend = rng.normal(0, 0.12, size=k)
        ab = angs + bend
        eu = side * np.cos(ab) * half
        eu += mu
        ev = np.sin(ab) * half
        ev += mv
        p0[0, o : o + k], p0[1, o : o + k], p0[0, o + k : o + 2 * k], p0[1, o + k : o + 2 * k] = pu, pv, mu, mv
        p1[0, o : o + k], p1[1, o : o + k], p1[0, o + k : o + 2 * k], p1[1, o + k : o + 2 * k] = mu, mv, eu, ev
        rad[o : o + k] = rads
        np.multiply(rads, 0.92, out=rad[o + k : o + 2 * k])
        o += 2 * k
        spread = rng.uniform(0.25, 0.6, size=k)
        skew = rng.uniform(-0.15, 0.15, size=k)
        angs = np.concatenate([ab + spread + skew, ab - spread + skew])
        pu = np.concatenate([eu, eu])
        pv = np.concatenate([ev, ev])
        rr = rng.uniform(0.62, 0.78, size=k)
        rads = np.concatenate([rads * rr, rads * (1.45 - rr)]) * 0.92
        lens = np.concatenate([lens, lens]) * rng.uniform(0.68, 0.84, size=2 * k)
        k *= 2
    return p0.T, p1.T, rad


def render_vessels(scene: Scene, upper_boost: float = 0.0, indistinct: float = 0.0, gens: int = 7) -> None:
    """Draw both vascular trees into ``scene.vessels`` (water-equivalent path length).

    Args:
        scene: the case's maps; vessels are masked to lung air later at composition.
        upper_boost: relative enlargement of upper-zone vessels (cephalization in edema).
        indistinct: extra blur of vessel margins (interstitial edema), in canonical units.
        gens: branching generations.
    """
    g = scene.g
    rng = np.random.default_rng(scene.a.vessel_seed)
    sig_px = [0.55 * g.size / 256, 1.2 * g.size / 256, 2.4 * g.size / 256]
    px = g.px
    extra = indistinct / px
    pts_all, w_all, cls_all = [], [], []
    for side in (RIGHT, LEFT):
        hu, hv = scene.hilum(side)
        p0, p1, r = _tree(rng, hu, hv, side, 1.0, upper_boost, gens)
        seg_len = np.hypot(*(p1 - p0).T)
        # points every pixel along a branch (every 2 pixels along the faint sub-pixel twigs)
        step = np.where(r < 0.3 * px, 2.0 * px, px)
        nper = np.maximum(2, np.ceil(seg_len / step).astype(int))
        idx = np.repeat(np.arange(len(r)), nper)
        frac = (np.arange(idx.size) - np.repeat(np.cumsum(nper) - nper, nper) + 0.5) / np.repeat(nper, nper)
        pts_all.append(p0[idx] + (p1 - p0)[idx] * frac[:, None])
        rr = r[idx]
        # mass per unit length of a cylinder is pi r^2; splat weight = mass * step / pixel area
        w_all.append(math.pi * rr * rr * (seg_len[idx] / nper[idx]) / (px * px))
        r_px = rr / px
        cls_all.append(np.where(r_px < 1.3, 0, np.where(r_px < 2.8, 1, 2)))
    pts = np.concatenate(pts_all)
    # work in the window the trees cover (plus the blur margin): vessels stay inside the thorax
    n = g.size
    rows, cols = g.to_pixel(pts[:, 0], pts[:, 1])
    pad = int(math.ceil(3.0 * math.hypot(sig_px[2], extra))) + 3
    r0, r1 = max(int(rows.min()) - pad, 0), min(int(rows.max()) + pad + 2, n)
    c0, c1 = max(int(cols.min()) - pad, 0), min(int(cols.max()) + pad + 2, n)
    if r0 >= r1 or c0 >= c1:
        return
    layers = np.zeros((3, r1 - r0, c1 - c0), dtype=np.float32)
    g.splat_px(rows, cols, np.concatenate(w_all), layers, layer=np.concatenate(cls_all), origin=(r0, c0))
    # hilar pulmonary arteries: lobulated densities at the hila
    win = (slice(r0, r1), slice(c0, c1))
    U, V = g.U[win], g.V[win]
    for side in (RIGHT, LEFT):
        hu, hv = scene.hilum(side)
        for du, dv, r, amp in ((0.02, -0.02, 0.045, 0.028), (0.05, 0.05, 0.035, 0.022), (0.0, 0.09, 0.03, 0.016)):
            cu, cv = hu + side * du, hv + dv
            box = g.box(cu - 2.5 * r, cu + 2.5 * r, cv - 2.5 * r, cv + 2.5 * r)
            if box is None:
                continue
            box = (slice(max(box[0].start, r0) - r0, min(box[0].stop, r1) - r0),
                   slice(max(box[1].start, c0) - c0, min(box[1].stop, c1) - c0))
            d2 = ((U[box] - cu) ** 2 + (V[box] - cv) ** 2) / (r * r)
            layers[2][box] += (amp * np.exp(-d2)).astype(np.float32)
    out = blur(layers[0], math.hypot(sig_px[0], extra))
    out += blur(layers[1], math.hypot(sig_px[1], extra))
    out += blur(layers[2], math.hypot(sig_px[2], extra))
    scene.vessels[win] += out
