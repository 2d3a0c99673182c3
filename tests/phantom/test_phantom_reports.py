"""Label/report agreement on 1,000 planned studies, checked with keyword families that are
independent of the report writer's phrase tables."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from unicxr.labels import FINDINGS, no_finding_value
from unicxr.phantom.config import PhantomConfig
from unicxr.phantom.report import write_report
from unicxr.phantom.simulate import make_plan, render_case

FAMILIES = {
    "Enlarged Cardiomediastinum": r"mediastin",
    "Cardiomegaly": r"cardiomegaly|heart size|heart is|heart may|cardiac silhouette",
    "Lung Opacity": r"opacit",
    "Lung Lesion": r"nodule|\bmass\b",
    "Edema": r"edema",
    "Consolidation": r"consolidat",
    "Pneumonia": r"pneumonia",
    "Atelectasis": r"atelecta|collapse",
    "Pneumothorax": r"pneumothora",
    "Pleural Effusion": r"effusion",
    "Pleural Other": r"pleural thickening|pleural plaque",
    "Fracture": r"fracture",
    "Support Devices": r"tube|catheter|\bline\b|picc|pacemaker|sternotomy|wires",
}
NEG = re.compile(r"\bno\b|\bnot\b|without|\bnormal\b|resolution|resolved|removed|removal")
CLEAR = re.compile(r"\blungs? (?:are )?(?:\w+ ){0,3}clear\b")
HEDGE = re.compile(r"possible|cannot|\bmay\b|could|questionable")


def _mentions(report: str) -> dict[str, set[str]]:
    """For each finding, the kinds of mention (positive/negated/hedged) in FINDINGS + IMPRESSION."""
    body = report.split("FINDINGS:", 1)[1].lower()
    out: dict[str, set[str]] = {name: set() for name in FAMILIES}
    for sent in re.split(r"(?<=\.)\s+", body.replace("impression:", " ")):
        # CheXpert convention: "lungs are clear" mentions no finding (the opacity family stays blank)
        for name, pat in FAMILIES.items():
            if re.search(pat, sent):
                if NEG.search(sent):
                    out[name].add("negated")
                elif HEDGE.search(sent):
                    out[name].add("hedged")
                else:
                    out[name].add("positive")
    return out


def _check(report: str, labels: np.ndarray) -> list[str]:
    errors = []
    m = _mentions(report)
    for i, name in enumerate(FINDINGS):
        if name == "No Finding":
            continue
        v = float(labels[i])
        kinds = m[name]
        if v == 1.0 and "positive" not in kinds:
            errors.append(f"{name}=1 but no un-negated mention")
        if v == -1.0 and ("hedged" not in kinds or "positive" in kinds):
            errors.append(f"{name}=-1 but mentions are {sorted(kinds)}")
        if "negated" in kinds and v not in (0.0,) and not math.isnan(v):
            errors.append(f"{name} negated but label {v}")
        if v == 0.0 and ("negated" not in kinds or "positive" in kinds):
            errors.append(f"{name}=0 but mentions are {sorted(kinds)}")
        if math.isnan(v) and kinds:
            errors.append(f"{name} blank but mentioned ({sorted(kinds)})")
    nf = no_finding_value(labels, "chexpert")
    if not (labels[0] == nf or (math.isnan(labels[0]) and math.isnan(nf))):
        errors.append("No Finding does not follow the CheXpert rule")
    return errors


def test_reports_agree_with_labels_on_1000_cases() -> None:
    cfg = PhantomConfig()
    plans = make_plan(11, 1000, cfg)
    n_pos = np.zeros(len(FINDINGS))
    n_unc = 0
    n_cmp = 0
    for p in plans:
        rep = write_report(p.findings, np.random.default_rng([p.seed, 7]), cfg, view=p.view, sex=p.anatomy.sex,
                           prior=p.prior, change=p.change)
        errs = _check(rep.text, rep.labels)
        assert not errs, f"case {p.index}: {errs}\n{rep.text}"
        assert "FINDINGS:" in rep.text and "IMPRESSION:" in rep.text
        n_pos += rep.labels == 1.0
        n_unc += int(np.any(rep.labels == -1.0))
        n_cmp += "prior" in rep.text.lower()
    # every finding occurs, hedges and comparison sentences occur
    assert np.all(n_pos[1:] >= 5), dict(zip(FINDINGS, n_pos.tolist(), strict=True))
    assert n_unc > 20
    assert n_cmp > 50


def test_rendered_case_labels_match_report() -> None:
    cfg = PhantomConfig()
    for p in make_plan(5, 12, cfg):
        case = render_case(p, 48, cfg, masks=False)
        assert not _check(case.report, case.labels)


def test_phrasing_varies_and_normal_cases_say_so() -> None:
    cfg = PhantomConfig()
    plans = make_plan(3, 400, cfg)
    eff, normal = set(), 0
    for p in plans:
        rep = write_report(p.findings, np.random.default_rng([p.seed, 7]), cfg, view=p.view, prior=p.prior,
                           change=p.change)
        for s in re.split(r"(?<=\.)\s+", rep.sections["findings"]):
            if "pleural effusion" in s.lower() and not s.lower().startswith("no"):
                eff.add(re.sub(r"\b(small|moderate|large|right|left|bilateral)\b", "X", s))
        if rep.labels[0] == 1.0:
            normal += 1
            assert "acute" in rep.sections["impression"].lower()
    assert len(eff) >= 4
    assert normal > 40


@pytest.mark.parametrize("name", [n for n in FINDINGS[1:]])
def test_each_finding_reported_when_forced(name: str) -> None:
    from unicxr.phantom.findings import sample_findings

    cfg = PhantomConfig()
    f = sample_findings(np.random.default_rng(0), cfg, force={name: "moderate" if name != "Support Devices" else ""})
    rep = write_report(f, np.random.default_rng(1), cfg)
    i = FINDINGS.index(name)
    assert rep.labels[i] == 1.0
    assert re.search(FAMILIES[name], rep.text.lower())
    assert not _check(rep.text, rep.labels)


def test_summary_normal_sentences_set_labels() -> None:
    """"Lungs are clear" => opacity family blank unless negated by name (CheXpert convention);
    "heart size and mediastinal contours" => both 0."""
    cfg = PhantomConfig()
    n_clear = n_heart = 0
    io, ic, ip = (FINDINGS.index(n) for n in ("Lung Opacity", "Consolidation", "Pneumonia"))
    ih, im = FINDINGS.index("Cardiomegaly"), FINDINGS.index("Enlarged Cardiomediastinum")
    for p in make_plan(21, 600, cfg):
        rep = write_report(p.findings, np.random.default_rng([p.seed, 7]), cfg, view=p.view, prior=p.prior,
                           change=p.change)
        text = rep.sections["findings"].lower()
        if CLEAR.search(text):
            n_clear += 1
            for i, word in ((io, "opacit"), (ic, "consolidation"), (ip, "pneumonia")):
                assert np.isnan(rep.labels[i]) or (rep.labels[i] == 0.0 and word in text), rep.text
        if "heart size and mediastinal contours" in text:
            n_heart += 1
            assert rep.labels[ih] == 0.0 and rep.labels[im] == 0.0, rep.text
    assert n_clear > 50 and n_heart > 20
