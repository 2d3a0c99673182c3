from __future__ import annotations

import pytest

from unicxr.data.reports import canonical_header, clean_report, findings_impression, split_sections

MIMIC_NEW = (
    '                                 FINAL REPORT\n'
    ' EXAMINATION:  CHEST (PA AND LAT)\n'
    ' \n'
    ' INDICATION:  ___F with new onset ascites  // eval for infection\n'
    ' \n'
    ' TECHNIQUE:  Chest PA and lateral\n'
    ' \n'
    ' COMPARISON:  None.\n'
    ' \n'
    ' FINDINGS: \n'
    ' \n'
    ' There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral\n'
    ' nodular opacities that most likely represent nipple shadows. The\n'
    ' cardiomediastinal silhouette is normal.  Dr. ___ was paged at ___ on ___.\n'
    ' \n'
    ' IMPRESSION: \n'
    ' \n'
    ' No acute cardiopulmonary process.\n'
)

MIMIC_OLD = (
    '                                 FINAL REPORT\n'
    ' WET READ: ___ ___ 3:48 PM\n'
    ' HISTORY:  ___-year-old man with chest pain.\n'
    ' \n'
    ' PA AND LATERAL VIEWS OF THE CHEST:  Heart size is normal.  Lungs are clear\n'
    '  without effusion.  Mild degenerative changes of the thoracic spine.\n'
    ' \n'
    ' IMPRESSIONS:  No acute process.\n'
    ' \n'
    ' RECOMMENDATION(S):  Follow-up chest CT in 3 months.\n'
)

IU = (
    "Comparison: None. Indication: XXXX-year-old male, chest pain. "
    "Findings: The heart is normal in size. The mediastinum is unremarkable. XXXX XXXX are intact. "
    "Impression: No acute disease."
)


def test_mimic_sections_are_canonical_and_unwrapped():
    s = split_sections(MIMIC_NEW)
    assert list(s) == ["examination", "indication", "technique", "comparison", "findings", "impression"]
    assert s["examination"] == "CHEST (PA AND LAT)"
    assert s["findings"].startswith("There is no focal consolidation")
    assert "\n" not in s["findings"] and "  " not in s["findings"]
    assert "Bilateral nodular opacities" in s["findings"]
    assert s["impression"] == "No acute cardiopulmonary process."
    assert "body" not in s  # the FINAL REPORT banner is not content


def test_mimic_old_style_odd_header_and_time_colon():
    s = split_sections(MIMIC_OLD)
    assert s["wet read"] == "___ ___ 3:48 PM"  # "3:48" is not a header
    assert s["history"].endswith("man with chest pain.")
    assert s["pa and lateral views of the chest"].startswith("Heart size is normal. Lungs are clear without")
    assert s["impression"] == "No acute process."
    assert s["recommendation(s)"] == "Follow-up chest CT in 3 months."
    fi = findings_impression(MIMIC_OLD)
    assert fi.startswith("FINDINGS: Heart size is normal.")
    assert fi.endswith("IMPRESSION: No acute process.")
    assert "chest pain" not in fi and "CT" not in fi  # meta sections never leak into training text


def test_findings_impression_mimic_removes_deid_markers():
    fi = findings_impression(MIMIC_NEW)
    assert fi.startswith("FINDINGS: There is no focal consolidation")
    assert "IMPRESSION: No acute cardiopulmonary process." in fi
    assert "___" not in fi
    assert "ascites" not in fi  # indication excluded


def test_iu_xray_mixed_case_inline_headers():
    s = split_sections(IU)
    assert s["comparison"] == "None."
    assert s["indication"].startswith("XXXX-year-old male")
    assert s["findings"].endswith("XXXX XXXX are intact.")
    assert s["impression"] == "No acute disease."
    fi = findings_impression(IU)
    assert "XXXX" not in fi
    assert fi == "FINDINGS: The heart is normal in size. The mediastinum is unremarkable. are intact. IMPRESSION: No acute disease."


def test_headerless_text_is_body_and_returned_plain():
    text = "  Cardiomegalia.\n  Derrame pleural izquierdo.  "
    assert split_sections(text) == {"body": "Cardiomegalia. Derrame pleural izquierdo."}
    assert findings_impression(text) == "Cardiomegalia. Derrame pleural izquierdo."


def test_lowercase_header_word_inside_sentence_is_not_a_header():
    text = "FINDINGS: Compared with the prior, the impression: unchanged is not a header here. IMPRESSION: Stable."
    s = split_sections(text)
    assert s["findings"] == "Compared with the prior, the impression: unchanged is not a header here."
    assert s["impression"] == "Stable."


def test_only_impression_and_only_findings():
    assert findings_impression("INDICATION: cough.\nIMPRESSION: Normal chest.") == "IMPRESSION: Normal chest."
    assert findings_impression("FINDINGS: Lungs clear.\nCOMPARISON: none") == "FINDINGS: Lungs clear."
    assert findings_impression("INDICATION: cough only") == ""


def test_repeated_header_is_joined_and_empty_header_kept():
    s = split_sections("FINDINGS: A.\nIMPRESSION:\nFINDINGS: B.")
    assert s["findings"] == "A. B."
    assert s["impression"] == ""


@pytest.mark.parametrize("bad", ["", "   \n ", None, 3.0])
def test_empty_or_non_string(bad):
    assert split_sections(bad) == {}
    assert clean_report(bad if isinstance(bad, str) else "") == ""
    assert findings_impression(bad) == ""


def test_clean_report_whitespace_and_markers():
    assert clean_report("Comparison with ___ .\n\n  Stable   effusion ,  unchanged.") == (
        "Comparison with. Stable effusion, unchanged."
    )
    assert clean_report("Seen by Dr. ___ at ___.", deid_token="[DEID]") == "Seen by Dr. [DEID] at [DEID]."
    assert clean_report("XXXX XXXX are intact") == "are intact"
    # Roman numeral-like words and single X are left alone
    assert clean_report("Grade X lesion, type II") == "Grade X lesion, type II"


def test_canonical_header_aliases():
    assert canonical_header("IMPRESSIONS") == "impression"
    assert canonical_header("Reason  for exam") == "indication"
    assert canonical_header("CLINICAL HISTORY") == "history"
    assert canonical_header("PORTABLE AP CHEST") == "portable ap chest"


def test_subheaders_inside_findings_are_kept():
    text = (
        "FINDINGS:\n LINES/TUBES: Right IJ line ends in the SVC.\n LUNGS: Clear.\n"
        " PLEURA: No effusion.\n IMPRESSION: Line in good position.\n"
    )
    s = split_sections(text)
    assert s["findings"] == "" and s["lines/tubes"] == "Right IJ line ends in the SVC."
    assert findings_impression(text) == (
        "FINDINGS: Lines/tubes: Right IJ line ends in the SVC. Lungs: Clear. Pleura: No effusion. "
        "IMPRESSION: Line in good position."
    )


def test_body_before_headers_is_not_findings_when_findings_exist():
    text = "Portable chest at 10:15.\nFINDINGS: Lungs clear.\nIMPRESSION: Normal."
    assert split_sections(text)["body"] == "Portable chest at 10:15."
    assert findings_impression(text) == "FINDINGS: Lungs clear. IMPRESSION: Normal."
    assert findings_impression("Portable chest.\nIMPRESSION: Normal.") == "FINDINGS: Portable chest. IMPRESSION: Normal."
