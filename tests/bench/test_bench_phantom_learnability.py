"""The phantom learnability bench: paired bootstrap AUROC replicates and a tiny end-to-end run."""

from __future__ import annotations

import numpy as np

from unicxr.labels import FINDINGS
from unicxr.utils.metrics import auroc, bootstrap_aurocs


def test_bootstrap_aurocs_are_paired_resamples_of_the_rows():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.3).astype(float)
    s = rng.random((400, 3)) + np.array([0.6, 0.3, 0.0]) * y
    y[:20, 1] = np.nan  # ignored, as by auroc
    y[:, 2] = 0.0  # one class only: no AUROC
    reps = bootstrap_aurocs(y, s, n_boot=150, seed=3)
    assert reps.shape == (150, 3)
    assert np.array_equal(reps, bootstrap_aurocs(y, s, n_boot=150, seed=3), equal_nan=True)  # seeded
    assert np.isnan(reps[:, 2]).all()
    for j in (0, 1):
        lo, hi = np.quantile(reps[:, j], [0.025, 0.975])
        assert lo < auroc(y[:, j], s[:, j]) < hi and hi - lo < 0.2
    # paired: a copy of column 0 gives the same replicate in every resample
    both = bootstrap_aurocs(np.c_[y[:, :1], y[:, :1]], np.c_[s[:, :1], s[:, :1]], n_boot=20, seed=1)
    assert np.array_equal(both[:, 0], both[:, 1])


def test_learnability_bench_runs_end_to_end(capsys):
    from unicxr.bench.phantom_learnability import main

    res = main(["--n-train", "48", "--n-test", "64", "--size", "32", "--epochs", "1", "--workers", "1",
                "--threads", "1", "--n-boot", "20"])
    out = capsys.readouterr().out
    assert set(FINDINGS) <= set(res) and "macro" in res
    vals = [res[f] for f in FINDINGS if np.isfinite(res[f])]
    assert vals and all(0.0 <= v <= 1.0 for v in vals)
    assert "95% CI" in out and "macro AUROC" in out
