"""Hand-written report cases (cases.yaml): each case a test, plus the overall per-mention accuracy.

The expected labels in cases.yaml are written in the ``unicxr`` convention ("the lungs are clear"
negates Lung Opacity, Consolidation and Pneumonia; No Finding is 1 or 0), so the cases run with
``convention="unicxr"``; :func:`test_chexpert_convention_differs_only_in_blanks` checks that the
default CheXpert output of every case differs from it only by leaving those cells blank.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from unicxr.labels import FINDINGS
from unicxr.text.labeler import RuleLabeler
from unicxr.text.lexicon import CLEAR_LUNG_FINDINGS

CASES = yaml.safe_load((Path(__file__).parent / "cases.yaml").read_text(encoding="utf-8"))
LABELER = RuleLabeler(convention="unicxr")
CHEXPERT = RuleLabeler()


def _compare(case: dict) -> tuple[int, int, list[str]]:
    """(correct mentions, scored mentions, messages) for one case.

    Scored mentions: every finding with an expected label, plus every finding the labeler labels
    (an unexpected label is an error). No Finding is scored only where the case lists it.
    """
    out = LABELER(case["text"])
    expected = {k: float(v) for k, v in (case.get("labels") or {}).items()}
    for k in expected:
        assert k in FINDINGS, f"unknown finding {k!r} in cases.yaml"
    keys = set(expected) | {FINDINGS[i] for i in range(1, len(FINDINGS)) if not math.isnan(out[i])}
    ok, errors = 0, []
    for k in sorted(keys):
        e, p = expected.get(k, math.nan), float(out[FINDINGS.index(k)])
        if (math.isnan(e) and math.isnan(p)) or e == p:
            ok += 1
        else:
            errors.append(f"{k}: expected {e:g}, got {p:g}")
    return ok, len(keys), errors


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=f"{i:03d}", marks=[pytest.mark.xfail(reason=c["xfail"], strict=True)] if c.get("xfail") else [])
     for i, c in enumerate(CASES)],
)
def test_case(case):
    _, _, errors = _compare(case)
    assert not errors, f"{case['text']!r}: " + "; ".join(errors)


def test_case_set_size_and_accuracy():
    assert len(CASES) >= 150
    ok = total = 0
    for c in CASES:
        a, b, _ = _compare(c)
        ok, total = ok + a, total + b
    acc = ok / total
    print(f"hand-written cases: {len(CASES)} cases, {total} mentions, per-mention accuracy {acc:.4f}")
    assert total >= 300
    assert acc >= 0.95


def test_chexpert_convention_differs_only_in_blanks():
    """CheXpert output = unicxr output, except cells the latter sets to 0 that CheXpert leaves blank:
    No Finding when a finding is present, and the clear-lungs family."""
    free = [0] + [FINDINGS.index(f) for f in CLEAR_LUNG_FINDINGS]
    changed = 0
    for c in CASES:
        old, new = LABELER(c["text"]), CHEXPERT(c["text"])
        for i in range(len(FINDINGS)):
            if np.isnan(old[i]) and np.isnan(new[i]) or old[i] == new[i]:
                continue
            assert i in free and old[i] == 0 and np.isnan(new[i]), (c["text"], FINDINGS[i], old[i], new[i])
            changed += 1
        assert new[0] == 1 or np.isnan(new[0])
    assert changed > 0
