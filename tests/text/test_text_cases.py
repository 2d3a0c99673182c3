"""Hand-written report cases (cases.yaml): each case a test, plus the overall per-mention accuracy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from unicxr.labels import FINDINGS
from unicxr.text.labeler import RuleLabeler

CASES = yaml.safe_load((Path(__file__).parent / "cases.yaml").read_text(encoding="utf-8"))
LABELER = RuleLabeler()


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
