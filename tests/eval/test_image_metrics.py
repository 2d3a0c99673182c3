"""Image metrics: FD against scipy and the Gaussian closed form, KID/MMD, PRDC, MS-SSIM, bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from unicxr.eval import image_metrics as im


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """Reference FD written the textbook way: scipy's general matrix square root of S_a S_b."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


@pytest.mark.parametrize("n,d,seed", [(400, 16, 0), (300, 64, 1), (1000, 8, 2), (200, 100, 3)])
def test_fd_matches_scipy_reference(n, d, seed):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(n, d)) @ mix
    b = rng.normal(size=(n + 17, d)) * 1.2 + 0.3
    ref = _scipy_fd(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", im.SmallSampleWarning)
        got = im.frechet_distance(a, b)
    assert abs(got - ref) / ref < 1e-6


def test_fd_float32_torch_input_and_stats_entry_point_agree():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 12))
    b = rng.normal(size=(250, 12)) + 0.5
    mu_a, s_a = im.gaussian_stats(a)
    mu_b, s_b = im.gaussian_stats(b)
    from_stats = im.frechet_distance_from_stats(mu_a, s_a, mu_b, s_b)
    from_torch = im.frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert from_stats == pytest.approx(from_torch, rel=1e-10)
    assert from_stats == pytest.approx(_scipy_fd(a, b), rel=1e-6)


def test_fd_closed_form_two_gaussians_commuting_and_general():
    rng = np.random.default_rng(0)
    d = 6
    # Commuting (diagonal) covariances: FD = |dmu|^2 + sum (sqrt(l_a) - sqrt(l_b))^2.
    la, lb = rng.uniform(0.5, 3.0, d), rng.uniform(0.5, 3.0, d)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    expected = float(((mu_a - mu_b) ** 2).sum() + ((np.sqrt(la) - np.sqrt(lb)) ** 2).sum())
    got = im.frechet_distance_from_stats(mu_a, np.diag(la), mu_b, np.diag(lb))
    assert got == pytest.approx(expected, rel=1e-12)
    # Same covariance up to a rotation R: S_b = R S_a R^T, general closed form via the 1-D case in 2-D:
    # N(0, diag(s1^2, s2^2)) vs the same rotated by 90 degrees = diag(s2^2, s1^2) -> 2 (s1 - s2)^2.
    s1, s2 = 1.7, 0.4
    cov_a = np.diag([s1**2, s2**2])
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    got2 = im.frechet_distance_from_stats(np.zeros(2), cov_a, np.zeros(2), rot @ cov_a @ rot.T)
    assert got2 == pytest.approx(2 * (s1 - s2) ** 2, rel=1e-12)
    # Large samples from the two Gaussians approach the closed form.
    a = mu_a + rng.normal(size=(200_000, d)) * np.sqrt(la)
    b = mu_b + rng.normal(size=(200_000, d)) * np.sqrt(lb)
    assert im.frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_fd_singular_covariance_is_finite_and_real():
    rng = np.random.default_rng(1)
    # rank-3 features in 20-D, and fewer samples than dimensions
    a = rng.normal(size=(500, 3)) @ rng.normal(size=(3, 20))
    b = rng.normal(size=(15, 20))
    with pytest.warns(im.SmallSampleWarning):
        fd = im.frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0
    # Data-factor path (N-1 < D) equals the eigen path on the same covariances.
    mu_a, s_a = im.gaussian_stats(a)
    mu_b, s_b = im.gaussian_stats(b)
    assert fd == pytest.approx(im.frechet_distance_from_stats(mu_a, s_a, mu_b, s_b), rel=1e-8)
    assert im.frechet_distance(a, a, warn=False) == pytest.approx(0.0, abs=1e-8)


def test_fd_rejects_bad_input():
    with pytest.raises(ValueError, match="feature dimensions differ"):
        im.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        im.frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        im.frechet_distance(np.zeros(5), np.zeros(5))


def test_small_sample_warning_thresholds():
    assert (
        im.sample_size_warnings(100, 200, emit=False)
        and "singular" in im.sample_size_warnings(100, 200, emit=False)[0]
    )
    assert im.sample_size_warnings(300, 200, emit=False)
    assert im.sample_size_warnings(400, 200, emit=False) == []


def test_kid_full_subset_equals_torchmetrics_kernel_estimate():
    """With one subset holding all samples, KID is the exact full-set unbiased MMD^2; torchmetrics agrees."""
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(2)
    a = rng.normal(size=(120, 10))
    b = rng.normal(size=(120, 10)) + 0.2
    res = im.kid(a, b, subset_size=1000, n_subsets=3)
    ref = float(poly_mmd(torch.from_numpy(a), torch.from_numpy(b), degree=3, gamma=None, coef=1.0))
    assert res.subset_size == 120
    assert res.mean == pytest.approx(ref, rel=1e-9)
    assert res.std == pytest.approx(0.0, abs=1e-12)
    # Brute-force unbiased estimator as a second reference.
    k = lambda x, y: (x @ y.T / 10 + 1) ** 3  # noqa: E731
    kxx, kyy = k(a, a), k(b, b)
    n = 120
    brute = (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * k(a, b).mean()
    )
    assert res.mean == pytest.approx(brute, rel=1e-9)


