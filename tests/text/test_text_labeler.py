from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from unicxr.labels import FINDINGS, no_finding_value
from unicxr.text.labeler import (
    RuleLabeler,
    label_csv,
    label_dataframe,
    label_report,
    label_reports,
    select_section,
)
from unicxr.text.negation import normalize
from unicxr.utils import UnicxrError

IDX = {n: i for i, n in enumerate(FINDINGS)}


def lab(text: str, section: str = "full") -> dict[str, float]:
    out = label_report(text, section)
    return {n: float(out[i]) for n, i in IDX.items() if not math.isnan(out[i])}


def test_output_shape_dtype_and_values():
    arr = label_reports(["No pneumothorax.", "Large left effusion.", ""])
    assert arr.shape == (3, 14) and arr.dtype == np.float32
    finite = arr[np.isfinite(arr)]
    assert set(np.unique(finite)) <= {-1.0, 0.0, 1.0}


def test_empty_and_non_string_reports_are_all_blank():
    for t in ["", "   ", None, float("nan"), 3]:
        assert np.isnan(RuleLabeler()(t)).all()
    assert label_reports([]).shape == (0, 14)


def test_no_finding_follows_chexpert_rule():
    assert lab("The lungs are clear.")["No Finding"] == 1.0
    assert lab("Right PICC line in the SVC.")["No Finding"] == 1.0  # devices do not count
    assert "No Finding" not in lab("Possible small effusion.")  # uncertain counts; CheXpert leaves it blank
    old = RuleLabeler(convention="unicxr")
    assert old("Possible small effusion.")[0] == 0.0  # the earlier convention writes 0
    for t in ["Mild cardiomegaly.", "No pneumothorax. Small effusion."]:
        out = label_report(t)
        assert np.isnan(out[0]) and np.isnan(no_finding_value(out, "chexpert"))
        assert old(t)[0] == no_finding_value(out) == 0.0


def test_chexpert_convention_leaves_unmentioned_findings_blank():
    out = lab("Heart size normal and lungs are clear.")
    assert out == {"Cardiomegaly": 0.0, "No Finding": 1.0}
    old = RuleLabeler(convention="unicxr")("Heart size normal and lungs are clear.")
    for name in ("Lung Opacity", "Consolidation", "Pneumonia"):
        assert old[IDX[name]] == 0.0
    assert label_report("Lungs are clear.", convention="unicxr")[IDX["Consolidation"]] == 0.0


def test_aggregation_positive_beats_uncertain_beats_negative():
    assert lab("No effusion on the right. Small left effusion.")["Pleural Effusion"] == 1.0
    assert lab("No definite effusion. Possible small effusion.")["Pleural Effusion"] == -1.0
    assert lab("Possible effusion. Large right effusion.")["Pleural Effusion"] == 1.0


def test_meta_sections_are_not_labelled():
    text = "INDICATION: Evaluate for pneumonia.\nCOMPARISON: None.\nFINDINGS: No pneumothorax.\nIMPRESSION: Normal."
    out = lab(text)
    assert "Pneumonia" not in out and out["Pneumothorax"] == 0.0
    # raw section reads everything, so the indication's hedge shows up
    assert lab(text, "raw")["Pneumonia"] == -1.0


def test_section_choices():
    text = "FINDINGS: Moderate cardiomegaly. IMPRESSION: No pneumothorax."
    assert select_section(text, "impression") == "No pneumothorax."
    assert "Cardiomegaly" not in lab(text, "impression")
    assert lab(text, "findings_impression")["Cardiomegaly"] == 1.0
    # no impression: falls back to all content
    assert lab("FINDINGS: Small effusion.", "impression")["Pleural Effusion"] == 1.0
    with pytest.raises(ValueError):
        select_section(text, "bogus")


def test_normalize_separates_punctuation_but_keeps_decimals():
    t = normalize("ET tube 4.5 cm above carina; no PTX?Pneumonia. Plate-like")
    assert " 4.5 " in t and " ; " in t and " ? " in t and "plate like" in t
    assert t.startswith(" ") and t.endswith(" ")


def test_mentions_report_spans_and_kinds():
    m = RuleLabeler().mentions("Heart size is normal. No pleural effusion.")
    kinds = {(x.finding, x.kind, x.value) for x in m}
    assert ("Cardiomegaly", "n", 0.0) in kinds and ("Pleural Effusion", "p", 0.0) in kinds


def test_label_dataframe_and_csv(tmp_path):
    df = pd.DataFrame({"id": ["a", "b"], "text": ["Mild pulmonary edema.", "Lungs are clear. No effusion."]})
    out = label_dataframe(df, "text")
    assert out.loc[0, "Edema"] == 1.0 and math.isnan(out.loc[1, "Edema"])
    with pytest.raises(UnicxrError, match="text column"):
        label_dataframe(df, "nope")
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    n = label_csv(src, tmp_path / "out.csv", "text", progress=False)
    got = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert n == 2 and list(got.columns) == ["id", "text", *FINDINGS]
    assert got.loc[0, "Edema"] == "1" and got.loc[1, "Pleural Effusion"] == "0" and got.loc[1, "Edema"] == ""
    with pytest.raises(UnicxrError, match="not found"):
        label_csv(tmp_path / "missing.csv", tmp_path / "o.csv", "text")


def test_deterministic_and_order_independent():
    texts = ["Small effusion.", "No pneumothorax.", "Possible pneumonia."]
    a = label_reports(texts)
    b = label_reports(texts[::-1])[::-1]
    np.testing.assert_array_equal(np.nan_to_num(a, nan=9), np.nan_to_num(b, nan=9))


def test_label_cli(tmp_path, cli):
    src = tmp_path / "r.csv"
    pd.DataFrame({"rep": ["Moderate cardiomegaly.", "No acute process."]}).to_csv(src, index=False)
    res = cli("label", str(src), "--text-column", "rep", "--out", str(tmp_path / "o.csv"), "--no-progress")
    assert res.returncode == 0, res.stderr
    got = pd.read_csv(tmp_path / "o.csv", dtype=str, keep_default_na=False)
    assert got.loc[0, "Cardiomegaly"] == "1" and got.loc[1, "No Finding"] == "1"
    bad = cli("label", str(src), "--text-column", "nope", "--out", str(tmp_path / "x.csv"))
    assert bad.returncode == 2 and "error:" in bad.stderr and "nope" in bad.stderr
    bad = cli("label", str(src), "--text-column", "rep", "--section", "weird", "--out", str(tmp_path / "x.csv"))
    assert bad.returncode == 2 and "--section" in bad.stderr
