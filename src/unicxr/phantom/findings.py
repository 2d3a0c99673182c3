"""The 13 pathologies as edits of the thickness maps, plus their sampling and evolution.

A :class:`Finding` records what the image shows (severity, side, location, subtype) and whether it
is subtle enough to be reported with a hedge (label -1). ``sample_findings`` draws a study's
findings with co-occurrence (heart failure: cardiomegaly, edema, effusions; infection: pneumonia
with consolidation or opacity; ICU: devices, atelectasis, effusions; trauma: fracture with
pneumothorax). ``evolve_findings`` makes a follow-up study from a prior one. ``apply_geometry``
changes anatomy geometry before the anatomy is drawn (heart size, mediastinum, volume loss, shift);
``render_findings`` edits the drawn maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from unicxr.phantom.anatomy import LEFT, RIGHT, Scene, rib_arc_v
from unicxr.phantom.config import PhantomConfig
from unicxr.phantom.grid import blur, ellipsoid, smoothstep, upsample

__all__ = [
    "Finding",
    "SEVERITIES",
    "LOBES",
    "sample_findings",
    "evolve_findings",
    "apply_geometry",
    "render_findings",
    "DEVICE_KINDS",
    "fracture_ribs",
    "fracture_clavicle",
    "CLAVICLE_SHARE",
    "CLAVICLE_WITH_RIBS",
]

SEVERITIES = ("mild", "moderate", "severe")
LOBES = {
    "right upper lobe": RIGHT,
    "right middle lobe": RIGHT,
    "right lower lobe": RIGHT,
    "left upper lobe": LEFT,
    "lingula": LEFT,
    "left lower lobe": LEFT,
}
DEVICE_KINDS = ("ett", "enteric", "cvc", "picc", "pacemaker", "sternotomy", "chest_tube")
CLAVICLE_SHARE = 0.25  # share of Fracture cases that are clavicle (not rib-only) fractures
# share of clearly seen clavicle fractures that come with rib fractures on the same side: in blunt chest
# trauma, 56-61% of patients with a clavicle fracture also have rib fractures (Sweet et al., Eur J Trauma
# Emerg Surg 2022, a systematic review of 71,572 patients); 0.5 since not every chest film is of polytrauma
CLAVICLE_WITH_RIBS = 0.5


@dataclass(frozen=True)
class Finding:
    """One finding as drawn.

    Attributes:
        name: a pathology name of ``unicxr.labels.FINDINGS``.
        label: 1.0 (clearly present) or -1.0 (subtle, hedged in the report).
        severity: ``mild``/``moderate``/``severe``.
        side: ``right``/``left``/``bilateral`` or ``""``.
        kind: subtype (e.g. ``nodule``/``mass``, ``plate``/``lobar``, lobe name, ``plaque``).
        value: a continuous size (CTR, effusion height fraction, pneumothorax width ...).
        seed: seed of the finding's own random shape.
        devices: for Support Devices, the device list ``((kind, side, position), ...)``.
    """

    name: str
    label: float
    severity: str
    side: str = ""
    kind: str = ""
    value: float = 0.0
    seed: int = 0
    devices: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)


def _side(rng: np.random.Generator, p_bilat: float = 0.0) -> str:
    u = rng.random()
    if u < p_bilat:
        return "bilateral"
    return "right" if rng.random() < 0.55 else "left"


def _severity(rng: np.random.Generator, probs: tuple[float, float, float] = (0.45, 0.35, 0.2)) -> str:
    return SEVERITIES[int(rng.choice(3, p=probs))]


def _value(name: str, sev: str, rng: np.random.Generator, subtle: bool) -> float:
    """Continuous size of a finding for its severity."""
    i = SEVERITIES.index(sev)
    ranges = {
        "Cardiomegaly": ((0.53, 0.57), (0.57, 0.62), (0.62, 0.7)),
        "Enlarged Cardiomediastinum": ((0.03, 0.045), (0.045, 0.065), (0.065, 0.09)),
        "Pleural Effusion": ((0.05, 0.11), (0.13, 0.28), (0.32, 0.55)),
        "Pneumothorax": ((0.06, 0.12), (0.15, 0.28), (0.32, 0.5)),
    }
    if subtle:
        sub = {"Cardiomegaly": (0.5, 0.525), "Pleural Effusion": (0.03, 0.06), "Pneumothorax": (0.04, 0.07),
               "Enlarged Cardiomediastinum": (0.02, 0.03)}
        lo, hi = sub.get(name, (0.5, 0.7))
        return float(rng.uniform(lo, hi))
    lo, hi = ranges.get(name, ((0.4, 0.6), (0.6, 0.8), (0.8, 1.0)))[i]
    return float(rng.uniform(lo, hi))


def _sample_devices(rng: np.random.Generator, ptx_side: str) -> tuple[tuple[str, str, str], ...]:
    devs: list[tuple[str, str, str]] = []
    icu = rng.random() < 0.55
    if icu:
        if rng.random() < 0.75:
            devs.append(("ett", "", str(rng.choice(["high", "standard", "standard", "standard", "low"]))))
        if rng.random() < 0.7:
            devs.append(("enteric", "", "stomach"))
        if rng.random() < 0.8:
            devs.append(("cvc", str(rng.choice(["right", "right", "left"])), str(rng.choice(["svc", "svc", "cavoatrial", "atrium"]))))
    else:
        r = rng.random()
        if r < 0.35:
            devs.append(("pacemaker", str(rng.choice(["left", "left", "left", "right"])), str(rng.choice(["dual", "single"]))))
        elif r < 0.55:
            devs.append(("picc", str(rng.choice(["right", "left"])), str(rng.choice(["svc", "svc", "cavoatrial"]))))
        elif r < 0.8:
            devs.append(("sternotomy", "", ""))
        else:
            devs.append(("cvc", "right", "svc"))
        if rng.random() < 0.25:
            devs.append(("sternotomy", "", ""))
    if ptx_side in ("right", "left") and rng.random() < 0.5:
        devs.append(("chest_tube", ptx_side, ""))
    if not devs:
        devs.append(("cvc", "right", "svc"))
    # de-duplicate kinds, keep order
    seen: set[str] = set()
    out = []
    for d in devs:
        if d[0] not in seen:
            seen.add(d[0])
            out.append(d)
    return tuple(out)


def _make(name: str, rng: np.random.Generator, cfg: PhantomConfig, **kw) -> Finding:
    """Draw one present finding with its attributes."""
    subtle = rng.random() < cfg.uncertain.get(name, 0.0)
    sev = "mild" if subtle else kw.pop("severity", None) or _severity(rng)
    kw.pop("severity", None)
    label = -1.0 if subtle else 1.0
    seed = int(rng.integers(0, 2**31 - 1))
    if name == "Cardiomegaly":
        return Finding(name, label, sev, value=_value(name, sev, rng, subtle), seed=seed)
    if name == "Enlarged Cardiomediastinum":
        return Finding(name, label, sev, value=_value(name, sev, rng, subtle), seed=seed)
    if name == "Pleural Effusion":
        side = kw.get("side") or _side(rng, 0.35)
        return Finding(name, label, sev, side=side, value=_value(name, sev, rng, subtle), seed=seed)
    if name == "Pneumothorax":
        side = kw.get("side") or _side(rng, 0.0)
        return Finding(name, label, sev, side=side, value=_value(name, sev, rng, subtle), seed=seed)
    if name == "Edema":
        return Finding(name, label, sev, side="bilateral", seed=seed)
    if name in ("Consolidation", "Lung Opacity", "Pneumonia"):
        lobe = kw.get("kind") or str(rng.choice(list(LOBES), p=[0.14, 0.12, 0.26, 0.12, 0.1, 0.26]))
        side = "right" if LOBES[lobe] == RIGHT else "left"
        if name == "Lung Opacity" and not kw.get("kind") and rng.random() < 0.25:
            return Finding(name, label, sev, side="bilateral", kind="bibasilar", seed=seed)
        return Finding(name, label, sev, side=side, kind=lobe, seed=seed)
    if name == "Atelectasis":
        kind = "lobar" if sev == "severe" else "plate"
        if kind == "lobar":
            lobe = str(rng.choice(["left lower lobe", "right upper lobe", "right lower lobe"], p=[0.5, 0.25, 0.25]))
            side = "left" if lobe.startswith("left") else "right"
            return Finding(name, label, sev, side=side, kind=lobe, seed=seed)
        side = _side(rng, 0.35)
        return Finding(name, label, sev, side=side, kind="plate", seed=seed)
    if name == "Lung Lesion":
        kind = "mass" if (sev == "severe" or (sev == "moderate" and rng.random() < 0.4)) else "nodule"
        lobe = str(rng.choice(list(LOBES)))
        side = "right" if LOBES[lobe] == RIGHT else "left"
        # radius in canonical units (the report gives the diameter as 40 * value cm): mild nodules
        # 15-22 mm, moderate ones 20-30 mm, masses 32-56 mm
        if kind == "nodule":
            size = rng.uniform(0.038, 0.055) if sev == "mild" else rng.uniform(0.05, 0.075)
        else:
            size = rng.uniform(0.08, 0.14)
        return Finding(name, label, sev, side=side, kind=f"{kind}|{lobe}", value=float(size), seed=seed)
    if name == "Pleural Other":
        kind = "plaques" if rng.random() < 0.4 else "thickening"
        side = "bilateral" if kind == "plaques" else _side(rng)
        return Finding(name, label, sev, side=side, kind=kind, seed=seed)
    if name == "Fracture":
        side = kw.get("side") or _side(rng)
        # one or two ribs when mild, two or three adjacent ribs when moderate, three or four when
        # severe; the uppermost broken rib is the 4th to the 8th (0-based index 3-7), all over the
        # lung. Many fractures seen on chest radiographs are old or healing (callus).
        nrib = {"mild": 1 + int(rng.random() < 0.4), "moderate": int(rng.integers(2, 4))}.get(sev, int(rng.integers(3, 5)))
        rib = int(rng.integers(3, 10 - nrib))
        healing = not subtle and rng.random() < 0.4
        kind = f"rib{rib}x{nrib}" + ("h" if healing else "")
        value = float(rng.uniform(0.45, 0.9))
        # about a quarter are midshaft clavicle fractures (a fall on the shoulder), half of the clearly
        # seen ones with the rib fractures drawn above; drawn from the finding's own stream so the shared
        # one, and with it every other draw, is unchanged
        crng = np.random.default_rng([seed, 7])
        if crng.random() < CLAVICLE_SHARE:
            with_ribs = not subtle and crng.random() < CLAVICLE_WITH_RIBS
            kind = "clavicle" + (f"+rib{rib}x{nrib}" if with_ribs else "") + ("h" if healing else "")
        return Finding(name, label, sev, side=side, kind=kind, value=value, seed=seed)
    if name == "Support Devices":
        devs = _sample_devices(rng, kw.get("ptx_side", ""))
        return Finding(name, 1.0, "", devices=devs, seed=seed)
    raise ValueError(f"unknown finding {name!r}")


def sample_findings(
    rng: np.random.Generator, cfg: PhantomConfig, force: dict[str, str] | None = None
) -> dict[str, Finding]:
    """Draw the findings of a first study, with co-occurrence.

    Args:
        rng: the patient's generator.
        cfg: prevalence/uncertainty configuration.
        force: optional ``{finding: severity}`` (severity may be ``""``) to include regardless of rates;
            when given, no other finding is drawn.

    Returns:
        ``{name: Finding}`` for the present findings (absent ones are missing).
    """
    out: dict[str, Finding] = {}
    if force is not None:
        for name, sev in force.items():
            kw = {"severity": sev} if sev else {}
            out[name] = _make(name, rng, cfg, **kw)
            if sev:
                out[name] = replace(out[name], label=1.0) if out[name].severity == sev else \
                    replace(_make(name, np.random.default_rng(out[name].seed), _no_unc(cfg), severity=sev), label=1.0)
        pn = out.get("Pneumonia")
        if pn is not None and not ({"Consolidation", "Lung Opacity"} & set(out)):
            out["Consolidation"] = Finding("Consolidation", pn.label, pn.severity, pn.side, pn.kind, seed=pn.seed + 1)
        return out
    p = cfg.prevalence
    u = {name: rng.random() for name in p}

    def has(name: str, boost: float = 0.0) -> bool:
        return u[name] < min(1.0, p[name] + boost)

    present: set[str] = set()
    for name in ("Support Devices", "Fracture", "Cardiomegaly", "Lung Lesion", "Pneumonia",
                 "Enlarged Cardiomediastinum", "Pleural Other"):
        if has(name):
            present.add(name)
    sd, card = "Support Devices" in present, "Cardiomegaly" in present
    if has("Edema", 0.2 * card + 0.06 * sd):
        present.add("Edema")
    if not card and "Edema" in present and u["Cardiomegaly"] < p["Cardiomegaly"] + 0.25:
        present.add("Cardiomegaly")
    if has("Pneumothorax", 0.15 * ("Fracture" in present) + 0.03 * sd):
        present.add("Pneumothorax")
    boost = 0.2 * card + 0.3 * ("Edema" in present) + 0.1 * ("Pneumonia" in present) + 0.08 * sd
    boost += 0.08 * ("Lung Lesion" in present)
    if has("Pleural Effusion", boost):
        present.add("Pleural Effusion")
    if has("Atelectasis", 0.12 * sd + 0.1 * ("Pleural Effusion" in present)):
        present.add("Atelectasis")
    if has("Consolidation"):
        present.add("Consolidation")
    if has("Lung Opacity"):
        present.add("Lung Opacity")
    # draw attributes in a fixed order so that the result is deterministic
    order = [n for n in p if n in present]
    for name in order:
        if name in ("Consolidation", "Lung Opacity") and "Pneumonia" in out:
            continue
        kw: dict = {}
        if name == "Fracture" and "Pneumothorax" in present:
            kw["side"] = _side(rng)
        if name == "Pneumothorax" and "Fracture" in out:
            kw["side"] = out["Fracture"].side
        if name == "Support Devices":
            kw["ptx_side"] = ""
        out[name] = _make(name, rng, cfg, **kw)
        if name == "Pneumonia":
            pn = out[name]
            carrier = "Consolidation" if rng.random() < 0.55 else "Lung Opacity"
            out[carrier] = _make(carrier, rng, cfg, kind=pn.kind if pn.side != "bilateral" else None)
            out[carrier] = replace(out[carrier], label=1.0 if pn.label == 1.0 else out[carrier].label,
                                   severity=pn.severity, side=pn.side, kind=pn.kind)
    if "Support Devices" in out and "Pneumothorax" in out and rng.random() < 0.5:
        sdv = out["Support Devices"]
        ptx = out["Pneumothorax"]
        if all(d[0] != "chest_tube" for d in sdv.devices):
            out["Support Devices"] = replace(sdv, devices=sdv.devices + (("chest_tube", ptx.side, ""),))
    return out


def fracture_ribs(kind: str) -> tuple[int, int, bool]:
    """Parse a Fracture ``kind`` (``rib{k}x{n}``, ``clavicle`` or ``clavicle+rib{k}x{n}``, with an
    optional ``h`` suffix for healing fractures).

    Returns:
        ``(k, n, healing)``: 0-based index of the uppermost broken rib (``k + 1`` is its ordinal in
        the report), the number of adjacent broken ribs and whether the fractures are healing (callus).
        A clavicle fracture without rib fractures gives ``(-1, 0, healing)``; see :func:`fracture_clavicle`.
    """
    healing = kind.endswith("h")
    ribs = kind.rstrip("h").partition("rib")[2]
    if not ribs:
        return -1, 0, healing
    k, n = ribs.split("x")
    return int(k), int(n), healing


def fracture_clavicle(kind: str) -> bool:
    """Whether a Fracture ``kind`` includes a clavicle fracture (alone or with rib fractures)."""
    return kind.startswith("clavicle")


def _no_unc(cfg: PhantomConfig) -> PhantomConfig:
    return PhantomConfig(prevalence=cfg.prevalence, uncertain={}, negate=cfg.negate)


def evolve_findings(
    prior: dict[str, Finding], rng: np.random.Generator, cfg: PhantomConfig
) -> tuple[dict[str, Finding], dict[str, str]]:
    """Findings of a follow-up study and how each changed.

    Returns:
        ``(findings, change)`` where ``change[name]`` is one of ``new``, ``increased``,
        ``decreased``, ``unchanged``, ``resolved`` (for findings present before or now).
    """
    out: dict[str, Finding] = {}
    change: dict[str, str] = {}
    for name, f in prior.items():
        if name == "Support Devices":
            if rng.random() < 0.7:
                out[name] = f
                change[name] = "unchanged"
            else:
                change[name] = "resolved"
            continue
        r = rng.random()
        if r < 0.3 and name not in ("Lung Lesion", "Pleural Other", "Fracture"):
            change[name] = "resolved"
            continue
        i = SEVERITIES.index(f.severity) if f.severity in SEVERITIES else 1
        step = int(rng.choice([-1, 0, 0, 1]))
        if name in ("Lung Lesion", "Pleural Other", "Fracture"):
            step = 0
        j = int(np.clip(i + step, 0, 2))
        if j == i or f.label == -1.0:
            out[name] = f
            change[name] = "unchanged"
        else:
            sev = SEVERITIES[j]
            val = _value(name, sev, rng, False) if f.value else f.value
            if name == "Atelectasis":
                out[name] = f
                change[name] = "unchanged"
                continue
            out[name] = replace(f, severity=sev, value=val, label=1.0)
            change[name] = "increased" if j > i else "decreased"
    fresh = sample_findings(rng, cfg.with_prevalence({k: v * 0.4 for k, v in cfg.prevalence.items()}))
    for name, f in fresh.items():
        if name not in out and name not in change:
            if name in ("Consolidation", "Lung Opacity") and "Pneumonia" in out:
                continue
            out[name] = f
            change[name] = "new"
    if "Pneumonia" in out and not ({"Consolidation", "Lung Opacity"} & set(out)):
        pn = out["Pneumonia"]
        out["Consolidation"] = Finding("Consolidation", pn.label, pn.severity, pn.side, pn.kind, seed=pn.seed + 1)
        change["Consolidation"] = "new" if "Consolidation" not in prior else "unchanged"
    return out, change


# ------------------------------------------------------------------------------ geometry -----
def _sides(side: str) -> tuple[int, ...]:
    return {"right": (RIGHT,), "left": (LEFT,), "bilateral": (RIGHT, LEFT)}.get(side, ())


def apply_geometry(scene: Scene, findings: dict[str, Finding]) -> None:
    """Change anatomy geometry before drawing: heart size, mediastinum, volume loss, shifts."""
    f = findings.get("Cardiomegaly")
    if f is not None:
        scene.ctr = f.value
    f = findings.get("Enlarged Cardiomediastinum")
    if f is not None:
        scene.medi_extra = f.value
    f = findings.get("Atelectasis")
    if f is not None and f.kind != "plate":
        s = RIGHT if f.side == "right" else LEFT
        scene.dome_shift[s] -= 0.07
        scene.mediastinal_shift += 0.03 * s
    f = findings.get("Pleural Effusion")
    if f is not None and f.severity == "severe" and f.side != "bilateral" and f.label == 1.0:
        scene.mediastinal_shift -= 0.04 * (RIGHT if f.side == "right" else LEFT)
    f = findings.get("Pneumothorax")
    if f is not None and f.severity == "severe" and f.label == 1.0:
        s = RIGHT if f.side == "right" else LEFT
        scene.mediastinal_shift -= 0.04 * s
        scene.dome_shift[s] += 0.04
    if "Support Devices" in findings and any(d[0] == "sternotomy" for d in findings["Support Devices"].devices):
        pass
    f = findings.get("Fracture")
    if f is not None:
        rib, nrib, healing = fracture_ribs(f.kind)
        s = RIGHT if f.side == "right" else LEFT
        # rib k (0-based) is the (k+1)th rib, as the report names it; the break lies on the lateral
        # part of the posterior arc over the lung, lateral to the heart border and before the rib turns
        # down along the chest wall (value 0.45-0.9 -> t 0.52-0.8 of the arc). Sizes are canonical units (the image is ~2 units wide):
        # the lucent fracture line is 1.6-2.4% of the image wide, the lateral fragment steps down by
        # 0.9-1.8 rib half-widths (about half to nearly one rib width) and is angulated.
        t0 = 0.52 + 0.28 * (f.value - 0.45) / 0.45
        i = SEVERITIES.index(f.severity)
        callus = 1.0 if healing else 0.0
        if fracture_clavicle(f.kind):
            # midshaft clavicle fracture: the lateral fragment drops (by clavicle shaft widths), the
            # medial one is pulled up at its broken end; ``t`` is along the clavicle (0 = sternal end)
            if f.label == -1.0:
                gap, disp = 0.015, 0.25
            else:
                # (a mild break of 0.035 / 1.2 widths was a 2-3 px step at 256 px, rarely learnable)
                gap, disp = (0.045, 0.05, 0.055)[i], (1.7, 2.1, 2.5)[i]
            scene.clavicle_fracture = (s, 0.42 + 0.16 * (f.value - 0.45) / 0.45, disp, gap, callus)
        if nrib == 0:
            return
        if f.label == -1.0:  # subtle: a thin, barely displaced line
            gap, disp, ang = 0.02, 0.4, 0.0
        else:
            gap, disp, ang = (0.045, 0.055, 0.065)[i], (1.5, 2.0, 2.5)[i], (0.15, 0.25, 0.35)[i]
        # the breaks of adjacent ribs roughly line up along the chest wall, not exactly
        jit = np.random.default_rng([f.seed, 3]).uniform(-0.06, 0.06, nrib)
        scene.fractures = [(s, rib + j, float(np.clip(t0 - 0.02 * j + jit[j], 0.52, 0.82)), disp, gap,
                            ang * (1.0 if j % 2 == 0 else 0.6), callus) for j in range(nrib)]


# ------------------------------------------------------------------------------ drawing ------
def _noise_field(rng: np.random.Generator, n: int, scale_px: float) -> np.ndarray:
    """Smooth random field (H, W) in roughly [-1, 1] with feature size ``scale_px``."""
    m = max(4, int(n / max(scale_px, 1.0)))
    small = rng.standard_normal((m, m)).astype(np.float32)
    big = upsample(small, n, n, smooth=0.7)
    return np.clip(big / (big.std() + 1e-6), -2.0, 2.0).astype(np.float32)


def _lobe_center(scene: Scene, lobe: str) -> tuple[float, float, float, float]:
    """(u, v, ru, rv) of a lobe's projected airspace region."""
    side = LOBES[lobe]
    a = scene.a
    hu, hv = scene.hilum(side)
    top, bot = a.v_apex, scene.dome_top(side)
    m = scene.midline
    W = a.W
    if lobe.endswith("upper lobe"):
        return m + side * 0.52 * W, top + 0.3 * (bot - top), 0.3 * W, 0.22 * (bot - top)
    if lobe == "right middle lobe":
        return m - 0.33 * W, bot - 0.22 * (bot - top), 0.26 * W, 0.14 * (bot - top)
    if lobe == "lingula":
        return m + 0.42 * W, bot - 0.25 * (bot - top), 0.24 * W, 0.15 * (bot - top)
    return m + side * 0.6 * W, bot - 0.12 * (bot - top), 0.3 * W, 0.16 * (bot - top)