def test_kid_and_mmd_detect_shift_and_are_seeded():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 8))
    same = rng.normal(size=(300, 8))
    shifted = rng.normal(size=(300, 8)) + 0.7
    k_same = im.kid(a, same, subset_size=100, n_subsets=20, seed=1)
    k_shift = im.kid(a, shifted, subset_size=100, n_subsets=20, seed=1)
    assert abs(k_same.mean) < 3 * k_same.std + 1e-3
    assert k_shift.mean > 10 * max(abs(k_same.mean), 1e-4)
    assert im.kid(a, shifted, subset_size=100, n_subsets=20, seed=1).mean == k_shift.mean
    assert im.mmd(a, shifted)["mmd2"] > 10 * abs(im.mmd(a, same)["mmd2"])
    assert im.mmd(a, shifted, kernel="poly")["mmd2"] > 0
    with pytest.raises(ValueError, match="unknown MMD kernel"):
        im.mmd(a, same, kernel="laplace")


def test_bootstrap_mmd_blocked_path_equals_full_kernel(monkeypatch):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(80, 5)), rng.normal(size=(60, 5)) + 0.3
    full = im.bootstrap_mmd2(a, b, kernel="gaussian", bandwidth=2.0, n_boot=0)
    monkeypatch.setattr(im, "_MAX_KERNEL_ENTRIES", 10)
    blocked = im.bootstrap_mmd2(a, b, kernel="gaussian", bandwidth=2.0, n_boot=5, subset_size=50)
    assert blocked["value"] == pytest.approx(full["value"], rel=1e-10)
    assert blocked["ci_low"] <= blocked["ci_high"]


