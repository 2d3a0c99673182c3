"""The README's main job (scripts/quickstart.sh) runs end to end and its figures make sense.

Figures, not strings: the trained evaluation encoder reads findings above chance, the real-vs-real FD
(validate vs test) is below the FD of blurred test images at the same sizes, and `eval sanity` passes
for this encoder (issue #16, acceptance 1; the failing half is in tests/eval/test_eval_sanity.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_script(tmp_path):
    from unicxr.data.image_sets import open_image_set
    from unicxr.eval.features import extract_features, parse_features_spec
    from unicxr.eval.image_metrics import bootstrap_fd
    from unicxr.eval.sanity import BlurredSet

    out = tmp_path / "qs"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), str(out)],
                          capture_output=True, text=True, timeout=2400)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the encoder reads findings: macro AUROC well above chance (0.5) on the test split
    enc = json.loads((out / "encoder_test.json").read_text())
    assert enc["macro_auroc"] > 0.7, enc
    per = {k[len("auroc_") :]: v for k, v in enc.items() if k.startswith("auroc_") and v is not None}
    assert sum(v > 0.6 for v in per.values()) >= 5, per

    # real vs real is the floor: FD(validate, test) below FD(validate, blurred test) at the same N
    metrics = json.loads((out / "eval_images" / "metrics.json").read_text())["metrics"]
    fd_vt = metrics["fd"]["value"]
    ext = parse_features_spec(f"own:{out / 'encoder'}")
    val = extract_features(ext, open_image_set(out / "cache", split="validate"), progress=False)[0]
    test = open_image_set(out / "cache", split="test")
    assert metrics["n_real"] == len(test) and metrics["n_fake"] == len(val)
    for sigma in (1.0, 2.0):
        blurred = extract_features(ext, BlurredSet(test, sigma), progress=False)[0]
        fd_blur = bootstrap_fd(val, blurred, n_boot=50)
        assert fd_vt < fd_blur["value"], (sigma, fd_vt, fd_blur)
    assert fd_vt < fd_blur["ci_low"], (fd_vt, fd_blur)  # σ = 2: below the whole interval
    assert (out / "eval_images" / "report.html").stat().st_size > 1000

    # the feature space passes every sanity check, with margin on the findings
    sanity = json.loads((out / "sanity.json").read_text())
    assert sanity["all_passed"] is True and sanity["failure"] is None, sanity["failure"]
    assert all(sanity["passed"].values()), sanity["passed"]
    sep = sanity["checks"]["finding_separation"]
    assert sep["n_tested"] >= 8 and sep["n_separated"] >= 0.75 * sep["n_tested"], sep
    fd = sanity["checks"]["blur_chain"]["fd"]
    assert fd["0"]["ci_high"] < fd["1.0"]["ci_low"] < fd["1.0"]["ci_high"] < fd["2.0"]["ci_low"]

    assert (out / "phantom_preview.png").exists() and (out / "labels.csv").exists()

    # 8/10: one generated report per test image, scored against the phantom's reference reports
    import pandas as pd

    from unicxr.labels import FINDINGS

    reports = pd.read_csv(out / "reports_test.csv", dtype=str, keep_default_na=False)
    assert len(reports) == len(test) and set(FINDINGS) <= set(reports.columns)
    assert all(r.strip() for r in reports["report"])
    scored = json.loads((out / "eval_reports" / "metrics.json").read_text())
    assert scored["n"] == len(test) and set(scored["ce"]) == {"uncertain_as_negative", "uncertain_as_positive"}
    # 9-10/10: one synthetic image per test report, compared with the real test images
    gen = pd.read_csv(out / "generated" / "metadata.csv", dtype=str, keep_default_na=False)
    assert len(gen) == len(test)
    from PIL import Image

    assert Image.open(out / "generated" / gen["image_path"][0]).text["synthetic"] == "true"
    fake = json.loads((out / "eval_generated" / "metrics.json").read_text())["metrics"]
    assert fake["n_fake"] == len(test) and fake["fd"]["value"] > fd_vt  # a 60-step generator is far from real