def _lesion_center(
    scene: Scene, lobe: str, r: float, lung_frac: np.ndarray, rng: np.random.Generator
) -> tuple[float, float]:
    """Centre (u, v) of a nodule/mass of radius ``r`` in ``lobe`` that projects over aerated lung.

    Candidates are drawn in the lobe's region; the first whose centre and rim (8 points at 1.5 r)
    all lie over lung (not behind the heart, below a dome or outside the chest wall) is taken.
    Otherwise the best of these and of a grid over (and above) the lobe's region is taken.
    """
    g = scene.g
    n = g.size
    cu0, cv0, ru, rv = _lobe_center(scene, lobe)
    ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)

    def score(cu: float, cv: float) -> float:
        pu = np.concatenate([[cu], cu + 1.5 * r * np.cos(ang)])
        pv = np.concatenate([[cv], cv + 1.5 * r * np.sin(ang)])
        rr, cc = g.to_pixel(pu, pv)
        rr = np.clip(np.rint(rr).astype(np.int64), 0, n - 1)
        cc = np.clip(np.rint(cc).astype(np.int64), 0, n - 1)
        return float(np.min(lung_frac[rr, cc] * (1.0 - scene.heart_prof[rr, cc])))

    best, best_score = (cu0, cv0), -1.0
    for i in range(12):
        spread = 0.5 + 0.05 * i
        cu = float(cu0 + rng.uniform(-spread, spread) * ru)
        cv = float(cv0 + rng.uniform(-spread, spread) * rv)
        sc = score(cu, cv)
        if sc > 0.6:
            return cu, cv
        if sc > best_score:
            best, best_score = (cu, cv), sc
    # no random candidate fits (a mass in a small lower lobe next to the heart): take the best place
    # on a grid over the lobe's region and above it (the lobe extends up behind the upper lung)
    for du_ in np.linspace(-0.8, 0.8, 7):
        for dv_ in np.linspace(-2.5, 0.5, 9):
            cu, cv = float(cu0 + du_ * ru), float(cv0 + dv_ * rv)
            sc = score(cu, cv)
            if sc > best_score:
                best, best_score = (cu, cv), sc
    return best


