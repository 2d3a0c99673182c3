"""Metric sanity on a small phantom cache with a tiny untrained encoder (acceptance 2).

FD(train, test) < FD(test, blurred σ=1) < FD(test, σ=2); KID of two halves of one set has a CI
containing 0; PRDC of a set with itself is 1.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_cli
from unicxr.eval.sanity import gaussian_blur, sanity_checks
from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig


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


def test_sanity_checks_pass_on_phantom_cache(small_cache, tiny_encoder):
    res = sanity_checks(small_cache, f"own:{tiny_encoder}", n_boot=50, progress=False)
    assert res["passed"] == {"fd_order": True, "kid_ci_contains_0": True, "prdc_identical_is_1": True}, res
    fd1, fd2 = res["fd_test_blur"]["1.0"]["value"], res["fd_test_blur"]["2.0"]["value"]
    assert res["fd_train_test"]["value"] < fd1 < fd2
    k = res["kid_split_halves"]
    assert k["ci_low"] <= 0.0 <= k["ci_high"]
    assert res["prdc_identical"]["precision"] == 1.0 and abs(res["prdc_identical"]["density"] - 1.0) < 0.05


def test_eval_sanity_and_images_cli_on_cache(small_cache, tiny_encoder, tmp_path):
    from unicxr.cli import main

    out = tmp_path / "sanity.json"
    assert main(["eval", "sanity", "--data", str(small_cache), "--features", f"own:{tiny_encoder}",
                 "--n-boot", "20", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert json.loads(out.read_text())["passed"]["fd_order"] is True
    # cache vs cache: train split as "fake" against the test split
    assert main(["eval", "images", "--real", str(small_cache), "--fake", str(small_cache), "--fake-split", "train",
                 "--features", f"own:{tiny_encoder}", "--out", str(tmp_path / "img"), "--n-boot", "10",
                 "--min-per-finding", "5", "--no-diversity", "--no-progress"]) == 0  # fmt: skip
    res = json.loads((tmp_path / "img" / "metrics.json").read_text())
    assert res["real"]["type"] == "cache" and res["real"]["split"] == "test"
    assert res["metrics"]["n_fake"] > res["metrics"]["n_real"]
    assert "alignment" in res  # cache labels act as "prompted" labels of the train split
