"""One simulated case end to end, and the deterministic patient/study plan of a data set.

``simulate(seed, size, config)`` draws a single case. ``make_plan(seed, n, config)`` lays out a data
set: patients with one or more studies (follow-ups evolve the prior findings and carry comparison
sentences), a patient-level split, and per-case seeds derived from ``(seed, index)`` so that output
does not depend on how many workers render it. ``render_case(plan, size, config)`` draws one plan item.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unicxr.labels import FINDINGS
from unicxr.phantom.acquisition import bone_texture, expose, sample_acquisition
from unicxr.phantom.anatomy import Anatomy, Scene, follow_up_anatomy, sample_anatomy
from unicxr.phantom.config import PhantomConfig
from unicxr.phantom.devices import render_devices
from unicxr.phantom.findings import (
    SEVERITIES,
    Finding,
    apply_geometry,
    evolve_findings,
    render_findings,
    sample_findings,
)
from unicxr.phantom.grid import Grid, upsample
from unicxr.phantom.report import write_report
from unicxr.phantom.vessels import render_vessels

__all__ = ["PhantomCase", "CasePlan", "simulate", "make_plan", "render_case", "MASK_NAMES", "snake"]

MASK_NAMES = ("lungs", "heart", "effusion", "pneumothorax", "opacity", "lesion", "devices")


def snake(name: str) -> str:
    """``"Pleural Effusion"`` -> ``"pleural_effusion"`` (metadata column suffixes)."""
    return name.lower().replace(" ", "_")


@dataclass
class PhantomCase:
    """One simulated radiograph with its ground truth.

    Attributes:
        image: float32 (H, W) in [0, 1], bright = attenuating.
        labels: float32 (14,) in ``FINDINGS`` order, 1/0/-1 and NaN for not mentioned.
        report: full report text with ``FINDINGS:`` and ``IMPRESSION:``.
        sections: report sections by name (examination, indication, technique, comparison, findings, impression).
        masks: boolean (H, W) masks by name (see :data:`MASK_NAMES`); empty when not requested.
        params: flat simulator parameters (anatomy, acquisition, severity/laterality per finding).
    """

    image: np.ndarray
    labels: np.ndarray
    report: str
    sections: dict[str, str]
    masks: dict[str, np.ndarray]
    params: dict[str, object]


@dataclass
class CasePlan:
    """Everything needed to render one case, decided before any pixel is drawn."""

    index: int
    patient: int
    study: int
    anatomy: Anatomy
    findings: dict[str, Finding]
    view: str
    split: str
    seed: int
    prior: dict[str, Finding] | None = None
    change: dict[str, str] = field(default_factory=dict)
    days_since_prior: int = 0
    day: int = 0  # days since the patient's first study


def _view(rng: np.random.Generator, findings: dict[str, Finding], cfg: PhantomConfig) -> str:
    p = cfg.p_ap
    sd = findings.get("Support Devices")
    if sd is not None and any(d[0] in ("ett", "enteric", "cvc", "chest_tube") for d in sd.devices):
        p = max(p, 0.85)
    return "AP" if rng.random() < p else "PA"


def make_plan(seed: int, n: int, cfg: PhantomConfig, first_index: int = 0) -> list[CasePlan]:
    """Lay out ``n`` cases: patients, their studies, findings, views and split.

    Deterministic in ``(seed, n, cfg)``; patient ``p``'s studies come from its own generator.
    """
    plans: list[CasePlan] = []
    pid = 0
    probs = np.asarray(cfg.studies_per_patient, dtype=np.float64)
    probs = probs / probs.sum()
    splits = np.cumsum(np.asarray(cfg.split, dtype=np.float64) / sum(cfg.split))
    while len(plans) < n:
        rng = np.random.default_rng([seed, 1, pid])
        n_studies = 1 + int(rng.choice(len(probs), p=probs))
        u = rng.random()
        split = "train" if u < splits[0] else ("validate" if u < splits[1] else "test")
        anat = sample_anatomy(rng)
        prior: dict[str, Finding] | None = None
        day = 0
        for k in range(n_studies):
            if len(plans) >= n:
                break
            if prior is None:
                found = sample_findings(rng, cfg)
                change: dict[str, str] = {}
                days = 0
            else:
                anat = follow_up_anatomy(anat, rng)
                found, change = evolve_findings(prior, rng, cfg)
                days = int(rng.integers(1, 400))
            day += days
            idx = first_index + len(plans)
            plans.append(CasePlan(idx, pid, k, anat, found, _view(rng, found, cfg), split,
                                  int(np.random.default_rng([seed, 2, idx]).integers(0, 2**62)),
                                  prior, change, days, day))
            prior = found
        pid += 1
    return plans


def _compose(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Total attenuation map (H, W) from the scene's thickness maps."""
    n = scene.g.size
    depth = scene.a.lung_depth
    # float32 throughout, in place; the comments give each quantity as a formula
    # vessels: 8.5 * vessels * sqrt(lung_frac), lung_frac = clip(air / depth, 0, 1)
    ves = scene.air / depth
    np.clip(ves, 0.0, 1.0, out=ves)
    np.sqrt(ves, out=ves)
    ves *= 8.5 * scene.vessels
    # air_eff: air * (1 - occl)
    air_eff = 1.0 - scene.occl
    air_eff *= scene.air
    # parenchymal texture: smooth fine mottling of lung density (feature size ~1/40 of the image);
    # rho: clip(rho * (1 + 0.12 * tex), 0, 1), tex = 2.2 * upsampled noise
    h = 40
    rho = upsample(rng.standard_normal((h, h), dtype=np.float32), n, n, smooth=0.6)
    rho *= 2.2
    rho *= 0.12
    rho += 1.0
    rho *= scene.rho
    np.clip(rho, 0.0, 1.0, out=rho)
    # A = body - max(air_eff - vessels - fill, 0) * (1 - rho) - airway + bone * texture + metal
    air_eff -= ves
    air_eff -= scene.fill
    np.maximum(air_eff, 0.0, out=air_eff)
    np.subtract(1.0, rho, out=rho)
    air_eff *= rho
    A = scene.body - air_eff
    A -= scene.airway
    A += scene.bone * bone_texture(rng, n)
    A += scene.metal
    return A


