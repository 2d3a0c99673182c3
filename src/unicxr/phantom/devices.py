"""Support devices drawn as metal/radiopaque paths: ET tube, enteric tube, central lines, PICC,
pacemaker with leads, sternotomy wires and chest tubes."""

from __future__ import annotations

import math

import numpy as np

from unicxr.phantom.anatomy import LEFT, RIGHT, Scene
from unicxr.phantom.grid import blur

__all__ = ["render_devices", "ett_tip_cm", "catmull_rom"]

CM = 0.05  # canonical units per centimetre (the image spans ~40 cm)
_ETT_TIP = {"high": 7.0, "standard": 4.5, "low": 1.5}


def ett_tip_cm(position: str) -> float:
    """Distance of the ET tube tip above the carina (cm) for a position label."""
    return _ETT_TIP.get(position, 4.5)


def catmull_rom(ctrl: list[tuple[float, float]], step: float) -> np.ndarray:
    """Points every ~``step`` along a Catmull-Rom spline through control points.

    Returns:
        float64 array (N, 2) of (u, v) points.
    """
    p = np.asarray(ctrl, dtype=np.float64)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        n = max(2, int(math.ceil(np.linalg.norm(p2 - p1) / step)))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        t2, t3 = t * t, t * t * t
        pts = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)
        out.append(pts)
    out.append(p[-2][None, :])
    return np.concatenate(out)


class _Pen:
    """Accumulates radiopaque paths into one layer per line width."""

    def __init__(self, scene: Scene) -> None:
        self.s = scene
        self.layers: dict[float, np.ndarray] = {}

    def path(self, ctrl: list[tuple[float, float]], amp: float, width_cm: float = 0.15, offset: float = 0.0) -> np.ndarray:
        g = self.s.g
        step = 0.4 * g.px
        pts = catmull_rom(ctrl, step)
        if offset:
            d = np.gradient(pts, axis=0)
            nrm = np.stack([-d[:, 1], d[:, 0]], axis=1)
            nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12
            pts = pts + offset * nrm
        sigma_px = max(0.5, 0.5 * width_cm * CM / g.px)
        sigma_px = round(sigma_px * 4) / 4
        layer = self.layers.setdefault(sigma_px, np.zeros_like(self.s.metal))
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        seg = np.append(seg, seg[-1] if seg.size else 0.0)
        w = amp * math.sqrt(2 * math.pi) * sigma_px * seg / g.px
        g.splat(pts[:, 0], pts[:, 1], w, layer)
        return pts

    def blob(self, cu: float, cv: float, ru: float, rv: float, amp: float, hole: float = 0.0) -> None:
        g = self.s.g
        box = g.box(cu - ru, cu + ru, cv - rv, cv + rv)
        if box is None:
            return
        du, dv = (g.U[box] - cu) / ru, (g.V[box] - cv) / rv
        r = np.maximum(np.abs(du), np.abs(dv)) * 0.6 + np.hypot(du, dv) * 0.4  # rounded rectangle
        val = np.clip((1 - r) / 0.08, 0, 1)
        if hole:
            val = val * (1 - 0.35 * np.clip((hole - r) / 0.05, 0, 1))
        self.s.metal[box] += (amp * val).astype(np.float32)

    def finish(self) -> None:
        for sig, layer in self.layers.items():
            self.s.metal += blur(layer, sig)


