"""`unicxr eval sanity`: only a feature space that measures images passes (issue #16, acceptance 1).

Fast tests: the check rules on synthetic features (a useful space passes; noise, a constant and
batch-position noise fail), and the CLI failing with one line for TorchScript feature networks that
ignore their input. That the trained evaluation encoder passes on the quickstart cache is asserted by
the slow quickstart test (tests/test_quickstart.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from unicxr.eval.sanity import (
    CHECK_RULES,
    check_blur_chain,
    check_deterministic,
    check_features_vary,
    check_finding_separation,
    gaussian_blur,
    sanity_checks,
    sanity_from_features,
)
from unicxr.labels import FINDINGS, NUM_FINDINGS
from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig


class ConstantFeatures(torch.nn.Module):
    """A feature network that ignores its input: the same vector for every image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 16) + 0.5


class NoiseFeatures(torch.nn.Module):
    """A feature network that ignores its input: fresh Gaussian noise on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape[0], 16)


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    run_cli("phantom", "--n", "240", "--size", "64", "--seed", "3", "--out", root / "ph", "--workers", "1",
            check=True)  # fmt: skip
    run_cli("prepare", "--format", "phantom", "--root", root / "ph", "--out", root / "cache", "--size", "64",
            check=True)  # fmt: skip
    return root / "cache"


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("enc") / "model"
    CXRClassifier(
        CXRClassifierConfig(arch="resnet", image_size=64, resnet_widths=(8, 16, 16, 16))
    ).save_pretrained(d)
    return d


def test_gaussian_blur_properties():
    x = torch.rand(2, 1, 32, 32)
    y = gaussian_blur(x, 1.0)
    assert y.shape == x.shape
    assert torch.allclose(y.mean(), x.mean(), atol=1e-2)  # mass preserved (reflect padding)
    assert y.std() < x.std()
    assert torch.equal(gaussian_blur(x, 0.0), x)
    const = torch.full((1, 1, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(const, 2.0), const, atol=1e-6)


# ------------------------------------------------------------------------------- rules on features
def _useful_features(n: int = 400, d: int = 8, seed: int = 0):
    """Features that move with blur (a shift growing with σ) and with two findings; labels (n, 14)."""
    rng = np.random.default_rng(seed)
    labels = np.full((n, NUM_FINDINGS), np.nan, dtype=np.float32)
    feats = rng.normal(size=(n, d))
    for col, dim in ((FINDINGS.index("Cardiomegaly"), 0), (FINDINGS.index("Edema"), 1)):
        pos = rng.random(n) < 0.3
        labels[:, col] = pos
        feats[pos, dim] += 1.5
    a, b = feats[: n // 2], feats[n // 2 :]
    direction = np.ones(d) / np.sqrt(d)
    blurred = {1.0: b + 1.0 * direction, 2.0: b + 2.0 * direction}
    return a, b, blurred, labels


def test_useful_features_pass_every_check():
    a, b, blurred, labels = _useful_features()
    checks = sanity_from_features(a, b, blurred, labels=labels, repeat=(b[:8], b[:8].copy()), n_boot=50)
    assert set(checks) == set(CHECK_RULES)
    assert all(c["passed"] for c in checks.values()), {k: c["detail"] for k, c in checks.items()}
    chain = checks["blur_chain"]
    fd = chain["fd"]
    assert fd["0"]["ci_high"] < fd["1.0"]["ci_low"] and fd["1.0"]["ci_high"] < fd["2.0"]["ci_low"]
    sep = checks["finding_separation"]
    assert sep["n_tested"] == 2 and sep["n_separated"] == 2
    assert sep["findings"]["Cardiomegaly"]["ratio"] > 1.5
    assert "skipped" in sep["findings"]["Fracture"]  # no labels for it
    assert all(c["rule"] == CHECK_RULES[k] for k, c in checks.items())


def test_noise_features_fail_blur_chain_and_finding_separation():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    blurred = {1.0: rng.normal(size=(200, 8)), 2.0: rng.normal(size=(200, 8))}
    labels = (rng.random((400, NUM_FINDINGS)) < 0.3).astype(np.float32)
    checks = sanity_from_features(a, b, blurred, labels=labels, n_boot=50)
    assert checks["blur_chain"]["passed"] is False
    assert "do not see blur" in checks["blur_chain"]["detail"]
    assert checks["finding_separation"]["passed"] is False
    assert checks["finding_separation"]["n_separated"] < checks["finding_separation"]["n_tested"] / 2
    # the two necessary-only checks hold for noise: they cannot tell a useful space from noise
    assert checks["kid_halves_ci_contains_0"]["passed"] and checks["prdc_self_is_1"]["passed"]


def test_constant_features_fail():
    a, b = np.ones((50, 4)), np.ones((50, 4))
    checks = sanity_from_features(a, b, {1.0: b.copy(), 2.0: b.copy()}, labels=None, n_boot=20)
    assert checks["features_vary"]["passed"] is False and "ignores its input" in checks["features_vary"]["detail"]
    assert checks["blur_chain"]["passed"] is False
    assert checks["prdc_self_is_1"]["passed"] is False
    assert checks["finding_separation"]["passed"] is None  # skipped without labels, reported
    assert checks["finding_separation"]["skipped"] == "no labels"


def test_single_checks():
    assert check_features_vary(np.random.default_rng(0).normal(size=(10, 3)))["passed"]
    x = np.random.default_rng(0).normal(size=(8, 3))
    assert check_deterministic(x, x + 1e-9)["passed"]
    bad = check_deterministic(x, x + 0.1)
    assert not bad["passed"] and "not a function of the image" in bad["detail"]
    with pytest.raises(ValueError, match="n_boot"):
        check_blur_chain(x, x, {1.0: x}, n_boot=0)
    # too few positives: skipped, not failed
    lab = np.zeros((40, NUM_FINDINGS), dtype=np.float32)
    lab[:3, 2] = 1
    res = check_finding_separation(np.random.default_rng(0).normal(size=(40, 3)), lab, min_count=10)
    assert res["passed"] is None and res["n_tested"] == 0


# ------------------------------------------------------------------ CLI: input-ignoring networks fail
@pytest.mark.parametrize(
    "module, expected",
    [(ConstantFeatures, ("features_vary", "blur_chain")), (NoiseFeatures, ("deterministic", "blur_chain"))],
)
def test_eval_sanity_fails_for_network_that_ignores_its_input(small_cache, tmp_path, capsys, module, expected):
    from unicxr.cli import main

    net = tmp_path / "net.pt"
    torch.jit.script(module()).save(str(net))
    out = tmp_path / "sanity.json"
    code = main(["eval", "sanity", "--data", str(small_cache), "--features", f"inception:{net}?size=32",
                 "--n-boot", "20", "--n-perm", "10", "--out", str(out), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("sanity check failed:")]
    assert len(lines) == 1, err
    for name in expected:
        assert f"{name}:" in lines[0]
    res = json.loads(out.read_text())
    assert res["all_passed"] is False and res["failure"] in lines[0]
    for name in expected:
        assert res["passed"][name] is False
    assert res["checks"]["finding_separation"]["passed"] is False  # the cache has labels: tested, not skipped
    assert res["rules"] == CHECK_RULES


def test_sanity_json_on_images_and_eval_images_cli(small_cache, tiny_encoder, tmp_path):
    from unicxr.cli import main

    res = sanity_checks(small_cache, f"own:{tiny_encoder}", n_boot=20, n_perm=10, progress=False)
    assert res["n_half_a"] + res["n_half_b"] == res["n_train"] + res["n_test"]
    assert set(res["passed"]) == set(CHECK_RULES)
    assert res["all_passed"] == (res["failure"] is None)
    # an untrained network still depends on its input
    assert res["passed"]["features_vary"] and res["passed"]["deterministic"]
    assert res["checks"]["finding_separation"]["n_tested"] >= 3
    # cache vs cache: train split as "fake" against the test split
    assert main(["eval", "images", "--real", str(small_cache), "--fake", str(small_cache), "--fake-split", "train",
                 "--features", f"own:{tiny_encoder}", "--out", str(tmp_path / "img"), "--n-boot", "10",
                 "--min-per-finding", "5", "--no-diversity", "--no-progress"]) == 0  # fmt: skip
    res = json.loads((tmp_path / "img" / "metrics.json").read_text())
    assert res["real"]["type"] == "cache" and res["real"]["split"] == "test"
    assert res["metrics"]["n_fake"] > res["metrics"]["n_real"]
    assert "alignment" in res  # cache labels act as "prompted" labels of the train split