def _extrapleural_haematoma(scene: Scene, f: Finding) -> None:
    """Bleeding from acute rib fractures: a lens of soft tissue along the lateral chest wall.

    It spans the heights of the breaks (the fracture points on the posterior arcs, see
    :meth:`Scene.rib_table`) and bulges into the lung with tapering ends (the extrapleural sign);
    thicker for more severe fractures. It displaces lung air, as pleural fluid does.
    """
    g = scene.g
    side = scene.fractures[0][0]
    ribs = {(r["side"], r["k"]): r for r in scene.rib_table() if r["post"]}
    vs = []
    for s_, k_, t_, *_ in scene.fractures:
        r = ribs.get((s_, k_))
        if r is None:
            continue
        vs.append(float(rib_arc_v(r["v0"], r["A"], r["B"], r["D"], t_)))
    if not vs:
        return
    i = SEVERITIES.index(f.severity)
    vc = 0.5 * (min(vs) + max(vs)) + 0.02
    hh = 0.5 * (max(vs) - min(vs)) + 0.1 + 0.03 * i
    thick = (0.08, 0.1, 0.12)[i] * np.random.default_rng([f.seed, 4]).uniform(0.85, 1.15)
    box = scene.side_box(side, vc - hh - 0.02, vc + hh + 0.02)
    if box is None:
        return
    Ub, Vb = g.U[box], g.V[box]
    d_lat = scene.lat(Vb, side) - side * (Ub - scene.midline)
    z = np.clip((Vb - vc) / hh, -1.0, 1.0)
    width = thick * np.sqrt(1.0 - z * z) ** 1.3
    lens = smoothstep((width - d_lat) / (0.3 * thick) + 0.5) * (d_lat > -0.05) * (width > 0.002)
    scene.fill[box] += (scene.air[box] * lens).astype(np.float32)


