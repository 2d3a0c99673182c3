from __future__ import annotations

import math

import numpy as np
import pytest

from unicxr import labels as L


def test_order_and_subset():
    assert L.FINDINGS[0] == "No Finding" and L.FINDINGS[-1] == "Support Devices"
    assert len(L.FINDINGS) == 14 == L.NUM_FINDINGS
    assert set(L.CE5) <= set(L.FINDINGS) and len(L.CE5) == 5
    assert L.finding_index("pleural effusion") == 10


@pytest.mark.parametrize(
    "cell,expected",
    [("1", 1.0), ("0", 0.0), ("-1", -1.0), ("1.0", 1.0), ("-1.0", -1.0), ("", math.nan), (None, math.nan),
     (float("nan"), math.nan), (1, 1.0), (np.float32(-1), -1.0), (" 0.0 ", 0.0), (True, 1.0)],
)
def test_parse_label(cell, expected):
    got = L.parse_label(cell)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


@pytest.mark.parametrize("bad", ["2", "yes", 0.5, "1,0"])
def test_parse_label_rejects(bad):
    with pytest.raises(ValueError, match="label value"):
        L.parse_label(bad)


def test_labels_from_row_and_policies():
    row = {"Cardiomegaly": "1.0", "Edema": "-1", "Pleural Effusion": "0", "Fracture": ""}
    arr = L.labels_from_row(row)
    assert arr.shape == (14,) and arr.dtype == np.float32
    assert arr[2] == 1 and arr[5] == -1 and arr[10] == 0 and np.isnan(arr[12]) and np.isnan(arr[0])
    neg = L.apply_policy(arr, "uncertain_as_negative")
    pos = L.apply_policy(arr, L.UncertainPolicy.AS_POSITIVE)
    ign = L.apply_policy(arr, "ignore")
    assert neg[5] == 0 and pos[5] == 1 and np.isnan(ign[5])
    assert neg[12] == 0 and not np.isnan(neg).any()
    assert np.isnan(L.apply_policy(arr, "ignore", blank_as_negative=False)[12])
    with pytest.raises(KeyError, match="No Finding"):
        L.labels_from_row(row, strict=True)
    with pytest.raises(ValueError, match="Edema"):
        L.labels_from_row({"Edema": "maybe"})


def test_no_finding_rule_and_findings_list():
    arr = L.parse_findings_list("Cardiomegaly, Pleural Effusion")
    assert arr[2] == arr[10] == 1 and arr[0] == 0
    only_devices = L.parse_findings_list(["Support Devices"])
    assert only_devices[0] == 1  # devices alone do not break No Finding
    x = np.zeros(14, dtype=np.float32)
    x[8] = -1
    assert L.no_finding_value(x) == 0
    assert L.format_label(float("nan")) == "" and L.format_label(-1.0) == "-1" and L.format_label(1) == "1"
    with pytest.raises(KeyError):
        L.parse_findings_list("Cardiomegally")
