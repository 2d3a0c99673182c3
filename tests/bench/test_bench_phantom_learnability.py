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


def test_bench_enriches_rare_findings_unless_natural():
    """The bench renders Lung Lesion, Pleural Other and Fracture at 12% in train and test (printed);
    --natural keeps the phantom's base rates, and --prevalence overrides either."""
    from unicxr.bench.phantom_learnability import BENCH_PREVALENCE, make_arrays
    from unicxr.phantom.config import DEFAULT_PREVALENCE

    assert set(BENCH_PREVALENCE) == {"Lung Lesion", "Pleural Other", "Fracture"}
    assert all(BENCH_PREVALENCE[k] > DEFAULT_PREVALENCE[k] for k in BENCH_PREVALENCE)
    j = FINDINGS.index("Fracture")
    _, y_nat = make_arrays(400, 16, 5, workers=1)
    _, y_enr = make_arrays(400, 16, 5, workers=1, prevalence=BENCH_PREVALENCE)
    n_nat, n_enr = int((y_nat[:, j] != 0).sum() - np.isnan(y_nat[:, j]).sum()), \
        int((y_enr[:, j] != 0).sum() - np.isnan(y_enr[:, j]).sum())
    assert n_enr > 2 * n_nat


def test_bench_prints_its_prevalence(capsys, monkeypatch):
    import unicxr.bench.phantom_learnability as bench

    seen = []
    real = bench.make_arrays

    def spy(n, size, seed, workers=2, prevalence=None):
        seen.append(dict(prevalence or {}))
        return real(n, size, seed, workers, prevalence)

    monkeypatch.setattr(bench, "make_arrays", spy)
    args = ["--n-train", "16", "--n-test", "16", "--size", "32", "--epochs", "1", "--workers", "1",
            "--threads", "1", "--n-boot", "0"]
    bench.main(args)
    assert seen[0] == seen[1] == bench.BENCH_PREVALENCE
    assert "Fracture=0.12" in capsys.readouterr().out
    seen.clear()
    bench.main([*args, "--natural", "--prevalence", "Edema=0.5"])
    assert seen[0] == {"Edema": 0.5} and "Fracture=0.12" not in capsys.readouterr().out


def test_case_subtypes_describe_the_rendered_rows():
    """Row i of case_subtypes names the drawn variant of image i's Fracture / Lung Lesion / Pleural Other."""
    from unicxr.bench.phantom_learnability import BENCH_PREVALENCE, case_subtypes, make_arrays

    _, y = make_arrays(300, 16, 7, workers=1, prevalence=BENCH_PREVALENCE)
    sub = case_subtypes(300, 7, BENCH_PREVALENCE)
    assert len(sub) == len(y)
    for name in ("Fracture", "Lung Lesion", "Pleural Other"):
        j = FINDINGS.index(name)
        has = np.array([name in d for d in sub])
        drawn = (y[:, j] == 1) | (y[:, j] == -1)  # present or uncertain: drawn (blank = not mentioned)
        assert np.array_equal(has, drawn), name
    fx = {d["Fracture"] for d in sub if "Fracture" in d}
    every = {f"{bone} {age}" for bone in ("rib", "clavicle", "clavicle+rib") for age in ("acute", "healing")}
    assert {"rib acute", "rib healing", "clavicle acute"} <= fx <= every


def test_several_cnns_on_the_same_images_report_their_mean(capsys):
    """--cnn-seeds K trains K CNNs on the same rendered images; each finding's AUROC is the mean of the
    single runs with --cnn-seed s, s+1, ... and the macro range spans theirs."""
    from unicxr.bench.phantom_learnability import main

    args = ["--n-train", "48", "--n-test", "200", "--size", "32", "--epochs", "1", "--workers", "1", "--threads", "1",
            "--n-boot", "10", "--seed", "4"]
    one = [main([*args, "--cnn-seed", str(s)]) for s in (9, 10)]
    both = main([*args, "--cnn-seed", "9", "--cnn-seeds", "2"])
    for name in [*FINDINGS, "macro"]:
        if np.isfinite(both[name]):
            assert abs(both[name] - (one[0][name] + one[1][name]) / 2) < 1e-9, name
    assert np.isfinite(both["macro"]) and one[0]["macro"] != one[1]["macro"]  # the CNN seed matters, the images are the same
    assert both["macro_min"] == min(o["macro"] for o in one) and both["macro_max"] == max(o["macro"] for o in one)
    assert "mean of 2 CNNs" in capsys.readouterr().out