def render_findings(scene: Scene, findings: dict[str, Finding], masks: dict[str, np.ndarray] | None) -> None:
    """Edit the maps of ``scene`` (after the anatomy and vessels are drawn) for each finding.

    ``masks`` (if not None) receives boolean (H, W) arrays: ``effusion``, ``pneumothorax``,
    ``opacity`` (all parenchymal opacities) and ``lesion``.
    """
    g = scene.g
    n = g.size
    U, V = g.U, g.V
    parenchymal = [k for k in ("Lung Opacity", "Consolidation", "Edema", "Atelectasis", "Lung Lesion") if k in findings]
    lung_frac = (np.clip(scene.air / (scene.a.lung_depth + 1e-6), 0.0, 1.0)
                 if masks is not None or "Lung Lesion" in findings else None)
    opac = np.zeros((n, n), dtype=np.float32)
    for name in parenchymal:
        f = findings[name]
        rng = np.random.default_rng(f.seed)
        strength = 0.55 if f.label == -1.0 else 1.0
        sev = 1 + SEVERITIES.index(f.severity) if f.severity in SEVERITIES else 2
        if name in ("Lung Opacity", "Consolidation"):
            regions = []
            if f.kind == "bibasilar":
                regions = [_lobe_center(scene, "right lower lobe"), _lobe_center(scene, "left lower lobe")]
            else:
                regions = [_lobe_center(scene, f.kind)]
            tex = _noise_field(rng, n, n / 14)
            for cu, cv, ru, rv in regions:
                grow = 0.65 + 0.25 * sev
                ru, rv = ru * grow, rv * grow
                du, dv = (U - cu) / ru, (V - cv) / rv
                r2 = du * du + dv * dv
                if name == "Consolidation":
                    blob = smoothstep((1.0 - r2 + 0.5 * tex) / 1.1) ** 0.8 * np.clip(0.85 + 0.2 * tex, 0.5, 1.0)
                    dens = 0.8 * strength
                else:
                    # ill-defined airspace density: a broad soft-edged patch with mottled texture
                    blob = np.exp(-r2 * 1.3) * np.clip(0.7 + 0.6 * tex, 0, 1.3)
                    dens = (0.42 + 0.14 * sev) * strength
                opac += (dens * blob).astype(np.float32)
            if name == "Consolidation" and f.label == 1.0:
                # air bronchograms: a sparse dark branching pattern inside the consolidation
                br = np.zeros((n, n), dtype=np.float32)
                cu, cv, ru, rv = regions[0]
                hu, hv = scene.hilum(LOBES.get(f.kind, RIGHT))
                pu, pv = [], []
                for _ in range(5):
                    ang = math.atan2(cv - hv, cu - hu) + rng.normal(0, 0.4)
                    L = rng.uniform(0.1, 0.25)
                    t = np.linspace(0.2, 1.0, 80)
                    bu = hu + math.cos(ang) * L * 1.6 * t + rng.normal(0, 0.005, t.size).cumsum() * 0.3
                    bv = hv + math.sin(ang) * L * 1.6 * t
                    pu.append(bu)
                    pv.append(bv)
                g.splat(np.concatenate(pu), np.concatenate(pv), 1.0, br)
                br = blur(br, 0.9 * n / 256)
                opac -= (0.5 * np.clip(br / (br.max() + 1e-6), 0, 1) * np.clip(opac, 0, 1)).astype(np.float32)
        elif name == "Edema":
            for side in (RIGHT, LEFT):
                hu, hv = scene.hilum(side)
                du, dv = (U - hu) / (0.2 + 0.06 * sev), (V - hv - 0.05) / (0.22 + 0.05 * sev)
                haze = np.exp(-(du * du + dv * dv))
                opac += ((0.12 + 0.18 * (sev - 1) ** 1.3) * strength * haze).astype(np.float32)
            # Kerley B lines: short horizontal lines at the lateral lung bases
            kl = np.zeros((n, n), dtype=np.float32)
            ku, kv = [], []
            nlines = int(6 + 5 * sev) if f.label == 1.0 else 4
            for side in (RIGHT, LEFT):
                for _ in range(nlines):
                    v = scene.dome_top(side) - rng.uniform(0.02, 0.28)
                    edge = float(scene.lat(np.float32(v), side))
                    length = rng.uniform(0.04, 0.08)
                    t = np.linspace(0, 1, 40)
                    uu = scene.midline + side * (edge - 0.005 - length * t)
                    ku.append(uu)
                    kv.append(np.full_like(uu, v))
            g.splat(np.concatenate(ku), np.concatenate(kv), 0.4, kl)
            opac += (0.06 * strength * blur(kl, 0.6 * n / 256) * (256 / n)).astype(np.float32)
            scene.vessels[:] = blur(scene.vessels, (0.6 + 0.5 * sev) * n / 256)
        elif name == "Atelectasis":
            if f.kind == "plate":
                for side in _sides(f.side):
                    v = scene.dome_top(side) - rng.uniform(0.06, 0.16)
                    cu = scene.midline + side * rng.uniform(0.4, 0.6) * scene.a.W
                    L = rng.uniform(0.12, 0.22) * (0.8 + 0.2 * sev)
                    tilt = rng.uniform(-0.2, 0.2)
                    th = 0.011 + 0.005 * sev
                    d = (V - v - tilt * (U - cu)) / th
                    along = np.abs(U - cu) / L
                    band = np.exp(-d * d) * smoothstep((1 - along) / 0.4)
                    opac += ((0.35 + 0.1 * sev) * strength * band).astype(np.float32)
            else:
                side = RIGHT if f.side == "right" else LEFT
                if f.kind == "left lower lobe" or f.kind == "right lower lobe":
                    # collapsed lower lobe: triangle against the spine/heart, apex at the hilum
                    hu, hv = scene.hilum(side)
                    bot = scene.dome_top(side) + 0.05
                    t = np.clip((V - hv) / (bot - hv), 0, 1)
                    width = 0.05 + 0.2 * t
                    ad = side * (U - scene.midline)
                    tri = smoothstep((width - np.abs(ad - 0.05 - 0.6 * width)) / 0.03) * (V > hv) * (V < bot)
                    opac += (0.95 * strength * tri).astype(np.float32)
                else:
                    # right upper lobe collapse: dense wedge at the right apex, elevated fissure
                    top, hv = scene.a.v_apex, scene.hilum(side)[1]
                    ad = side * (U - scene.midline)
                    edge = hv - 0.25 + 0.35 * np.clip((ad - 0.1) / scene.a.W, 0, 1) * 0 - 0.15 * (ad / scene.a.W)
                    wedge = smoothstep((edge - V) / 0.02) * (V > top) * (ad > 0)
                    opac += (0.9 * strength * wedge).astype(np.float32)
        elif name == "Lung Lesion":
            kind, lobe = f.kind.split("|")
            r = f.value
            cu, cv = _lesion_center(scene, lobe, r, lung_frac, rng)
            du, dv = (U - cu) / r, (V - cv) / (r * rng.uniform(0.85, 1.15))
            # well-defined round soft-tissue density with slightly lobulated margins (masses more so)
            ang = np.arctan2(dv, du)
            amp = 0.12 if kind == "mass" else 0.06
            lob = 1.0 + amp * np.sin(3 * ang + rng.uniform(0, 6)) + 0.6 * amp * np.sin(5 * ang + rng.uniform(0, 6))
            sph = ellipsoid(du / lob, dv / lob)
            # chord through a sphere (sqrt profile) flattened toward a plateau: a solid ball seen over
            # the lung, denser than its diameter of water (a clearly seen round density, as nodules
            # reported on radiographs are; the faint ones are the hedged, subtle cases)
            dens, expo = (3.6, 0.5) if kind == "mass" else (5.4, 0.45)
            lesion = (dens * r * strength * sph**expo).astype(np.float32)
            scene.fill += lesion
            if masks is not None:
                masks["lesion"] = sph > 0
    if parenchymal:  # (an all-zero ``opac`` adds nothing)
        scene.fill += opac * scene.air * 0.95
    if masks is not None:
        masks["opacity"] = (opac > 0.25) & (lung_frac > 0.05)
        masks.setdefault("lesion", np.zeros((n, n), dtype=bool))

    f = findings.get("Fracture")
    if f is not None and f.label == 1.0 and scene.fractures and scene.fractures[0][6] == 0.0:
        _extrapleural_haematoma(scene, f)

    f = findings.get("Pleural Effusion")
    eff_mask = np.zeros((n, n), dtype=bool)
    if f is not None:
        for side in _sides(f.side):
            h = f.value * (0.75 if f.side == "bilateral" else 1.0)
            box = scene.side_box(side, scene.a.v_apex - 0.05, 1.05, extra=0.1)
            if box is None:
                continue
            Ub, Vb = U[box], V[box]
            a = scene.a
            ad = side * (Ub - scene.midline)
            v_cp = float(scene.dome(np.float32(a.W), side))
            H = v_cp - a.v_apex
            # meniscus: the fluid surface is concave upward, lowest medially and climbing the lateral
            # chest wall, so the costophrenic angle fills (blunts) first. ``xl`` is the position across
            # the hemithorax at each height (0 at the mediastinum, 1 at the lateral lung border); the
            # surface rises ~ xl^2 laterally. Above the surface the fluid thins out gradually (a
            # layer tapering up the posterior chest wall), so the upper border is hazy, not a line.
            xl = np.clip(ad / scene.lat(Vb, side), 0.0, 1.1)
            top_lat = v_cp - h * H
            rise = 0.06 + 0.45 * h
            surface = top_lat + rise * (1.0 - np.minimum(xl, 1.0)) ** 1.7
            fade = 0.04 + 0.2 * h
            depth_below = (Vb - surface) / fade
            layer = smoothstep(depth_below * 0.4 + 0.4) ** 1.3
            # extra fluid seen tangentially along the lateral wall (the meniscus's bright rim)
            rim = np.exp(-(((1.0 - xl) / 0.12) ** 2)) * smoothstep(depth_below * 0.4 + 0.8)
            frac_ = np.clip(layer + 0.35 * rim * (1.0 - layer), 0.0, 1.0)
            # the fluid displaces lung air in proportion to its share of the path (no hard cut-off
            # where the air runs out); below the dome it only thickens the soft tissue a little
            air_b = scene.air[box]
            fluid = (air_b + 0.05 * scene.a.lung_depth) * frac_ * (0.6 if f.label == -1.0 else 1.0)
            scene.fill[box] += fluid.astype(np.float32)
            eff_mask[box] |= (frac_ > 0.3) & (scene.air[box] > 0.02)
    if masks is not None:
        masks["effusion"] = eff_mask

    f = findings.get("Pneumothorax")
    ptx_mask = np.zeros((n, n), dtype=bool)
    if f is not None:
        side = RIGHT if f.side == "right" else LEFT
        hu, hv = scene.hilum(side)
        frac = f.value
        box = scene.side_box(side, scene.a.v_apex - 0.05, scene.dome_top(side) + 0.3)
        if box is not None:
            Ub, Vb = U[box], V[box]
            # collapse toward the hilum, more at the apex than at the base
            wv = 1.0 - 0.7 * smoothstep((Vb - hv) / (scene.dome_top(side) - hv + 1e-6))
            s = 1.0 - frac * wv
            up = hu + (Ub - hu) / s
            vp = hv + (Vb - hv) / s
            ad = side * (up - scene.midline)
            d_lat = scene.lat(vp, side) - ad
            t_ap = (vp - scene.a.v_apex)
            inside_lung = scene.air[box] > 0.01
            collapsed = (d_lat > 0) & (t_ap > 0)
            zone = inside_lung & ~collapsed
            zone_soft = blur(zone.astype(np.float32), 0.6 * n / 256)
            scene.rho[box] *= (1.0 - zone_soft) + 0.0 * zone_soft
            scene.rho[box] += 0.35 * scene.rho[box] * collapsed * inside_lung
            scene.vessels[box] *= 1.0 - zone_soft
            # visceral pleural line
            dist = np.minimum(np.abs(d_lat), np.abs(t_ap) * 1.2)
            line = np.exp(-((dist / (0.5 * g.px * 1.5)) ** 2)) * inside_lung * (t_ap > -0.01)
            scene.fill[box] += (0.05 * line * (0.6 if f.label == -1.0 else 1.0)).astype(np.float32)
            ptx_mask[box] = zone
    if masks is not None:
        masks["pneumothorax"] = ptx_mask

    f = findings.get("Pleural Other")
    if f is not None:
        rng = np.random.default_rng(f.seed)
        sev = 1 + SEVERITIES.index(f.severity)
        for side in _sides(f.side):
            box = scene.side_box(side, scene.a.v_apex - 0.05, scene.dome_top(side) + 0.2)
            if box is None:
                continue
            Ub, Vb = U[box], V[box]
            ad = side * (Ub - scene.midline)
            d_lat = scene.lat(Vb, side) - ad
            if f.kind == "thickening":
                # a soft-tissue band inside the lateral chest wall, 0.032-0.056 units (about 6-11 mm on a
                # 40 cm film) by severity; the 0.022-0.042 of before was barely visible at 128 px
                th = (0.02 + 0.012 * sev) * (0.6 if f.label == -1.0 else 1.0)
                v0 = scene.a.v_apex + rng.uniform(0.2, 0.6)
                along = smoothstep((Vb - v0) / 0.1) * (1 - smoothstep((Vb - v0 - rng.uniform(0.3, 0.6)) / 0.1))
                # a gently lobulated inner margin (undulations 8-14% of the image height apart), which a
                # smooth normal chest wall of any width does not have
                lam, ph = rng.uniform(0.16, 0.28), rng.uniform(0, 2 * np.pi, 2)
                wob = 1.0 + 0.35 * np.sin(2 * np.pi * (Vb - v0) / lam + ph[0]) + 0.12 * np.sin(
                    4.6 * np.pi * (Vb - v0) / lam + ph[1])
                band = smoothstep((th * np.maximum(wob, 0.35) - d_lat) / 0.008) * (d_lat > -0.03) * along
                scene.fill[box] += (0.5 * band).astype(np.float32)
                scene.bone[box] += (0.05 * band).astype(np.float32)
            else:
                plq = np.zeros_like(Ub)
                for _ in range(2 + sev):
                    # calcified plaques lie along the lateral chest wall (seen tangentially: thin and
                    # elongated) or en face over the lower lung (irregular "holly leaf" outline)
                    pv = scene.a.v_apex + rng.uniform(0.45, 0.95) * (scene.dome_top(side) - scene.a.v_apex)
                    tangential = rng.random() < 0.6
                    pa = float(scene.lat(np.float32(pv), side)) - (0.01 if tangential else rng.uniform(0.1, 0.3))
                    ru, rv = (rng.uniform(0.008, 0.014), rng.uniform(0.06, 0.12)) if tangential else \
                        (rng.uniform(0.03, 0.05), rng.uniform(0.04, 0.07))
                    du, dv = (ad - pa) / ru, (Vb - pv) / rv
                    ang = np.arctan2(dv, du)
                    edge = 1.0 + 0.25 * np.sin(5 * ang + rng.uniform(0, 6)) + 0.15 * np.sin(9 * ang + rng.uniform(0, 6))
                    r2 = (du * du + dv * dv) / (edge * edge)
                    plq += smoothstep((1 - r2) / 0.3) * (0.6 + 0.4 * np.sin(9 * du + 7 * dv) ** 2)
                # calcified: about as dense as rib cortex, so en-face plaques read as white "holly leaves"
                scene.bone[box] += (0.18 * np.clip(plq, 0, 1.5) * (0.6 if f.label == -1.0 else 1.0)).astype(np.float32)
