from __future__ import annotations

import numpy as np
import pytest

from unicxr.text.agreement import label_agreement

N = np.nan


def _row(**kw) -> list[float]:
    from unicxr.labels import FINDINGS

    r = [N] * 14
    for k, v in kw.items():
        r[FINDINGS.index(k.replace("_", " "))] = v
    return r


def test_counts_by_hand():
    ref = np.array([_row(Edema=1, Pneumothorax=0), _row(Cardiomegaly=-1)])
    pred = np.array([_row(Edema=1, Pneumothorax=-1), _row(Cardiomegaly=-1, Fracture=0)])
    a = label_agreement(pred, ref, include_no_finding=False)
    assert (a.classes["positive"].tp, a.classes["positive"].fp, a.classes["positive"].fn) == (1, 0, 0)
    # negative: ref Pneumothorax 0 missed; pred Fracture 0 spurious
    assert (a.classes["negative"].tp, a.classes["negative"].fp, a.classes["negative"].fn) == (0, 1, 1)
    # uncertain: Cardiomegaly hit, Pneumothorax -1 spurious
    assert (a.classes["uncertain"].tp, a.classes["uncertain"].fp, a.classes["uncertain"].fn) == (1, 1, 0)
    assert a.micro.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert len(a.mismatches) == 2 and a.accuracy == pytest.approx(24 / 26)
    assert "micro" in a.summary()


def test_shape_check():
    with pytest.raises(ValueError):
        label_agreement(np.zeros((2, 13)), np.zeros((2, 13)))