def render_devices(scene: Scene, devices: tuple[tuple[str, str, str], ...], rng: np.random.Generator) -> None:
    """Draw devices ``(kind, side, position)`` into ``scene.metal``."""
    if not devices:
        return
    pen = _Pen(scene)
    a = scene.a
    m = scene.midline
    v_car = scene.heart_top()
    uc, vc, major, minor, th = scene.heart_geom()
    ht = v_car
    j = lambda s=0.01: float(rng.normal(0, s))  # noqa: E731
    for kind, side, pos in devices:
        sd = RIGHT if side == "right" else LEFT
        if kind == "ett":
            tip = v_car - ett_tip_cm(pos) * CM
            ctrl = [(m + 0.03 + j(), -1.25), (m + 0.015, -0.85), (m + 0.005, (tip - 0.85) / 2), (m, tip)]
            pen.path(ctrl, 0.05, 0.2, offset=0.026)
            pen.path(ctrl, 0.05, 0.2, offset=-0.026)
            pen.path(ctrl, 0.45, 0.12, offset=0.018)
        elif kind == "enteric":
            dl = scene.dome_top(LEFT)
            ctrl = [(m - 0.01 + j(), -1.25), (m + 0.01, -0.6), (m + 0.04, ht + 0.1), (m + 0.1, dl + 0.02),
                    (m + 0.35 * a.W + j(0.03), dl + 0.16), (m + 0.5 * a.W + j(0.03), dl + 0.12)]
            pen.path(ctrl, 0.35, 0.12)
        elif kind == "cvc":
            tip = {"svc": ht - 0.1, "cavoatrial": ht + 0.02, "atrium": ht + 0.12}.get(pos, ht - 0.1)
            if sd == RIGHT:
                ctrl = [(m - 0.26 + j(), -1.2), (m - 0.17, -0.8), (m - 0.1, -0.5), (m - 0.075, tip)]
            else:
                ctrl = [(m + 0.26 + j(), -1.2), (m + 0.16, -0.75), (m + 0.02, -0.55), (m - 0.065, -0.42), (m - 0.075, tip)]
            pen.path(ctrl, 0.45, 0.12)
        elif kind == "picc":
            tip = {"svc": ht - 0.08, "cavoatrial": ht + 0.02}.get(pos, ht - 0.08)
            ctrl = [(m + sd * 1.2, -0.5 + j(0.03)), (m + sd * (a.W + 0.1), -0.66), (m + sd * 0.45 * a.W, -0.67),
                    (m + sd * 0.14, -0.55), (m - 0.07, -0.4), (m - 0.07, tip)]
            pen.path(ctrl, 0.35, 0.1)
        elif kind == "pacemaker":
            gu, gv = m + sd * (0.55 * a.W + j(0.03)), a.clav_v + 0.16 + j(0.02)
            pen.blob(gu, gv, 0.085, 0.06, 2.2, hole=0.5)
            ra_tip = (m - 0.13, ht + 0.12)
            rv_tip = (uc + 0.45 * major * math.cos(th), vc + 0.45 * major * math.sin(th))
            entry = [(gu - sd * 0.03, gv - 0.01), (m + sd * 0.3 * a.W, a.clav_v + 0.05), (m + sd * 0.12, -0.48),
                     (m - 0.07, -0.35), (m - 0.08, ht + 0.02)]
            pen.path(entry + [(m - 0.02, ht + 0.2), rv_tip], 0.9, 0.2)
            if pos == "dual":
                pen.path(entry[:-1] + [(m - 0.09, ht + 0.14), (m - 0.13, ht + 0.18), ra_tip], 0.9, 0.2)
        elif kind == "sternotomy":
            v0 = a.clav_v + 0.1
            nw = int(rng.integers(5, 8))
            for i in range(nw):
                cv = v0 + i * (vc - v0) / (nw - 1) + j(0.01)
                cu = m + j(0.008)
                t = np.linspace(0, 2 * math.pi, 40)
                ru, rv = 0.035 + j(0.004), 0.012
                ring = [(cu + ru * math.cos(x), cv + rv * math.sin(x)) for x in t]
                pen.path(ring, 1.2, 0.12)
                pen.blob(cu + ru * 0.9, cv, 0.01, 0.012, 1.5)
        elif kind == "chest_tube":
            ctrl = [(m + sd * (a.W + 0.25), scene.dome_top(sd) - 0.02), (m + sd * (a.W - 0.02), scene.dome_top(sd) - 0.1),
                    (m + sd * 0.75 * a.W, a.v_apex + 0.5), (m + sd * 0.45 * a.W, a.v_apex + 0.12)]
            pen.path(ctrl, 0.08, 0.3, offset=0.03)
            pen.path(ctrl, 0.08, 0.3, offset=-0.03)
            pen.path(ctrl, 0.6, 0.12, offset=0.02)
    pen.finish()