def test_bootstrap_mask_keeps_estimator_unbiased():
    """Mean of masked bootstrap replicates ~= the full-set unbiased estimate (no duplicate inflation)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(200, 6))
    a, b = x[:100], x[100:]
    res = im.bootstrap_mmd2(a, b, kernel="poly", n_boot=300, seed=0)
    assert res["ci_low"] < 0.0 < res["ci_high"]
    # the naive (unmasked) bootstrap would be biased upward by ~ (E k(x,x) - E k(x,y)) / n
    assert res["ci_low"] < res["value"] < res["ci_high"]


def test_prdc_identical_and_disjoint_sets():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(200, 4))
    res = im.prdc(a, a.copy(), k=5)
    assert res["precision"] == 1.0 and res["recall"] == 1.0 and res["coverage"] == 1.0
    assert 0.9 < res["density"] < 1.5
    far = im.prdc(a, rng.normal(size=(150, 4)) + 20.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # A fake set concentrated on part of the real support: precision high, recall/coverage lower.
    part = a[a[:, 0] > 0.5] + 0.01 * rng.normal(size=(int((a[:, 0] > 0.5).sum()), 4))
    pr = im.prdc(a, part, k=5)
    assert pr["precision"] > 0.9 and pr["coverage"] < 0.6


def test_prdc_matches_brute_force_definition():
    rng = np.random.default_rng(8)
    r, f, k = rng.normal(size=(60, 3)), rng.normal(size=(50, 3)) * 1.3, 5
    drr = np.linalg.norm(r[:, None] - r[None], axis=-1)
    dff = np.linalg.norm(f[:, None] - f[None], axis=-1)
    drf = np.linalg.norm(r[:, None] - f[None], axis=-1)
    rr = np.sort(drr, 1)[:, k]
    rf = np.sort(dff, 1)[:, k]
    expect = {
        "precision": (drf < rr[:, None]).any(0).mean(),
        "recall": (drf < rf[None, :]).any(1).mean(),
        "density": (drf < rr[:, None]).sum(0).mean() / k,
        "coverage": (drf.min(1) < rr).mean(),
    }
    got = im.prdc(r, f, k=k)
    for key, val in expect.items():
        assert got[key] == pytest.approx(val, abs=1e-12), key


@pytest.mark.parametrize("size", [64, 128, 256, 512])
def test_ms_ssim_params_fit_size(size):
    p = im.ms_ssim_params(size)
    assert p["kernel_size"] % 2 == 1 and p["kernel_size"] >= 5
    assert size // 2 ** (p["levels"] - 1) >= p["kernel_size"]
    if size >= 176:
        assert p["kernel_size"] == 11 and p["levels"] == 5


@pytest.mark.parametrize("size", [64, 128])
def test_ms_ssim_diversity_orders_identical_similar_random(size):
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, size, size, generator=g)
    base = torch.nn.functional.avg_pool2d(base, 5, 1, 2)
    identical = base.repeat(4, 1, 1, 1)
    similar = (base + 0.02 * torch.randn(4, 1, size, size, generator=g)).clamp(0, 1)
    random = torch.rand(4, 1, size, size, generator=g)
    d_id = im.ms_ssim_diversity(identical)["ms_ssim"]
    d_sim = im.ms_ssim_diversity(similar)["ms_ssim"]
    d_rand = im.ms_ssim_diversity(random)
    assert d_id == pytest.approx(1.0, abs=1e-5)
    assert d_rand["ms_ssim"] < d_sim < d_id
    assert d_rand["n_pairs"] == 6


def test_bootstrap_fd_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(200, 6)) + 0.4
    r1 = im.bootstrap_fd(a, b, n_boot=50, seed=3)
    r2 = im.bootstrap_fd(a, b, n_boot=50, seed=3)
    assert r1 == r2
    assert r1["ci_low"] <= r1["value"] <= r1["ci_high"]
    assert r1["bootstrap_bias"] > 0  # resampling adds FD's small-sample bias once more


def test_conditional_fd_and_compute_feature_metrics():
    rng = np.random.default_rng(10)
    n = 240
    labels = (rng.random((n, 14)) < 0.3).astype(np.float64)
    labels[:, 5] = 0  # a finding with no positives -> skipped
    feats = rng.normal(size=(n, 6)) + 2.0 * labels[:, :6]
    fake_labels = labels.copy()
    fake_good = rng.normal(size=(n, 6)) + 2.0 * labels[:, :6]
    fake_bad = rng.normal(size=(n, 6))  # ignores the prompt
    good = im.conditional_fd(feats, labels, fake_good, fake_labels, min_count=20)
    bad = im.conditional_fd(feats, labels, fake_bad, fake_labels, min_count=20)
    assert "skipped" in good["Edema"]
    assert bad["Cardiomegaly"]["fd"] > 2 * good["Cardiomegaly"]["fd"]
    out = im.compute_feature_metrics(feats, fake_good, real_labels=labels, fake_labels=fake_labels, n_boot=10)
    assert set(out) >= {"fd", "kid", "mmd", "prdc", "per_finding_fd", "warnings", "n_real", "n_fake", "dim"}
    assert (
        out["prdc"]["precision"]["ci_low"]
        <= out["prdc"]["precision"]["value"]
        <= out["prdc"]["precision"]["ci_high"]
    )
    assert out["per_finding_fd"]["Cardiomegaly"]["ci_low"] <= out["per_finding_fd"]["Cardiomegaly"]["ci_high"]


def test_bootstrap_reports_dropped_replicates():
    lo, hi, dropped = im.finite_percentile_ci([1.0, np.nan, 2.0, np.inf, 3.0])
    assert dropped == 2 and 1.0 <= lo <= hi <= 3.0
    # two samples per set: a replicate drawing one sample twice has no pair of distinct originals -> NaN
    rng = np.random.default_rng(0)
    res = im.bootstrap_mmd2(rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), n_boot=40, seed=0)
    assert 0 < res["n_boot_dropped"] < 40
    notes = im.fd_result_notes("MMD", res)
    assert len(notes) == 1 and f"{res['n_boot_dropped']} of 40 bootstrap replicates" in notes[0]
    fd = im.bootstrap_fd(rng.normal(size=(30, 3)), rng.normal(size=(30, 3)), n_boot=20)
    assert fd["n_boot_dropped"] == 0 and im.fd_result_notes("FD", fd) == []


def test_fd_clamped_at_zero_is_shown(monkeypatch):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    honest = im.bootstrap_fd(a, b, n_boot=5)
    assert honest["clamped_at_0"] is False and honest["raw_value"] == honest["value"]
    monkeypatch.setattr(im, "_fd_raw", lambda x, y: -1e-9)
    res = im.bootstrap_fd(a, b, n_boot=5)
    assert res["value"] == 0.0 and res["raw_value"] == -1e-9 and res["clamped_at_0"] is True
    assert res["ci_low_clamped_at_0"] is False  # replicates (also clamped) are 0: interval [0, 0], no shift
    labels = np.zeros((40, 14), dtype=np.float32)
    labels[:25, 2] = 1
    m = im.compute_feature_metrics(a, b, real_labels=labels, fake_labels=labels, n_boot=5, min_per_finding=20)
    assert any(w.startswith("FD: the estimate was negative") and "clamped" in w for w in m["warnings"])
    assert m["per_finding_fd"]["Cardiomegaly"]["clamped_at_0"] is True
    assert any(w.startswith("per-finding FD Cardiomegaly") for w in m["warnings"])
