"""Finding sizes read from report text (unicxr.text.severity)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from unicxr.text.severity import SEVERITY_GRADES, all_severities

MILD, MODERATE, SEVERE = (SEVERITY_GRADES[k] for k in ("mild", "moderate", "severe"))


@pytest.mark.parametrize("text,expected", [
    ("Large left pneumothorax. Small right pleural effusion.", {"Pneumothorax": SEVERE, "Pleural Effusion": MILD}),
    ("There is a small left apical pneumothorax.", {"Pneumothorax": MILD}),
    ("Possible tiny right apical pneumothorax.", {"Pneumothorax": MILD}),
    ("Moderate-sized right pleural effusion.", {"Pleural Effusion": MODERATE}),
    ("Markedly enlarged cardiac silhouette.", {"Cardiomegaly": SEVERE}),
    ("Pleural effusion on the left, large.", {"Pleural Effusion": SEVERE}),  # the nearest word after it
    # several mentions of one finding take the largest
    ("Small left pleural effusion. Moderate right pleural effusion.", {"Pleural Effusion": MODERATE}),
])
def test_sizes_qualify_their_finding(text, expected):
    assert all_severities(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [
    "No large pleural effusion.",  # negated mentions say nothing
    "Left pneumothorax.",  # mentioned without a size
    "Lungs are clear. No acute process.",
    "",
])
def test_nothing_said_is_left_out(text):
    assert "Pleural Effusion" not in all_severities(text) and "Pneumothorax" not in all_severities(text)


def test_a_size_in_another_sentence_does_not_count():
    assert all_severities("Large left pleural effusion. Left pneumothorax.") == pytest.approx(
        {"Pleural Effusion": SEVERE})


def test_phantom_reports_give_the_drawn_pneumothorax_and_effusion_sizes(tmp_path):
    """Consistency with our own phantom (its reports write its sizes): every pneumothorax and effusion
    whose size the simulator drew is read back with that size."""
    from unicxr.phantom import write_dataset

    write_dataset(tmp_path / "p", 150, 32, seed=5, workers=1, progress=False)
    meta = pd.read_csv(tmp_path / "p" / "metadata.csv", dtype=str, keep_default_na=False)
    checked = 0
    for _, row in meta.iterrows():
        read = all_severities(row["report"])
        for finding in ("Pneumothorax", "Pleural Effusion"):
            col = "severity_" + finding.lower().replace(" ", "_")
            if row[finding] in ("1", "1.0") and row[col]:
                assert math.isclose(read[finding], SEVERITY_GRADES[row[col]]), row["report"]
                checked += 1
    assert checked >= 10
