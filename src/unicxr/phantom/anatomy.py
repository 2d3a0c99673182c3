"""Per-patient anatomy parameters and their thickness maps (the attenuation-domain body model).

Every structure is a projected thickness map in "soft-tissue equivalent" units (1.0 is roughly the
antero-posterior thickness of the chest). Lungs are *missing* tissue (air), bones add dense
thickness with a cortical rim, the heart and mediastinum occlude lung air. :class:`Scene` holds the
maps of one case; findings and devices edit the same maps before acquisition turns them into a
radiograph.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from unicxr.phantom.grid import Grid, ellipsoid, percentiles, smoothstep, tube

__all__ = ["Anatomy", "sample_anatomy", "follow_up_anatomy", "Scene", "rib_arc_v", "RIGHT", "LEFT"]

RIGHT = -1  # patient's right = image left on a PA view
LEFT = 1


@dataclass(frozen=True)
class Anatomy:
    """Per-patient anatomy (canonical units: the image spans [-1, 1]).

    Attributes:
        sex: ``"M"`` or ``"F"``.
        age: years.
        W: thoracic inner half-width at its widest (rib margin).
        mid: horizontal position of the mediastinal midline.
        v_apex: top of the lung apices.
        rib_space: vertical spacing of posterior ribs.
        insp: posterior ribs above the right hemidiaphragm (inspiration depth).
        dome_diff: how much lower the left dome sits than the right.
        dome_k: dome curvature (depth of the costophrenic angles).
        ctr: true cardiothoracic ratio (heart width / thoracic width).
        heart_tilt: long-axis angle of the heart (radians from horizontal).
        heart_round: minor/major axis ratio of the heart.
        medi_w: upper mediastinal half-width.
        knob: aortic knob prominence.
        body_margin: chest-wall soft tissue beyond the ribs.
        body_thick: soft-tissue thickness scale.
        lung_depth: maximal air path through a lung.
        rho: lung parenchyma density (fraction of tissue).
        breast: breast shadow size (0 = none).
        clav_v: clavicle height (medial end).
        vessel_seed: seed of the vascular trees.
        rib_jitter: seed-like float for small rib irregularities.
    """

    sex: str
    age: int
    W: float
    mid: float
    v_apex: float
    rib_space: float
    insp: float
    dome_diff: float
    dome_k: float
    ctr: float
    heart_tilt: float
    heart_round: float
    medi_w: float
    knob: float
    body_margin: float
    body_thick: float
    lung_depth: float
    rho: float
    breast: float
    clav_v: float
    vessel_seed: int
    rib_jitter: float

    def as_params(self) -> dict[str, float | int | str]:
        """Flat dict of the parameters (for metadata columns, prefixed ``anat_``)."""
        return {f"anat_{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy (sex/age-dependent habitus)."""
    sex = "F" if rng.random() < 0.48 else "M"
    age = int(np.clip(rng.normal(60, 17), 18, 95))
    big = 0.04 if sex == "M" else -0.02
    W = float(np.clip(rng.normal(0.76 + big, 0.04), 0.64, 0.9))
    return Anatomy(
        sex=sex,
        age=age,
        W=W,
        mid=float(rng.normal(0.0, 0.015)),
        v_apex=float(rng.normal(-0.8, 0.03)),
        rib_space=float(rng.normal(0.122, 0.007)),
        insp=float(rng.normal(10.0, 0.5)),
        dome_diff=float(np.clip(rng.normal(0.045, 0.02), -0.01, 0.1)),
        dome_k=float(rng.uniform(0.6, 0.95)),
        ctr=float(np.clip(rng.normal(0.44, 0.03), 0.36, 0.49)),
        heart_tilt=float(rng.uniform(0.45, 0.75)),
        heart_round=float(rng.uniform(0.58, 0.72)),
        medi_w=float(rng.uniform(0.12, 0.15)),
        knob=float(rng.uniform(0.02, 0.05) + (0.015 if age > 70 else 0.0)),
        body_margin=float(rng.uniform(0.1, 0.24) + (0.03 if sex == "F" else 0.0)),
        body_thick=float(rng.uniform(0.9, 1.1)),
        lung_depth=float(rng.uniform(0.62, 0.75)),
        rho=float(rng.uniform(0.14, 0.22)),
        breast=float(rng.uniform(0.5, 1.2)) if sex == "F" else 0.0,
        clav_v=float(rng.normal(-0.6, 0.03)),
        vessel_seed=int(rng.integers(0, 2**31 - 1)),
        rib_jitter=float(rng.random()),
    )


def follow_up_anatomy(anat: Anatomy, rng: np.random.Generator) -> Anatomy:
    """Same patient at a later study: anatomy is kept, inspiration and body habitus vary a little."""
    return replace(
        anat,
        insp=float(anat.insp + rng.normal(0, 0.35)),
        body_thick=float(anat.body_thick * rng.uniform(0.96, 1.04)),
        mid=float(anat.mid + rng.normal(0, 0.005)),
    )


def rib_arc_v(v0, A, B, D, t):  # noqa: N803 - the arc's coefficients as rib_table names them
    """Height of a rib's centre line at ``t`` in [0, 1] along its arc (see :meth:`Scene.rib_table`):
    ``v0 + A t^3.5 - B sin(pi t^0.8) + D (1 - t)^1.1``; floats or broadcastable arrays."""
    return v0 + A * t**3.5 - B * np.sin(np.pi * np.maximum(t, 1e-6) ** 0.8) + D * (1.0 - t) ** 1.1


