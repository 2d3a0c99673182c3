"""Labeler throughput on 10,000 reports (phantom reports with headers + hand-written real-style texts)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from unicxr.text.labeler import RuleLabeler

CASES = [c["text"] for c in yaml.safe_load((Path(__file__).parent / "cases.yaml").read_text(encoding="utf-8"))]


def throughput(texts: list[str], labeler: RuleLabeler | None = None) -> tuple[float, float]:
    """(reports per CPU second, reports per wall second) for labelling ``texts`` once."""
    lab = labeler or RuleLabeler()
    c0, w0 = time.process_time(), time.perf_counter()
    out = lab.label_many(texts)
    c1, w1 = time.process_time(), time.perf_counter()
    assert out.shape == (len(texts), 14)
    return len(texts) / max(c1 - c0, 1e-9), len(texts) / max(w1 - w0, 1e-9)


def test_throughput_small():
    texts = CASES * 4
    cpu, wall = throughput(texts)
    print(f"\n{len(texts)} reports: {cpu:.0f} reports/CPU-s, {wall:.0f} reports/wall-s")
    assert cpu > 300  # a loose floor: fast CI machines are far above, loaded ones stay above


@pytest.mark.slow
def test_throughput_10000(tmp_path, cli):
    import pandas as pd

    res = cli("phantom", "--n", "1000", "--size", "32", "--seed", "5", "--out", str(tmp_path / "ph"), timeout=1200)
    assert res.returncode == 0, res.stderr[-2000:]
    phantom = pd.read_csv(tmp_path / "ph" / "metadata.csv", dtype=str, keep_default_na=False)["report"].tolist()
    rng = np.random.default_rng(0)
    pool = phantom + CASES
    texts = [pool[i] for i in rng.integers(0, len(pool), size=10_000)]
    cpu, wall = throughput(texts)
    print(f"\n10,000 reports (mean {np.mean([len(t) for t in texts]):.0f} chars): "
          f"{cpu:.0f} reports/CPU-s, {wall:.0f} reports/wall-s")
    assert cpu >= 1000
