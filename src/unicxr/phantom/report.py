"""Radiology report writer: FINDINGS and IMPRESSION consistent with the drawn findings.

Ground truth labels come out of the writer itself: present findings are 1 (or -1 when subtle and
hedged), findings the report explicitly negates (or reports as resolved/removed) are 0, everything
else is blank (NaN). The labels follow the CheXpert labeler's output convention, as
``unicxr.text`` does by default: No Finding is 1 when no finding other than Support Devices is
positive or uncertain and blank otherwise (never 0); "the lungs are clear" (written only when no
parenchymal finding is present or uncertain) mentions none of Lung Opacity, Consolidation and
Pneumonia, so they stay blank; "heart size and mediastinal contours are normal" sets Cardiomegaly
and Enlarged Cardiomediastinum to 0. Every finding has several phrasings; sentences about different findings are kept separate
(except those summary sentences and "No pleural effusion or pneumothorax."), so a rule-based
labeler can recover the labels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from unicxr.labels import FINDINGS, NUM_FINDINGS, LabelConvention, no_finding_value
from unicxr.phantom.config import PhantomConfig
from unicxr.phantom.devices import ett_tip_cm
from unicxr.phantom.findings import Finding, fracture_clavicle, fracture_ribs

__all__ = ["Report", "write_report", "INDICATIONS"]

INDICATIONS = (
    "shortness of breath", "cough", "chest pain", "fever", "hypoxia", "dyspnea on exertion",
    "preoperative evaluation", "weakness", "fall", "tachycardia", "follow-up", "altered mental status",
    "hemoptysis", "wheezing", "chest tightness", "fatigue",
)
_PARENCHYMA = ("Lung Opacity", "Consolidation", "Pneumonia", "Edema", "Atelectasis", "Lung Lesion")
_SIZE = {"mild": "small", "moderate": "moderate", "severe": "large"}
_DEGREE = {"mild": "mild", "moderate": "moderate", "severe": "severe"}
_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "markedly"}
_ORD = {1: "1st", 2: "2nd", 3: "3rd"}


@dataclass
class Report:
    """A written report and the labels it implies.

    Attributes:
        text: full report (``INDICATION``, ``TECHNIQUE``, ``COMPARISON``, ``FINDINGS``, ``IMPRESSION``).
        sections: the section texts by lower-case name (``examination``, ``indication``, ...).
        labels: float32 (14,) labels (1/0/-1/NaN) in ``FINDINGS`` order.
    """

    text: str
    sections: dict[str, str]
    labels: np.ndarray


def _ordinal(k: int) -> str:
    return _ORD.get(k, f"{k}th")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _side_adj(side: str) -> str:
    return {"bilateral": "bilateral", "right": "right", "left": "left"}.get(side, "")


def _adj(lobe: str) -> str:
    """Lobe name used as an adjective ("lingula" -> "lingular")."""
    return "lingular" if lobe == "lingula" else lobe


def noun_phrase(f: Finding) -> str:
    """Short noun phrase for a finding ("moderate right pleural effusion", "left lower lobe consolidation")."""
    n = f.name
    if n == "Cardiomegaly":
        return f"{_DEGREE[f.severity]} cardiomegaly"
    if n == "Enlarged Cardiomediastinum":
        return "mediastinal widening"
    if n == "Pleural Effusion":
        return f"{_SIZE[f.severity]} {_side_adj(f.side)} pleural effusion" + ("s" if f.side == "bilateral" else "")
    if n == "Pneumothorax":
        return f"{_SIZE[f.severity]} {f.side} pneumothorax"
    if n == "Edema":
        return f"{_DEGREE[f.severity]} pulmonary edema"
    if n == "Consolidation":
        return f"{_adj(f.kind)} consolidation"
    if n == "Lung Opacity":
        return "bibasilar opacities" if f.kind == "bibasilar" else f"{_adj(f.kind)} opacity"
    if n == "Pneumonia":
        return "bibasilar pneumonia" if f.kind == "bibasilar" else f"{_adj(f.kind)} pneumonia"
    if n == "Atelectasis":
        if f.kind == "plate":
            return "bibasilar atelectasis" if f.side == "bilateral" else f"{f.side} basilar atelectasis"
        return f"{f.kind} atelectasis"
    if n == "Lung Lesion":
        kind, lobe = f.kind.split("|")
        return f"{_adj(lobe)} {kind}"
    if n == "Pleural Other":
        return "calcified pleural plaques" if f.kind == "plaques" else f"{f.side} pleural thickening"
    if n == "Fracture":
        rib, nrib, _ = fracture_ribs(f.kind)
        rib += 1
        if nrib == 0:
            return f"{f.side} clavicle fracture"
        both = fracture_clavicle(f.kind)  # with a clavicle fracture: one phrase for both bones, plural
        where = f"{f.side} clavicle and " if both else f"{f.side} "
        if nrib > 1:
            return f"{where}{_ordinal(rib)} through {_ordinal(rib + nrib - 1)} rib fractures"
        return f"{where}{_ordinal(rib)} rib fracture" + ("s" if both else "")
    if n == "Support Devices":
        return "support devices"
    raise ValueError(n)


def _device_sentence(dev: tuple[str, str, str], rng: np.random.Generator) -> str:
    kind, side, pos = dev
    if kind == "ett":
        cm = ett_tip_cm(pos)
        cm_s = f"{cm:g}"
        s = _pick(rng, (f"Endotracheal tube terminates approximately {cm_s} cm above the carina.",
                        f"The endotracheal tube tip is {cm_s} cm above the carina.",
                        f"Endotracheal tube is in place with the tip {cm_s} cm above the carina."))
        if pos == "low":
            s += " Recommend withdrawal by 2 cm."
        return s
    if kind == "enteric":
        return _pick(rng, ("An enteric tube courses below the diaphragm with the tip in the stomach.",
                           "Nasogastric tube tip is in the stomach.",
                           "Orogastric tube terminates in the stomach."))
    if kind == "cvc":
        where = {"svc": "in the mid SVC", "cavoatrial": "at the cavoatrial junction", "atrium": "in the right atrium"}[pos]
        return _pick(rng, (f"{_cap(side)} internal jugular central venous catheter terminates {where}.",
                           f"{_cap(side)} IJ central line tip is {where}.",
                           f"A {side} internal jugular catheter ends {where}."))
    if kind == "picc":
        where = {"svc": "in the lower SVC", "cavoatrial": "at the cavoatrial junction"}[pos]
        return _pick(rng, (f"{_cap(side)}-sided PICC line terminates {where}.",
                           f"{_cap(side)} upper extremity PICC with tip {where}.",
                           f"A {side} PICC line ends {where}."))
    if kind == "pacemaker":
        if pos == "dual":
            return _pick(rng, (f"{_cap(side)}-sided dual-chamber pacemaker with leads in the right atrium and right ventricle.",
                               f"{_cap(side)} chest wall pacemaker with leads terminating in the right atrium and right ventricle."))
        return _pick(rng, (f"{_cap(side)}-sided pacemaker with a single lead terminating in the right ventricle.",
                           f"{_cap(side)} chest wall pacemaker with its lead in the right ventricle."))
    if kind == "sternotomy":
        return _pick(rng, ("Median sternotomy wires are noted.", "The patient is status post median sternotomy with sternal wires.",
                           "Sternotomy wires are present."))
    if kind == "chest_tube":
        return _pick(rng, (f"{_cap(side)} chest tube is in place with the tip near the apex.",
                           f"A {side}-sided chest tube terminates at the apex."))
    raise ValueError(kind)


def _positive(f: Finding, rng: np.random.Generator) -> str:
    """A FINDINGS sentence for a clearly present finding."""
    n, sev = f.name, f.severity
    if n == "Cardiomegaly":
        return _pick(rng, (f"{_cap(_DEGREE[sev])} cardiomegaly.", f"The heart is {_ADVERB[sev]} enlarged.",
                           f"There is {_DEGREE[sev]} enlargement of the cardiac silhouette.",
                           f"Heart size is {_ADVERB[sev]} enlarged."))
    if n == "Enlarged Cardiomediastinum":
        return _pick(rng, ("The mediastinum is widened.", "Widening of the mediastinum is noted.",
                           "The mediastinal silhouette is enlarged.", "There is mediastinal widening."))
    if n == "Pleural Effusion":
        size, side = _SIZE[sev], _side_adj(f.side)
        if f.side == "bilateral":
            return _pick(rng, (f"{_cap(size)} bilateral pleural effusions.", f"There are {size} bilateral pleural effusions."))
        return _pick(rng, (f"{_cap(size)} {side} pleural effusion.", f"There is a {size} {side} pleural effusion.",
                           f"{_cap(size)} {side} pleural effusion with blunting of the costophrenic angle."
                           if sev == "mild" else f"A {size} {side} pleural effusion is present."))
    if n == "Pneumothorax":
        size = _SIZE[sev]
        opts = [f"{_cap(size)} {f.side} pneumothorax.", f"There is a {size} {f.side}-sided pneumothorax."]
        if sev == "mild":
            opts.append(f"There is a small {f.side} apical pneumothorax.")
        if sev == "severe":
            opts.append(f"A large {f.side} pneumothorax is present.")
        return _pick(rng, opts)
    if n == "Edema":
        if sev == "mild":
            return _pick(rng, ("Mild pulmonary edema.", "There is mild interstitial pulmonary edema.",
                               "Mild interstitial pulmonary edema with septal thickening."))
        if sev == "moderate":
            return _pick(rng, ("Moderate pulmonary edema.", "Findings are consistent with moderate pulmonary edema.",
                               "There is moderate perihilar pulmonary edema."))
        return _pick(rng, ("Severe pulmonary edema.", "Marked alveolar pulmonary edema.", "There is severe pulmonary edema."))
    if n == "Consolidation":
        adj = {"mild": "Small area of", "moderate": "Focal", "severe": "Dense"}[sev]
        return _pick(rng, (f"{adj} consolidation in the {f.kind}.", f"{_cap(_adj(f.kind))} consolidation.",
                           f"There is consolidation of the {f.kind} with air bronchograms."
                           if sev != "mild" else f"There is a small focus of consolidation in the {f.kind}."))
    if n == "Lung Opacity":
        if f.kind == "bibasilar":
            return _pick(rng, ("Patchy bibasilar opacities.", "There are hazy opacities at both lung bases."))
        adj = {"mild": "patchy", "moderate": "ill-defined", "severe": "extensive"}[sev]
        return _pick(rng, (f"{_cap(adj)} opacity in the {f.kind}.", f"There is an {adj} opacity in the {f.kind}."
                           if adj[0] in "aeiou" else f"There is a {adj} opacity in the {f.kind}.",
                           f"{_cap(_adj(f.kind))} airspace opacity."))
    if n == "Pneumonia":
        where = "the lung bases" if f.kind == "bibasilar" else f"the {f.kind}"
        return _pick(rng, (f"Findings are consistent with pneumonia in {where}.", f"{_cap(noun_phrase(f))}.",
                           "These findings are compatible with pneumonia."))
    if n == "Atelectasis":
        if f.kind == "plate":
            if f.side == "bilateral":
                return _pick(rng, ("Bibasilar atelectasis.", "Linear atelectasis at both lung bases.",
                                   "There is bibasilar plate-like atelectasis."))
            return _pick(rng, (f"Linear atelectasis at the {f.side} lung base.", f"{_cap(f.side)} basilar atelectasis.",
                               f"Plate-like atelectasis in the {f.side} lower lung."))
        return _pick(rng, (f"{_cap(f.kind)} atelectasis with volume loss.", f"Collapse of the {f.kind}.",
                           f"There is {f.kind} atelectasis."))
    if n == "Lung Lesion":
        kind, lobe = f.kind.split("|")
        cm = round(f.value * 40, 1)
        if kind == "nodule":
            return _pick(rng, (f"There is a {cm:g} cm nodule in the {lobe}.", f"A {cm:g} cm pulmonary nodule is seen in the {lobe}.",
                               f"{_cap(_adj(lobe))} nodule measuring {cm:g} cm."))
        return _pick(rng, (f"There is a {cm:g} cm mass in the {lobe}.", f"A large {_adj(lobe)} mass is seen, measuring {cm:g} cm.",
                           f"{_cap(_adj(lobe))} mass measuring {cm:g} cm."))
    if n == "Pleural Other":
        if f.kind == "plaques":
            return _pick(rng, ("Calcified pleural plaques.", "Bilateral calcified pleural plaques are noted."))
        return _pick(rng, (f"{_cap(f.side)} pleural thickening.", f"There is {_DEGREE[sev]} {f.side} pleural thickening."))
    if n == "Fracture":
        rib, nrib, healing = fracture_ribs(f.kind)
        rib += 1
        if fracture_clavicle(f.kind):
            if healing:
                clav = _pick(rng, (f"Healing fracture of the {f.side} clavicle with callus formation.",
                                   f"Healing {f.side} midclavicular fracture."))
            else:
                adj = "Minimally displaced" if sev == "mild" else "Displaced"
                clav = _pick(rng, (f"{adj} fracture of the {f.side} clavicle.",
                                   f"There is an acute fracture of the midshaft of the {f.side} clavicle."))
            if nrib == 0:
                return clav
            # with rib fractures on the same side: both, in one finding (one label)
            return clav + " " + _positive(replace(f, kind=f.kind.partition("+")[2]), rng)
        if healing:
            if nrib > 1:
                return _pick(rng, (f"Healing fractures of the {f.side} {_ordinal(rib)} through {_ordinal(rib + nrib - 1)} ribs with callus formation.",
                                   f"Healing {f.side} {_ordinal(rib)} through {_ordinal(rib + nrib - 1)} rib fractures."))
            return _pick(rng, (f"Healing fracture of the {f.side} {_ordinal(rib)} rib with callus formation.",
                               f"There is a healing fracture of the {f.side} {_ordinal(rib)} posterior rib."))
        if nrib > 1:
            return _pick(rng, (f"Displaced fractures of the {f.side} {_ordinal(rib)} through {_ordinal(rib + nrib - 1)} ribs.",
                               f"Multiple {f.side} rib fractures involving the {_ordinal(rib)} through {_ordinal(rib + nrib - 1)} ribs."))
        adj = "Minimally displaced" if sev == "mild" else "Displaced"
        return _pick(rng, (f"{adj} fracture of the {f.side} {_ordinal(rib)} posterior rib.",
                           f"There is an acute fracture of the {f.side} {_ordinal(rib)} rib."))
    raise ValueError(n)


def _hedged(f: Finding, rng: np.random.Generator) -> str:
    """A FINDINGS sentence for a subtle finding (label -1)."""
    n = f.name
    if n == "Cardiomegaly":
        return _pick(rng, ("Possible mild cardiomegaly.", "Cannot exclude mild cardiomegaly.",
                           "The heart may be mildly enlarged."))
    if n == "Enlarged Cardiomediastinum":
        return _pick(rng, ("Possible mediastinal widening.", "The mediastinum may be mildly widened."))
    if n == "Pleural Effusion":
        if f.side == "bilateral":
            return _pick(rng, ("Possible small bilateral pleural effusions.", "Cannot exclude small bilateral pleural effusions."))
        return _pick(rng, (f"Possible small {f.side} pleural effusion.",
                           f"Blunting of the {f.side} costophrenic angle may reflect a small pleural effusion.",
                           f"A small {f.side} pleural effusion cannot be excluded."))
    if n == "Pneumothorax":
        return _pick(rng, (f"Possible tiny {f.side} apical pneumothorax.",
                           f"A tiny {f.side} apical pneumothorax cannot be excluded."))
    if n == "Edema":
        return _pick(rng, ("Possible mild pulmonary edema.", "Cannot exclude mild interstitial edema."))
    if n == "Consolidation":
        return _pick(rng, (f"Possible early consolidation in the {f.kind}.", f"Cannot exclude consolidation in the {f.kind}."))
    if n == "Lung Opacity":
        where = "at the lung bases" if f.kind == "bibasilar" else f"in the {f.kind}"
        return _pick(rng, (f"Possible subtle opacity {where}.", f"Questionable opacity {where}."))
    if n == "Pneumonia":
        return _pick(rng, ("Possible pneumonia.", "Pneumonia cannot be excluded.", "This could represent early pneumonia."))
    if n == "Atelectasis":
        where = "at the lung bases" if f.side == "bilateral" else f"at the {f.side} lung base"
        return _pick(rng, (f"Possible atelectasis {where}.", f"Minimal atelectasis {where} cannot be excluded."))
    if n == "Lung Lesion":
        lobe = f.kind.split("|")[1]
        return _pick(rng, (f"Possible nodule in the {lobe}.", f"Questionable {_adj(lobe)} nodule."))
    if n == "Pleural Other":
        where = f"{f.side} " if f.side != "bilateral" else ""
        return _pick(rng, (f"Possible {where}pleural thickening.", f"Questionable {where}pleural thickening."))
    if n == "Fracture":
        rib, nrib, _ = fracture_ribs(f.kind)
        rib += 1
        if nrib == 0:
            return _pick(rng, (f"Possible nondisplaced fracture of the {f.side} clavicle.",
                               f"Cannot exclude a fracture of the {f.side} clavicle."))
        return _pick(rng, (f"Possible nondisplaced fracture of the {f.side} {_ordinal(rib)} rib.",
                           f"Cannot exclude a fracture of the {f.side} {_ordinal(rib)} rib."))
    raise ValueError(n)


_NEGATIONS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("Heart size is normal.", "The heart is normal in size.", "No cardiomegaly.", "Normal heart size."),
    "Enlarged Cardiomediastinum": ("Mediastinal contours are normal.", "The mediastinal silhouette is within normal limits.",
                                   "Normal mediastinal contours.", "No mediastinal widening."),
    "Lung Opacity": ("No focal airspace opacity.", "There is no focal opacity."),
    "Lung Lesion": ("No suspicious pulmonary nodules.", "No pulmonary nodule or mass is seen."),
    "Edema": ("No pulmonary edema.", "There is no pulmonary edema.", "No evidence of pulmonary edema."),
    "Consolidation": ("No focal consolidation.", "There is no consolidation.", "No confluent consolidation."),
    "Pneumonia": ("No evidence of pneumonia.", "No radiographic evidence of pneumonia."),
    "Atelectasis": ("No atelectasis.",),
    "Pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
    "Pleural Effusion": ("No pleural effusion.", "No pleural effusions.", "There is no pleural effusion."),
    "Pleural Other": ("No pleural thickening.",),
    "Fracture": ("No displaced rib fracture.", "No acute fracture is seen."),
}

_GROUP = {
    "Support Devices": "devices",
    "Lung Opacity": "lungs", "Consolidation": "lungs", "Pneumonia": "lungs", "Edema": "lungs",
    "Atelectasis": "lungs", "Lung Lesion": "lungs",
    "Pleural Effusion": "pleura", "Pneumothorax": "pleura", "Pleural Other": "pleura",
    "Cardiomegaly": "heart", "Enlarged Cardiomediastinum": "heart",
    "Fracture": "bones",
}
_ORDERS = (
    ("devices", "lungs", "pleura", "heart", "bones"),
    ("devices", "heart", "lungs", "pleura", "bones"),
    ("lungs", "pleura", "heart", "bones", "devices"),
    ("heart", "lungs", "pleura", "devices", "bones"),
    ("devices", "lungs", "heart", "pleura", "bones"),
)


def _change_sentence(f: Finding, change: str, rng: np.random.Generator) -> str:
    np_ = noun_phrase(f)
    if change == "increased":
        return _pick(rng, (f"Interval increase in the {np_}.", f"The {np_} has increased since the prior study.",
                           f"Compared with the prior radiograph, the {np_} has worsened."))
    if change == "decreased":
        return _pick(rng, (f"Interval decrease in the {np_}.", f"The {np_} has improved since the prior study.",
                           f"Compared with the prior radiograph, there is improvement of the {np_}."))
    if change == "unchanged":
        return _pick(rng, (f"Unchanged {np_}.", f"{_cap(np_)}, unchanged from the prior study.", f"Stable {np_}."))
    if change == "new":
        return _pick(rng, (f"New {np_}.", f"There is a new {np_} since the prior study."))
    raise ValueError(change)


def write_report(
    findings: dict[str, Finding],
    rng: np.random.Generator,
    cfg: PhantomConfig,
    *,
    view: str = "PA",
    sex: str = "M",
    prior: dict[str, Finding] | None = None,
    change: dict[str, str] | None = None,
) -> Report:
    """Write a report for ``findings`` and return it with its labels.

    Args:
        findings: present findings of this study.
        rng: report generator (phrasing, which absent findings are negated).
        cfg: negation probabilities.
        view: ``PA``/``AP`` (technique line).
        sex: ``M``/``F`` (indication line).
        prior, change: the prior study's findings and how each changed (follow-ups).
    """
    labels = np.full(NUM_FINDINGS, np.nan, dtype=np.float32)
    idx = {name: i for i, name in enumerate(FINDINGS)}
    sentences: dict[str, list[str]] = {g: [] for g in ("devices", "lungs", "pleura", "heart", "bones")}
    change = change or {}
    prior = prior or {}
    impression: list[str] = []

    for name, f in findings.items():
        labels[idx[name]] = f.label
        grp = _GROUP[name]
        if name == "Support Devices":
            for dev in f.devices:
                sentences[grp].append(_device_sentence(dev, rng))
            continue
        ch = change.get(name)
        if f.label == -1.0:
            s = _hedged(f, rng)
            impression.append(s)
        elif ch in ("increased", "decreased", "unchanged", "new") and rng.random() < 0.85:
            s = _change_sentence(f, ch, rng)
            impression.append(s if rng.random() < 0.5 else _cap(noun_phrase(f)) + ".")
        else:
            s = _positive(f, rng)
            impression.append(_cap(noun_phrase(f)) + "." if rng.random() < 0.6 else s)
        sentences[grp].append(s)

    # findings that were present before and are gone now
    for name, ch in change.items():
        if ch != "resolved" or name in findings or name not in prior:
            continue
        labels[idx[name]] = 0.0
        pf = prior[name]
        if name == "Support Devices":
            kinds = {"ett": "endotracheal tube", "enteric": "enteric tube", "cvc": "central venous catheter",
                     "picc": "PICC line", "pacemaker": "pacemaker", "sternotomy": "sternotomy wires", "chest_tube": "chest tube"}
            names = " and ".join(kinds[d[0]] for d in pf.devices)
            sentences["devices"].append(_pick(rng, (f"Interval removal of the {names}.", f"The {names} has been removed."
                                                    if len(pf.devices) == 1 else f"The {names} have been removed.")))
            continue
        np_ = noun_phrase(pf)
        s = _pick(rng, (f"Interval resolution of the previously seen {np_}.", f"The previously noted {np_} has resolved."))
        sentences[_GROUP[name]].append(s)

    # explicit negations of absent findings
    negated: set[str] = set()
    parenchymal = any(n in findings for n in _PARENCHYMA)
    for name, p in cfg.negate.items():
        if name in findings or not np.isnan(labels[idx[name]]) or p <= 0:
            continue
        if name in ("Lung Opacity", "Lung Lesion", "Pneumonia", "Atelectasis") and parenchymal:
            continue
        if name == "Pneumonia" and ("Consolidation" in findings or "Lung Opacity" in findings):
            continue
        if rng.random() < p:
            negated.add(name)
            labels[idx[name]] = 0.0
    if {"Pleural Effusion", "Pneumothorax"} <= negated and rng.random() < 0.6:
        sentences["pleura"].append(_pick(rng, ("No pleural effusion or pneumothorax.", "No pneumothorax or pleural effusion.",
                                               "There is no pleural effusion or pneumothorax.")))
        negated -= {"Pleural Effusion", "Pneumothorax"}
    if {"Cardiomegaly", "Enlarged Cardiomediastinum"} <= negated and rng.random() < 0.6:
        sentences["heart"].append(_pick(rng, ("Heart size and mediastinal contours are normal.",
                                              "The heart size and mediastinal contours are within normal limits.")))
        negated -= {"Cardiomegaly", "Enlarged Cardiomediastinum"}
    lung_clear = not parenchymal and not any(change.get(n) == "resolved" for n in _PARENCHYMA)
    clear_sentence = ""
    if lung_clear and "Consolidation" in negated and rng.random() < 0.5:
        clear_sentence = "The lungs are clear without focal consolidation."
        negated.discard("Consolidation")
    elif lung_clear and rng.random() < 0.7:
        clear_sentence = _pick(rng, ("The lungs are clear.", "Lungs are well expanded and clear.",
                                     "The lungs are well expanded."))
    if clear_sentence:
        # CheXpert convention: "the lungs are clear" labels nothing (the opacity family stays blank)
        sentences["lungs"].insert(0, clear_sentence)
    for name in sorted(negated, key=lambda n: idx[n]):
        sentences[_GROUP[name]].append(_pick(rng, _NEGATIONS[name]))
    if "Fracture" not in findings and "Fracture" not in negated and rng.random() < 0.3:
        sentences["bones"].append(_pick(rng, ("No acute osseous abnormality.", "Osseous structures are unremarkable.")))

    if not any(sentences.values()):
        sentences["lungs"].append("The lungs are clear.")
    labels[0] = no_finding_value(labels, LabelConvention.CHEXPERT)
    order = _ORDERS[int(rng.integers(len(_ORDERS)))]
    body: list[str] = []
    for grp in order:
        ss = sentences[grp]
        if len(ss) > 1 and grp != "lungs":
            ss = [ss[i] for i in rng.permutation(len(ss))]
        body += ss
    if labels[0] == 1.0:
        normal = _pick(rng, ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
                             "No acute intrathoracic process."))
        impression = [normal]
    else:
        impression = [impression[i] for i in np.argsort([_rank(s, findings) for s in impression], kind="stable")]
    if "Support Devices" in findings and rng.random() < 0.3:
        impression.append("Support devices as described above.")
    sections = {
        "examination": "CHEST (PORTABLE AP)" if view == "AP" else "CHEST (PA)",
        "indication": f"___ year old {'woman' if sex == 'F' else 'man'} with {_pick(rng, INDICATIONS)}.",
        "technique": _pick(rng, ("Portable AP view of the chest.", "Single portable AP upright view of the chest."))
        if view == "AP" else _pick(rng, ("PA view of the chest.", "Single frontal view of the chest.")),
        "comparison": _pick(rng, ("Chest radiograph from ___.", "Prior study from ___.")) if prior or change else "None.",
        "findings": " ".join(body),
        "impression": " ".join(impression),
    }
    text = (
        f"EXAMINATION: {sections['examination']}\n"
        f"INDICATION: {sections['indication']}\n"
        f"TECHNIQUE: {sections['technique']}\n"
        f"COMPARISON: {sections['comparison']}\n\n"
        f"FINDINGS: {sections['findings']}\n\n"
        f"IMPRESSION: {sections['impression']}"
    )
    return Report(text=text, sections=sections, labels=labels)


def _rank(sentence: str, findings: dict[str, Finding]) -> int:
    """Impression order: severe and acute findings first, hedged ones last."""
    low = sentence.lower()
    if low.startswith(("possible", "cannot", "questionable", "this could")) or "may" in low.split():
        return 3
    if any(w in low for w in ("large", "severe", "pneumothorax", "mass")):
        return 0
    return 1