def _break_factors(x, gap, cal, bulge_len, bright, widen, ends=0.0, lucent=True):
    """Density and width factors along a broken bone at distance ``x`` from the break: a lucent line
    ``gap`` wide (60% filled in when healing, ``cal`` = 1; none when ``lucent`` is False, e.g.
    overriding fragments) plus ``ends`` (sclerotic fragment ends), and a callus bulge over about
    ``bulge_len`` that brightens by ``bright`` and widens by ``widen``.

    Returns:
        ``(density factor, width factor)``, arrays shaped like ``x``.
    """
    line = smoothstep((0.5 * gap - np.abs(x)) / (0.3 * gap) + 0.5) if lucent else 0.0
    bulge = np.exp(-((x / bulge_len) ** 2))
    return (1.0 - 0.95 * line * (1.0 - 0.6 * cal)) + ends + bright * cal * bulge, 1.0 + widen * cal * bulge


class Scene:
    """Thickness maps of one case, with the geometry helpers findings and devices need.

    Maps (float32, shape (H, W)):
        body: soft tissue thickness; air: lung/airway air path length; occl: fraction of lung air
        occluded by heart/mediastinum/fluid; bone; fill: water-density material inside the air
        spaces (vessels, consolidation, masses); metal; rho: lung parenchyma density.

    Args:
        grid: canonical coordinates of the pixels.
        anat: the patient's anatomy.
        ap: anteroposterior projection (heart magnified, scapulae over the lungs, clavicles higher).
        spine_shift: horizontal offset of spine/sternum relative to the mediastinum (rotation).
    """

    def __init__(self, grid: Grid, anat: Anatomy, ap: bool = False, spine_shift: float = 0.0) -> None:
        self.g = grid
        self.a = anat
        self.ap = ap
        self.spine_shift = spine_shift
        n = grid.size
        def z() -> np.ndarray:
            return np.zeros((n, n), dtype=np.float32)

        self.body = z()
        self.air = z()
        self.occl = z()
        self.bone = z()
        self.fill = z()
        self.metal = z()
        self.vessels = z()
        self.rho = np.full((n, n), anat.rho, dtype=np.float32)
        self.heart_prof = z()
        self.airway = z()  # air outside the lungs (trachea, bronchi, gastric bubble)
        # derived geometry
        a = anat
        s = a.rib_space
        self.v_rib1 = a.v_apex + 0.03
        self.v_dome = {RIGHT: self.v_rib1 + (a.insp - 0.6) * s, LEFT: self.v_rib1 + (a.insp - 0.6) * s + a.dome_diff}
        self.dome_shift = {RIGHT: 0.0, LEFT: 0.0}  # findings may elevate/depress a dome
        self.mediastinal_shift = 0.0  # findings may shift the mediastinum (tension, collapse)
        self.heart_scale = 1.08 if ap else 1.0
        self.ctr = a.ctr
        self.medi_extra = 0.0  # mediastinal widening (Enlarged Cardiomediastinum)
        self._rib_cache: list[dict[str, float]] | None = None
        # rib fractures drawn by :meth:`_ribs`: (side, rib index, t along the posterior arc,
        # step in rib half-widths, gap width, angulation, callus 0/1), set by findings.apply_geometry
        self.fractures: list[tuple[int, int, float, float, float, float, float]] = []
        # a clavicle fracture drawn by :meth:`_clavicles`: (side, t along the clavicle, step in shaft
        # half-widths, gap width, callus 0/1) or None
        self.clavicle_fracture: tuple[int, float, float, float, float] | None = None

    # ---------------------------------------------------------------- geometry (canonical) ----
    @property
    def midline(self) -> float:
        return self.a.mid + self.mediastinal_shift

    def dome_top(self, side: int) -> float:
        return self.v_dome[side] + self.dome_shift[side]

    def lat(self, v: np.ndarray | float, side: int) -> np.ndarray:
        """Distance from the midline of the lateral lung border at height ``v``."""
        a = self.a
        ac = 0.45 * a.W
        v_full = a.v_apex + 0.34
        t = np.clip((v_full - np.asarray(v, dtype=np.float32)) / (v_full - a.v_apex), 0.0, 1.0)
        upper = ac + (a.W - ac) * np.sqrt(1.0 - t * t)
        lower = a.W * (1.0 + 0.05 * np.clip(np.asarray(v, dtype=np.float32) - v_full, 0.0, 1.0))
        return np.where(np.asarray(v) < v_full, upper, lower)

    def heart_geom(self) -> tuple[float, float, float, float, float]:
        """Left-ventricular ellipse (uc, vc, major, minor, tilt) in canonical units.

        The heart silhouette is this tilted ellipse (left border down to the apex) united with a
        smaller right-atrial ellipse (right border); together they span ``ctr * 2W`` horizontally.
        """
        a = self.a
        hw_total = self.ctr * 2.0 * a.W * self.heart_scale
        x_l = 0.68 * hw_total
        th = a.heart_tilt
        r = a.heart_round
        hw_lv = (x_l + 0.06) / 2.0
        uc = self.midline + x_l - hw_lv
        major = hw_lv / math.sqrt(math.cos(th) ** 2 + (r * math.sin(th)) ** 2)
        minor = r * major
        half_h = self._stretch(major, minor, th) * math.sqrt((major * math.sin(th)) ** 2 + (minor * math.cos(th)) ** 2)
        vc = self.dome_top(LEFT) + 0.06 - half_h
        return uc, vc, major, minor, th

    def _stretch(self, major: float, minor: float, th: float) -> float:
        """Vertical stretch of the ventricular ellipse so the heart reaches from the hila to the domes."""
        h0 = math.sqrt((major * math.sin(th)) ** 2 + (minor * math.cos(th)) ** 2)
        a = self.a
        hilum_v = a.v_apex + 0.52 * (self.dome_top(RIGHT) - a.v_apex)
        want = self.dome_top(LEFT) + 0.06 - (hilum_v + 0.1)
        return float(np.clip(want / (2.0 * h0), 1.0, 1.5))

    def ra_geom(self) -> tuple[float, float, float, float]:
        """Right-atrial ellipse (uc, vc, ru, rv)."""
        hw_total = self.ctr * 2.0 * self.a.W * self.heart_scale
        x_r = 0.32 * hw_total
        ru = 0.6 * x_r + 0.04
        rv = 0.24 + 0.2 * (self.ctr - 0.45)
        return self.midline - x_r + ru, self.dome_top(RIGHT) + 0.05 - 0.7 * rv, ru, rv

    def heart_top(self) -> float:
        uc, vc, major, minor, th = self.heart_geom()
        return vc - self._stretch(major, minor, th) * math.sqrt((major * math.sin(th)) ** 2 + (minor * math.cos(th)) ** 2)

    def medi_half(self, v: np.ndarray, side: int) -> np.ndarray:
        """Half-width of the upper mediastinum (lung medial border) at height ``v``."""
        a = self.a
        ht = self.heart_top()
        base = a.medi_w + self.medi_extra + np.zeros_like(v)
        if side == LEFT:
            v_knob = ht - 0.09
            base = base + (a.knob + 0.3 * self.medi_extra) * np.exp(-(((v - v_knob) / 0.05) ** 2))
        else:
            base = base + 0.01 * smoothstep((v - (ht - 0.25)) / 0.2)
        retro = 0.035
        w = smoothstep((v - (ht + 0.04)) / 0.12)
        return base * (1 - w) + retro * w

    def dome(self, a_dist: np.ndarray, side: int) -> np.ndarray:
        """Height of the hemidiaphragm at distance ``a_dist`` from the midline."""
        a = self.a
        x = (a_dist - 0.42 * a.W) / a.W
        x2 = np.where(x > 0, x * x, 0.25 * x * x)
        return self.dome_top(side) + a.dome_k * x2 + 0.05 * np.maximum(x, 0) ** 3

    def hilum(self, side: int) -> tuple[float, float]:
        """Canonical (u, v) of a hilum."""
        a = self.a
        v = a.v_apex + 0.52 * (self.dome_top(RIGHT) - a.v_apex)
        if side == LEFT:
            return self.midline + 0.14, v - 0.03
        return self.midline - 0.13, v + 0.01

    def side_box(self, side: int, v0: float, v1: float, extra: float = 0.06) -> tuple[slice, slice] | None:
        """Pixel box of one hemithorax between heights v0 and v1."""
        m = self.midline
        w = self.a.W * 1.06 + extra
        return self.g.box(m - w, m, v0, v1) if side == RIGHT else self.g.box(m, m + w, v0, v1)

    # --------------------------------------------------------------------- rendering --------
    def render_anatomy(self, rng: np.random.Generator) -> None:
        """Draw body, lungs, heart, mediastinum, airway, skeleton and textures into the maps."""
        self._body()
        self._lungs()
        self._heart_mediastinum()
        self._airway()
        self._spine()
        self._ribs(rng)
        self._clavicles()
        self._scapulae_humeri()

    def _body(self) -> None:
        g, a = self.g, self.a
        U, V = g.U, g.V
        m = a.mid
        wb_chest = a.W + a.body_margin
        grow = smoothstep((V - (a.v_apex - 0.22)) / 0.32)
        wb = 0.34 + (wb_chest + 0.3 - 0.34) * grow - 0.3 * smoothstep((V - a.v_apex) / 0.6) * grow
        x = (U - m) / wb
        # the chest is flat-sided, the abdomen below the domes rounder (graded toward the flanks)
        belly = smoothstep((V - self.dome_top(RIGHT) - 0.05) / 0.35)
        prof = np.power(np.clip(1.0 - x * x, 0.0, 1.0), 0.45 + 0.2 * belly)
        # the neck and shoulder girdle are thinner (antero-posterior) than the lower chest and abdomen
        thick = a.body_thick * (0.6 + 0.4 * smoothstep((V - a.v_apex + 0.1) / 0.55)) * (1.0 + 0.1 * belly)
        self.body += (thick * prof).astype(np.float32)
        if a.breast > 0:
            for side in (RIGHT, LEFT):
                cu = m + side * 0.58 * a.W
                cv = self.dome_top(side) - 0.04
                ru, rv = 0.34 * a.breast**0.5, 0.24 * a.breast**0.5
                box = g.box(cu - ru, cu + ru, cv - rv, cv + rv)
                if box is None:
                    continue
                du = (U[box] - cu) / ru
                dv = (V[box] - cv) / rv
                e = np.sqrt(ellipsoid(du, dv)) * smoothstep((dv + 0.9) / 0.9)
                self.body[box] += (0.03 * a.breast * e).astype(np.float32)

    def _lungs(self) -> None:
        g, a = self.g, self.a
        for side in (RIGHT, LEFT):
            v_lo = float(self.dome_top(side) + a.dome_k * 0.45 + 0.1)
            box = self.side_box(side, a.v_apex - 0.03, v_lo)
            if box is None:
                continue
            U, V = g.U[box], g.V[box]
            ad = side * (U - self.midline)
            d_lat = self.lat(V, side) - ad
            ac = 0.45 * a.W
            v_full = a.v_apex + 0.34
            t = np.clip((v_full - V) / (v_full - a.v_apex), 0.0, 1.0)
            med = ac - (ac - self.medi_half(V, side)) * np.sqrt(1.0 - t * t)
            d_med = ad - med
            d_bot = self.dome(ad, side) - V
            f = (
                np.sqrt(np.clip(d_lat / 0.2, 0.0, 1.0))
                * np.sqrt(np.clip(d_med / 0.05, 0.0, 1.0))
                * np.sqrt(np.clip(d_bot / 0.07, 0.0, 1.0))
            )
            depth = a.lung_depth * (0.7 + 0.3 * np.clip((V - a.v_apex) / (self.dome_top(side) - a.v_apex), 0, 1))
            self.air[box] += (depth * f).astype(np.float32)

    def heart_borders(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Right and left cardiomediastinal borders (distances from the midline) at heights ``v``.

        One continuous outline from the top of the heart to the diaphragm. Right border: the superior
        vena cava runs straight down at the mediastinal width, then the right atrium bulges out
        (widest about 60% of the way down) to the cardiophrenic angle. Left border: the pulmonary
        trunk (a small convexity just below the aortic knob drawn by :meth:`medi_half`), the flat
        left atrial appendage, then the long convex left ventricle reaching its widest point low and
        rounding into the apex on the left hemidiaphragm. Widths follow the cardiothoracic ratio
        (about 68% of the heart's width lies left of the midline).
        """
        a = self.a
        hw_total = self.ctr * 2.0 * a.W * self.heart_scale
        x_l, x_r = 0.68 * hw_total, 0.32 * hw_total + 0.02
        vt, vb = self.heart_top() - 0.05, self.dome_top(LEFT) + 0.06
        sv = np.clip((np.asarray(v, dtype=np.float32) - vt) / (vb - vt), 0.0, 1.3)
        x_svc = a.medi_w + self.medi_extra
        right = x_svc + np.maximum(x_r - x_svc, 0.0) * np.sqrt(np.clip(1.0 - ((sv - 0.62) / 0.66) ** 2, 0.0, 1.0))
        x_la = a.medi_w + 0.015 + 0.5 * self.medi_extra
        up = np.sqrt(np.clip(1.0 - ((np.minimum(sv, 0.78) - 0.78) / 0.74) ** 2, 0.0, 1.0))
        apex = np.sqrt(np.clip(1.0 - ((np.maximum(sv, 0.78) - 0.78) / 0.42) ** 2, 0.0, 1.0))
        left = (x_la + (x_l - x_la) * up) * apex + 0.022 * np.exp(-(((sv - 0.04) / 0.07) ** 2))
        return right.astype(np.float32), left.astype(np.float32)

    def _heart_mediastinum(self) -> None:
        """Heart thickness under one continuous cardiomediastinal outline (see :meth:`heart_borders`)."""
        g = self.g
        a = self.a
        m = self.midline
        vt, vb = self.heart_top() - 0.05, self.dome_top(LEFT) + 0.06
        hw_total = self.ctr * 2.0 * a.W * self.heart_scale
        box = g.box(m - 0.32 * hw_total - 0.06, m + 0.68 * hw_total + 0.06, vt - 0.05, vb + 0.2)
        if box is None:
            return
        U, V = g.U[box], g.V[box]
        right, left = self.heart_borders(V)
        c = m + 0.5 * (left - right)
        h = np.maximum(0.5 * (left + right), 1e-3)
        q = (U - c) / h
        # flattened ellipse cross-section: a thick, fairly even centre with a short fall-off at the
        # borders; it fades in over the top where the great vessels cover it
        p = np.power(np.clip(1.0 - q * q, 0.0, 1.0), 0.4) * smoothstep((V - vt + 0.04) / 0.1)
        self.heart_prof[box] = np.maximum(self.heart_prof[box], p.astype(np.float32))
        # the heart (water density) displaces most of the lung air in front of and behind it; some
        # retrocardiac lung stays visible through it
        self.occl = np.maximum(self.occl, 0.86 * self.heart_prof).astype(np.float32)

    def _airway(self) -> None:
        a = self.a
        ht = self.heart_top()
        v_car = ht - 0.0
        m = self.midline
        tr = 0.038
        self.segment(m + 0.01, -1.1, m - 0.005, v_car, tr, 0.14, target="air_tube")
        self.segment(m - 0.005, v_car, m - 0.12, v_car + 0.11, 0.027, 0.1, target="air_tube")
        self.segment(m - 0.005, v_car, m + 0.13, v_car + 0.08, 0.025, 0.1, target="air_tube")
        # gastric air bubble under the left hemidiaphragm: a round/oval fundal air pocket with a flat
        # air-fluid level (upright), present in most patients
        rr = np.random.default_rng([int(a.rib_jitter * 2**31), 5])
        if rr.random() < 0.8:
            g = self.g
            ru = rr.uniform(0.07, 0.12)
            rv = ru * rr.uniform(0.7, 1.0)
            cu = m + rr.uniform(0.3, 0.5) * a.W
            cv = float(self.dome(np.float32(cu - m), LEFT)) + 0.02 + rv
            level = rr.uniform(0.1, 0.6) if rr.random() < 0.6 else 2.0  # fluid level (rv units), or none
            depth = rr.uniform(0.08, 0.2)
            box = g.box(cu - ru, cu + ru, cv - rv, cv + rv)
            if box is not None:
                du, dv = (g.U[box] - cu) / ru, (g.V[box] - cv) / rv
                edge = g.px / rv
                bubble = np.sqrt(ellipsoid(du, dv)) * smoothstep((level - dv) / (1.5 * edge))
                self.airway[box] = np.maximum(self.airway[box], (depth * bubble).astype(np.float32))
        self._bowel_gas(rr)

    def _bowel_gas(self, rr: np.random.Generator) -> None:
        """Colonic gas below the diaphragm: a few irregular lucent pockets with haustral folds.

        The splenic flexure lies under the left dome lateral to the stomach, the hepatic flexure
        lower under the liver edge, the transverse colon lower across the abdomen.
        """
        g, a = self.g, self.a
        m = self.midline
        spots = [(LEFT, 0.7, 0.14), (RIGHT, 0.55, 0.3), (LEFT, 0.25, 0.38), (RIGHT, 0.15, 0.42), (LEFT, 0.5, 0.3)]
        for side, fu, dvv in spots:
            if rr.random() < 0.45:
                continue
            cu = m + side * (fu * a.W + rr.uniform(-0.06, 0.06))
            cv = float(self.dome(np.float32(abs(cu - m)), side)) + dvv + rr.uniform(0.0, 0.12)
            ru, rv = rr.uniform(0.04, 0.1), rr.uniform(0.025, 0.05)
            box = g.box(cu - ru, cu + ru, cv - 1.6 * rv, cv + 1.6 * rv)
            if box is None:
                continue
            du, dv = (g.U[box] - cu) / ru, (g.V[box] - cv) / rv
            # a bent loop (the bowel curves) with soft walls and shallow haustral indentations
            dv = dv - rr.uniform(-0.6, 0.6) * du * du
            folds = 0.75 + 0.25 * np.cos(np.pi * du * rr.uniform(1.5, 2.5) + rr.uniform(0, 6)) ** 2
            pocket = ellipsoid(du, dv) * folds
            self.airway[box] = np.maximum(self.airway[box], (rr.uniform(0.03, 0.065) * pocket).astype(np.float32))

    def _spine(self) -> None:
        g, a = self.g, self.a
        ms = a.mid + self.spine_shift
        box = g.box(ms - 0.16, ms + 0.16, -1.05, 1.05)
        if box is None:
            return
        U, V = g.U[box], g.V[box]
        s = a.rib_space
        bw = 0.075 + 0.02 * smoothstep((V + 0.2) / 1.2)
        du = U - ms
        body = tube(np.abs(du) / bw, inner=0.82, core=0.55)
        ph = (V - self.v_rib1) / s + 0.35
        fr = ph - np.floor(ph)
        disc = 1.0 - 0.5 * np.exp(-(((fr - 0.9) / 0.05) ** 2)) + 0.25 * np.exp(-(((fr - 0.82) / 0.025) ** 2))
        ped = np.zeros_like(U)
        for sgn in (-1.0, 1.0):
            pu = (du - sgn * 0.62 * bw) / 0.02
            pv = (fr - 0.35) * s / 0.028
            r2 = pu * pu + pv * pv
            ped += np.where(r2 < 1.0, 0.6 + 0.6 * np.exp(-(((np.sqrt(r2) - 0.85) / 0.15) ** 2)), 0.0)
        spin = np.exp(-((du / 0.012) ** 2) - (((fr - 0.6) * s / 0.03) ** 2)) * 0.5
        val = 0.09 * body * disc + 0.04 * ped + 0.03 * spin
        self.bone[box] += val.astype(np.float32)

    # ---------------------------------------------------------------------------- ribs -------
    def rib_table(self) -> list[dict[str, float]]:
        """Per-rib geometry of this patient (both sides, posterior and anterior arcs).

        Spacing, width and curvature vary a little per rib and per patient (drawn from a generator
        seeded by the anatomy, so follow-up studies of a patient keep the same ribs). Each entry
        describes an arc ``v(t) = v0 + A t^3.5 - B sin(pi t^0.8) + D (1 - t)^1.1`` for ``t`` in [0, 1]
        running from ``a0`` to ``a1`` (distance from the midline), with half-width ``hw``,
        ``post`` (1 = posterior arc) and the rib index ``k``/``side``. A posterior arc leaves the
        spine, rises (``B``) and sweeps down along the lateral chest wall (``A``); upper ribs are
        short tight arcs, lower ribs longer and more oblique. The anterior arc of the same rib starts
        at the lateral end of the posterior arc and slopes down medially (``D``) toward the costal
        cartilage.
        """
        if self._rib_cache is not None:
            return self._rib_cache
        a = self.a
        s = a.rib_space
        rr = np.random.default_rng(int(a.rib_jitter * 2**31))
        curve_pat = rr.uniform(0.85, 1.2)
        width_pat = rr.uniform(0.85, 1.15)
        out: list[dict[str, float]] = []
        for side in (RIGHT, LEFT):
            steps = s * (1.0 + rr.normal(0.0, 0.06, 11))
            steps[0] = 0.0
            v0s = self.v_rib1 + np.cumsum(steps) + rr.normal(0.0, 0.006)
            lat_max = self.lat(v0s + 1.0 * s, side)  # lateral border a rib space below each crest
            for k in range(11):  # the 12th rib lies below the diaphragm
                # posterior arcs rise ~0.6-0.9 rib spaces from their medial end before sweeping down, so
                # the medial end sits below the arc's crest (v0s are crest heights)
                rise = (1.25 + 0.35 * max(0, 3 - k) / 3) * s * curve_pat * rr.uniform(0.85, 1.15)
                drop = (2.3 + 0.12 * min(k, 6)) * s * curve_pat * rr.uniform(0.88, 1.12)
                v0 = float(v0s[k]) + 0.75 * rise - 0.05 * drop
                a_max = float(lat_max[k]) + 0.035
                if k == 0:
                    a_max = 0.5 * a.W
                    rise, drop = 1.5 * rise, 1.2 * drop
                hw = 0.36 * s * width_pat * rr.uniform(0.88, 1.12) * (0.8 if k == 0 else 1.0)
                out.append({"side": side, "k": k, "post": 1, "a0": 0.045, "a1": a_max, "v0": v0,
                            "A": drop, "B": rise, "D": 0.0, "hw": hw})
                if k == 0 or k > 9:
                    continue
                v_lat = v0 + drop
                out.append({"side": side, "k": k, "post": 0, "a0": 0.28 * a.W + 0.012 * k, "a1": a_max - 0.01,
                            "v0": v_lat, "A": 0.0, "B": 0.0, "D": (1.9 + 0.05 * k) * s * rr.uniform(0.9, 1.1),
                            "hw": 0.34 * s * width_pat * rr.uniform(0.85, 1.15)})
        self._rib_cache = out
        return out

    def _ribs(self, rng: np.random.Generator) -> None:
        """Draw all rib arcs in one vectorised pass over (rib, column) pairs and a band of rows.

        For every column an arc crosses, only the few rows around its centre line are evaluated; the
        in-plane tilt is small, so each column's canonical ``u`` is taken at the arc's mean height
        while the distance to the centre line uses each pixel's exact ``V``.
        """
        g = self.g
        n = g.size
        amp = 0.085 * rng.uniform(0.8, 1.2)
        table = self.rib_table()
        keys = ("side", "k", "post", "a0", "a1", "v0", "A", "B", "D", "hw")
        P = {k: np.array([r[k] for r in table], dtype=np.float64) for k in keys}
        tf = np.full(len(table), np.nan)
        disp, gaps, angs, calls = (np.zeros(len(table)) for _ in range(4))
        for s_, k_, t_, d_, gap_, ang_, call_ in self.fractures:
            hit = (P["side"] == s_) & (P["k"] == k_) & (P["post"] == 1)
            tf[hit], disp[hit], gaps[hit], angs[hit], calls[hit] = t_, d_, gap_, ang_, call_
        m = self.a.mid + self.spine_shift * 0.6
        c, sn = math.cos(g.tilt), math.sin(g.tilt)
        vm = P["v0"] + 0.25 * P["A"] - 0.6 * P["B"] + 0.4 * P["D"]
        xi = (np.arange(n) + 0.5) / n * 2.0 - 1.0
        um = ((xi[None, :] - g.shift[0]) / g.zoom + sn * vm[:, None]) / c  # (ribs, columns)
        L = P["a1"] - P["a0"]
        t = (P["side"][:, None] * (um - m) - P["a0"][:, None]) / L[:, None]
        ri, ci = np.nonzero((t >= 0.0) & (t <= 1.0))
        if ri.size == 0:
            return
        t, um = t[ri, ci], um[ri, ci]
        A, B, D, hw, post, Lr = P["A"][ri], P["B"][ri], P["D"][ri], P["hw"][ri], P["post"][ri], L[ri]
        t8 = np.power(np.maximum(t, 1e-6), 0.8)
        vc = rib_arc_v(P["v0"][ri], A, B, D, t)
        slope = (3.5 * A * t**2.5 - 0.8 * math.pi * B * np.cos(np.pi * t8) * t8 / np.maximum(t, 1e-6)
                 - 1.1 * D * (1.0 - t) ** 0.1) / Lr
        # posterior arcs fade in at the spine; anterior arcs (thinner cortex, fainter) fade out toward
        # the costal cartilage at their medial end
        w_post = (0.35 + 0.65 * smoothstep(t / 0.1)) * (1.0 - 0.25 * smoothstep((t - 0.85) / 0.15))
        w_ant = 0.42 * smoothstep((t - 0.05) / 0.6) * (1.0 - 0.2 * smoothstep((t - 0.85) / 0.15))
        w = amp * np.where(post > 0, w_post, w_ant)
        fr = ~np.isnan(tf[ri])
        hwe = hw * np.sqrt(1.0 + slope * slope)
        if np.any(fr):
            # a fracture (see findings.apply_geometry): a lucent line across the whole rib, the lateral
            # fragment stepped down by ``disp`` rib half-widths and angulated (the step and the tilt
            # fade out laterally so the fragment rejoins the lateral arc), bright sclerotic fragment
            # ends; a healing fracture is bridged by callus, a bright fusiform thickening of the rib about
            # 2-3 cm long and up to twice its width (adjacent healed breaks read as a row of bony knobs)
            x = (t[fr] - tf[ri][fr]) * Lr[fr]
            d_, gap, ang, cal = disp[ri][fr], gaps[ri][fr], angs[ri][fr], calls[ri][fr]
            xl = np.maximum(x, 0.0)
            fade = np.exp(-xl / 0.35)
            vc[fr] += (d_ * hw[fr] * smoothstep(x / (0.3 * gap) + 0.5) + ang * xl) * fade * (1.0 - 0.4 * cal)
            ends = np.exp(-(((np.abs(x) - 0.7 * gap) / (0.3 * gap)) ** 2))
            dens, wide = _break_factors(x, gap, cal, 2.0 * gap, bright=2.4, widen=1.1, ends=0.5 * ends)
            w[fr] *= dens
            hwe[fr] *= wide
        row_c = np.rint(((sn * um + c * vc) * g.zoom + g.shift[1] + 1.0) * 0.5 * n - 0.5).astype(np.int64)
        # half-height of the band of rows per (rib, column); steep parts get a wider band
        Ri = np.ceil(hwe * (g.zoom * 0.5 * n / max(c, 0.5))).astype(np.int64) + 1
        r_small = int(percentiles(Ri, (90.0,))[0])
        base = row_c * n + ci
        flat_l, pair_l = [], []
        for sel in (np.nonzero(Ri <= r_small)[0], np.nonzero(Ri > r_small)[0]):
            if sel.size == 0:
                continue
            R = int(Ri[sel].max())
            off = np.arange(-R, R + 1)
            rows = row_c[sel, None] + off[None, :]
            ok = (rows >= 0) & (rows < n) & (np.abs(off)[None, :] <= Ri[sel, None])
            pair_l.append(np.broadcast_to(sel[:, None], rows.shape)[ok])
            flat_l.append((base[sel, None] + n * off[None, :])[ok])
        pair, flat = np.concatenate(pair_l), np.concatenate(flat_l)
        # per-pixel tube profile (cortical rim, lighter marrow: tube(d, inner, core=0.3)) in float32
        d = np.abs(g.V.ravel()[flat] - vc.astype(np.float32)[pair]) * (1.0 / hwe).astype(np.float32)[pair]
        d2 = np.minimum(d * d, np.float32(1.0))
        in2 = np.where(post > 0, 0.62**2, 0.55**2).astype(np.float32)[pair]
        prof = np.sqrt(1.0 - d2) - np.float32(0.7) * np.sqrt(np.maximum(in2 - d2, np.float32(0.0)))
        # accumulate over the span of pixels the bands touch only (same per-pixel sums and order)
        f0 = int(flat.min())
        # (float64 weights: np.bincount converts float32 ones itself, several times slower)
        acc = np.bincount(flat - f0, weights=(prof * w.astype(np.float32)[pair]).astype(np.float64))
        bone = self.bone.reshape(-1)[f0 : f0 + acc.size]
        bone += acc.astype(np.float32)

    def _clavicles(self) -> None:
        """Clavicles from the sternal ends out and up to the acromioclavicular joints (S-shaped tubes)."""
        g, a = self.g, self.a
        v_m = a.clav_v - (0.1 if self.ap else 0.0)
        rise = 0.15 if not self.ap else 0.06
        m = a.mid + self.spine_shift * 0.8
        a0, a1 = 0.07, a.W + 0.17
        shaft = 1.3  # shaft width scale (the reference radiographs' clavicles are ~9-10 px thick at 256 px)

        def f(t: np.ndarray) -> np.ndarray:
            return v_m - rise * t**1.5 + 0.025 * np.sin(2 * np.pi * t)

        for side in (RIGHT, LEFT):
            u0, u1 = (m + a0, m + a1) if side == LEFT else (m - a1, m - a0)
            box = g.box(u0, u1, v_m - rise - 0.12, v_m + 0.14)
            if box is None:
                continue
            U, V = g.U[box], g.V[box]
            x = side * (U - m)
            t = np.clip((x - a0) / (a1 - a0), 0, 1)
            inside = (x >= a0) & (x <= a1)
            hw = shaft * (0.024 + 0.016 * (1 - t) ** 2 + 0.01 * smoothstep((t - 0.75) / 0.25))
            vc = f(t)
            fade = smoothstep(t / 0.05 + 0.3) * (1.0 - 0.5 * smoothstep((t - 0.93) / 0.07))
            cf = self.clavicle_fracture
            if cf is not None and cf[0] == side:
                # a midshaft break. The lateral fragment is pulled down (by the arm's weight; the step
                # fades a little toward the acromioclavicular joint) and, when displaced by a shaft width
                # or more, medially past the break, so the fragments override: over ``ov`` both broken
                # ends are present, one above the other (a doubled, brighter stretch of bone), each with
                # a sclerotic end. The medial fragment's end is pulled up (sternocleidomastoid). A
                # barely displaced (subtle) break is a lucent line instead; a healing one is bridged by
                # a bright fusiform callus and overrides half as far.
                _, tf, disp, gap, cal = cf
                xl = (t - tf) * (a1 - a0)
                w0 = shaft * 0.028
                step = disp * w0 * (1.0 - 0.6 * cal)
                ov = (1.3 * gap if disp >= 1.0 else 0.0) * (1.0 - 0.5 * cal)
                vc_lat = vc + step * (1.0 - 0.35 * smoothstep((t - tf) / (1.0 - tf)))
                vc_med = vc - 0.4 * step * np.exp(-np.maximum(-xl, 0.0) / 0.08)
                m_lat = smoothstep((xl + 0.5 * ov) / (0.4 * gap) + 0.5)
                m_med = smoothstep((0.5 * ov - xl) / (0.4 * gap) + 0.5)
                ends = 0.6 * (np.exp(-(((xl + 0.5 * ov) / (0.5 * gap)) ** 2)) * m_lat
                              + np.exp(-(((xl - 0.5 * ov) / (0.5 * gap)) ** 2)) * m_med)
                dens, wide = _break_factors(xl, gap, cal, 2.2 * gap + 0.02, bright=0.9, widen=1.2, ends=ends,
                                            lucent=ov == 0.0)
                hw = hw * wide
                prof = (m_med * tube(np.abs(V - vc_med) / hw, inner=0.62, core=0.35)
                        + m_lat * tube(np.abs(V - vc_lat) / hw, inner=0.62, core=0.35))
                prof = np.minimum(prof, 1.6) * dens * fade
                if cal == 0.0 and disp >= 1.0:
                    self._clavicle_haematoma(m + side * (a0 + tf * (a1 - a0)), float(f(np.float32(tf))), disp)
            else:
                prof = tube(np.abs(V - vc) / hw, inner=0.62, core=0.35) * fade
            self.bone[box] += np.where(inside, 0.26 * prof, 0.0).astype(np.float32)

    def _clavicle_haematoma(self, u: float, v: float, disp: float) -> None:
        """Soft-tissue swelling over an acute displaced clavicle fracture at ``(u, v)``.

        Bleeding around the break bulges the supraclavicular soft tissue: a smooth lens of water
        density, wider along the bone than high and centred a little above it, about 3-4.5 cm thick at
        its centre (0.17-0.25 canonical units, growing with the step ``disp`` in shaft widths).
        """
        g = self.g
        hu, hv, vc = 0.17, 0.09, v - 0.025
        box = g.box(u - hu, u + hu, vc - hv, vc + hv)
        if box is None:
            return
        self.body[box] += (0.1 * disp * ellipsoid((g.U[box] - u) / hu, (g.V[box] - vc) / hv)).astype(np.float32)

    def _scapulae_humeri(self) -> None:
        """Scapulae (body, lateral border, acromion), humeral heads and necks at the upper corners."""
        g, a = self.g, self.a
        v_ac = a.clav_v - (0.1 if self.ap else 0.0) - (0.15 if not self.ap else 0.06)
        rr = np.random.default_rng([int(a.rib_jitter * 2**31), 11])
        for side in (RIGHT, LEFT):
            m = a.mid
            # scapula: a thin plate lateral to its medial border, brighter rim (over the lung on AP views)
            inset = 0.22 if self.ap else 0.02
            box = g.box(m - side * 0.0, m + side * (a.W + 0.35), a.v_apex - 0.05, a.v_apex + 0.85)
            if box is not None:
                U, V = g.U[box], g.V[box]
                ad = side * (U - m)
                t = np.clip((V - (a.v_apex + 0.05)) / 0.75, 0, 1)
                border = a.W - inset + 0.03 - 0.05 * t + (0.22 + inset) * t * t
                top = smoothstep((V - (a.v_apex + 0.02)) / 0.06)
                bottom = 1 - smoothstep((V - (a.v_apex + 0.7)) / 0.1)
                inside = smoothstep((ad - border) / 0.012) * top * bottom
                rim = np.exp(-(((ad - border) / 0.01) ** 2)) * top * bottom
                self.bone[box] += (0.035 * inside + 0.045 * rim).astype(np.float32)
            hu = m + side * (a.W + rr.uniform(0.17, 0.24))
            hv = v_ac + rr.uniform(0.08, 0.13)
            r = rr.uniform(0.12, 0.145)
            # thick lateral border of the scapula from the glenoid down toward the inferior angle
            self.segment(hu - side * (r + 0.01), hv + 0.03, m + side * (a.W - 0.1), hv + 0.6, 0.022, 0.07,
                         inner=0.55, core=0.4)
            # acromion over the top of the humeral head, reaching the clavicle's lateral end
            self.segment(m + side * (a.W + 0.14), v_ac - 0.01, hu + side * 0.1, hv - r - 0.01, 0.022, 0.09,
                         inner=0.5, core=0.4)
            # humeral head (cortical rim, trabecular centre) and the neck/shaft below it
            box = g.box(hu - r, hu + r, hv - r, hv + r)
            if box is not None:
                du = (g.U[box] - hu) / r
                dv = (g.V[box] - hv) / r
                self.bone[box] += (0.18 * tube(np.sqrt(du * du + dv * dv), inner=0.9, core=0.7)).astype(np.float32)
            self.segment(hu + side * 0.02, hv + 0.5 * r, hu + side * 0.07, hv + 0.6, 0.065, 0.12, inner=0.7, core=0.35)
            # the arm's soft tissue around the humerus (the axilla stays a darker gap below the shoulder)
            self.segment(hu + side * 0.03, hv - 0.02, hu + side * 0.1, hv + 1.2, 0.19, 0.24, target="body")

    # ------------------------------------------------------------------ primitives ----------
    def segment(
        self, u0: float, v0: float, u1: float, v1: float, r: float, amp: float, target: str = "bone",
        inner: float = 0.0, core: float = 0.0,
    ) -> None:
        """Add a capsule (cylinder seen side-on) from (u0, v0) to (u1, v1) of radius ``r``.

        ``target`` is a map name; ``"air_tube"`` adds air that is not occluded by the mediastinum.
        """
        g = self.g
        box = g.box(min(u0, u1) - r, max(u0, u1) + r, min(v0, v1) - r, max(v0, v1) + r)
        if box is None:
            return
        U, V = g.U[box], g.V[box]
        du, dv = u1 - u0, v1 - v0
        L2 = du * du + dv * dv + 1e-12
        t = np.clip(((U - u0) * du + (V - v0) * dv) / L2, 0.0, 1.0)
        d = np.hypot(U - (u0 + t * du), V - (v0 + t * dv)) / r
        val = (amp * tube(d, inner=inner, core=core)).astype(np.float32)
        if target == "air_tube":
            self.airway[box] = np.maximum(self.airway[box], val)
        else:
            getattr(self, target)[box] += val
