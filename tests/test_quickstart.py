"""The README's main job (scripts/quickstart.sh) runs end to end and leaves its outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_script(tmp_path):
    out = tmp_path / "qs"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), str(out)],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    enc = json.loads((out / "encoder_test.json").read_text())
    assert enc["macro_auroc"] > 0.7
    metrics = json.loads((out / "eval_images" / "metrics.json").read_text())
    assert "fd" in json.dumps(metrics).lower()
    assert (out / "eval_images" / "report.html").stat().st_size > 1000
    assert (out / "phantom_preview.png").exists() and (out / "labels.csv").exists()
