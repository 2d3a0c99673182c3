"""Labeler vs the phantom simulator's ground-truth labels (acceptance 1).

The phantom's ground truth follows the same CheXpert labeling rules as the labeler ("the lungs are
clear" => Lung Opacity/Consolidation/Pneumonia 0; "heart size and mediastinal contours are normal" =>
Cardiomegaly/Enlarged Cardiomediastinum 0), so the labeler is compared with the RAW reference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unicxr.labels import FINDINGS, labels_from_row
from unicxr.text.agreement import label_agreement
from unicxr.text.labeler import RuleLabeler


def _run(tmp_path, cli, n: int, seed: int) -> None:
    out = tmp_path / "ph"
    res = cli("phantom", "--n", str(n), "--size", "32", "--seed", str(seed), "--out", str(out), timeout=1200)
    assert res.returncode == 0, res.stderr[-2000:]
    df = pd.read_csv(out / "metadata.csv", dtype=str, keep_default_na=False)
    ref = np.stack([labels_from_row(r) for r in df[list(FINDINGS)].to_dict("records")])
    pred = RuleLabeler().label_many(df["report"].tolist())
    raw = label_agreement(pred, ref)
    print(f"\nphantom n={n} seed={seed}\nraw reference:\n{raw.summary()}")
    assert raw.micro.f1 >= 0.99
    for name in ("positive", "negative", "uncertain"):
        assert raw.classes[name].support > 0
        assert raw.classes[name].f1 >= 0.97, name
    assert len(raw.mismatches) <= 0.01 * len(df) * len(FINDINGS), raw.mismatches[:20]


def test_phantom_reports_fast(tmp_path, cli):
    _run(tmp_path, cli, n=200, seed=3)


@pytest.mark.slow
def test_phantom_reports_2000(tmp_path, cli):
    _run(tmp_path, cli, n=2000, seed=11)