def render_case(plan: CasePlan, size: int, cfg: PhantomConfig, masks: bool = True) -> PhantomCase:
    """Render one planned case at ``size`` x ``size`` pixels."""
    rng = np.random.default_rng(plan.seed)
    acq = sample_acquisition(rng, plan.view)
    grid = Grid(size, zoom=acq.zoom, tilt=acq.tilt, shift=(acq.shift_x, acq.shift_y))
    scene = Scene(grid, plan.anatomy, ap=plan.view == "AP", spine_shift=acq.rotation)
    f = plan.findings
    apply_geometry(scene, f)
    scene.render_anatomy(rng)
    lung_mask = scene.air > 0.08 * plan.anatomy.lung_depth if masks else None
    edema = f.get("Edema")
    sev = 1 + SEVERITIES.index(edema.severity) if edema is not None else 0
    render_vessels(scene, upper_boost=0.25 * sev, indistinct=0.0)
    mdict: dict[str, np.ndarray] | None = {} if masks else None
    render_findings(scene, f, mdict)
    if "Support Devices" in f:
        render_devices(scene, f["Support Devices"].devices, np.random.default_rng(f["Support Devices"].seed))
    A = _compose(scene, rng)
    image = expose(A, acq, rng, cfg.noise)
    report = write_report(f, np.random.default_rng([plan.seed, 7]), cfg, view=plan.view, sex=plan.anatomy.sex,
                          prior=plan.prior, change=plan.change)
    out_masks: dict[str, np.ndarray] = {}
    if masks and mdict is not None:
        out_masks["lungs"] = lung_mask
        out_masks["heart"] = scene.heart_prof > 0
        out_masks["devices"] = scene.metal > 0.08
        for k in ("effusion", "pneumothorax", "opacity", "lesion"):
            out_masks[k] = mdict.get(k, np.zeros((size, size), dtype=bool))
        out_masks = {k: out_masks[k] for k in MASK_NAMES}
    params: dict[str, object] = {"age": plan.anatomy.age, "sex": plan.anatomy.sex, "ctr": round(scene.ctr, 4)}
    for name in FINDINGS[1:]:
        fi = f.get(name)
        params[f"severity_{snake(name)}"] = fi.severity if fi is not None else ""
        params[f"laterality_{snake(name)}"] = fi.side if fi is not None else ""
    sd = f.get("Support Devices")
    params["devices"] = ";".join(f"{k}:{s}:{p}".rstrip(":") for k, s, p in sd.devices) if sd else ""
    params["change"] = ";".join(f"{k}:{v}" for k, v in sorted(plan.change.items()))
    params["days_since_prior"] = plan.days_since_prior
    params.update(plan.anatomy.as_params())
    params.update(acq.as_params())
    return PhantomCase(image=image, labels=report.labels, report=report.text, sections=report.sections,
                       masks=out_masks, params=params)


def simulate(
    seed: int, size: int = 256, config: PhantomConfig | None = None, *, masks: bool = True,
    findings: dict[str, str] | None = None, view: str | None = None,
) -> PhantomCase:
    """Simulate one frontal chest radiograph.

    Args:
        seed: random seed (same seed and arguments => identical case).
        size: output side in pixels.
        config: prevalence/uncertainty configuration (defaults to :class:`PhantomConfig`).
        masks: also return anatomy/finding masks.
        findings: optional ``{finding name: severity or ""}`` to draw exactly these findings.
        view: force ``"PA"`` or ``"AP"``.

    Returns:
        A :class:`PhantomCase` with ``image`` float32 (size, size) in [0, 1] and ``labels`` (14,).
    """
    cfg = config or PhantomConfig()
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng([seed, 1, 0])
    anat = sample_anatomy(rng)
    if findings is not None:
        unknown = [k for k in findings if k not in FINDINGS[1:]]
        if unknown:
            raise ValueError(f"unknown finding(s) {unknown}; expected names from unicxr.labels.FINDINGS")
        found = sample_findings(rng, cfg, force=findings)
    else:
        found = sample_findings(rng, cfg)
    v = view or _view(rng, found, cfg)
    plan = CasePlan(0, 0, 0, anat, found, v, "train", int(np.random.default_rng([seed, 2, 0]).integers(0, 2**62)))
    return render_case(plan, size, cfg, masks=masks)
