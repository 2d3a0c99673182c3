"""Classifier task: masked BCE, augmentation determinism, AUROC metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unicxr.labels import FINDINGS
from unicxr.models.classifier import classifier_metrics, finding_key
from unicxr.train.tasks import get_task
from unicxr.train.tasks.classifier import ClassifierDataConfig, masked_bce


def test_masked_bce_ignores_nan_targets():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    target = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), 1.0, float("nan")]])
    mask = ~torch.isnan(target)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], target[mask])
    assert masked_bce(logits, target) == pytest.approx(float(ref))
    all_nan = torch.full((2, 3), float("nan"))
    loss = masked_bce(logits.requires_grad_(), all_nan)
    assert float(loss.detach()) == 0.0
    loss.backward()  # still differentiable


def _task(**data):
    from unicxr.models.classifier import CXRClassifierConfig

    cls = get_task("classifier")
    return cls(
        CXRClassifierConfig(image_size=32, init_features=8, growth_rate=4, block_config=(2,)),
        ClassifierDataConfig(cache="unused", **data),
    )


def test_augment_is_seeded_light_and_in_range():
    task = _task()
    x = torch.rand(4, 1, 32, 32)
    batch = {"image": x, "target": torch.zeros(4, 14)}
    a = task.augment(batch, torch.Generator().manual_seed(1))["image"]
    b = task.augment(batch, torch.Generator().manual_seed(1))["image"]
    c = task.augment(batch, torch.Generator().manual_seed(2))["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert (a - x).abs().mean() < 0.3  # light
    off = _task(augment=False)
    assert off.augment(batch, torch.Generator().manual_seed(1))["image"] is x


def test_classifier_metrics_macro_over_frequent_findings():
    rng = np.random.default_rng(0)
    n = 400
    targets = (rng.random((n, 14)) < 0.3).astype(np.float32)
    targets[:, 3] = 0
    targets[:5, 3] = 1  # only 5 positives: excluded from the macro
    targets[:50, 4] = np.nan  # masked entries ignored
    probs = np.clip(targets * 0.6 + rng.random((n, 14)) * 0.5, 0, 1)
    probs[:, 3] = rng.random(n)
    m = classifier_metrics(np.nan_to_num(probs), targets, min_count=20)
    assert m["n_macro_findings"] == 13
    assert m["macro_auroc"] > 0.9
    assert 0.0 <= m[f"auroc_{finding_key(FINDINGS[3])}"] <= 1.0
    assert finding_key("Pleural Effusion") == "pleural_effusion"
    single = classifier_metrics(probs, np.zeros((n, 14), np.float32))
    assert math.isnan(single["macro_auroc"]) and single["n_macro_findings"] == 0


def test_train_classifier_recipe_on_tiny_phantom_cache(tmp_path):
    """The shipped recipe runs end to end (tiny overrides): CXRCache data, masked BCE, AUROC evaluation,
    and the saved model loads as an `own:` feature extractor."""
    import json

    from tests.conftest import run_cli
    from unicxr.cli import main
    from unicxr.eval.features import parse_features_spec

    run_cli("phantom", "--n", "120", "--size", "32", "--seed", "5", "--out", tmp_path / "ph", "--workers", "1",
            check=True)  # fmt: skip
    run_cli("prepare", "--format", "phantom", "--root", tmp_path / "ph", "--out", tmp_path / "cache", "--size", "32",
            check=True)  # fmt: skip
    overrides = [f"data.cache={tmp_path / 'cache'}", "model.image_size=null", "model.resnet_widths=[4,8,8,16]",
                 "train.max_steps=6", "train.batch_size=8", "train.warmup_steps=2", "train.eval_every=0",
                 "train.ckpt_every=6", "data.eval_min_count=2", "train.tensorboard=false"]  # fmt: skip
    args = ["train", "eval_encoder_phantom", "--out", str(tmp_path / "run"), "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    evals = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert evals and "macro_auroc" in evals[-1] and "auroc_cardiomegaly" in evals[-1]
    cfg = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert cfg["config"]["image_size"] == 32  # taken from the cache
    # media hook: a grid of validation images (not synthetic) and the predictions as text
    from PIL import Image

    media = tmp_path / "run" / "media" / "step_000006"
    grid = Image.open(media / "validation.png")
    assert grid.size[0] > 32 * 2 and "synthetic" not in grid.text
    assert len((media / "predictions.txt").read_text().splitlines()) == 8
    ext = parse_features_spec(f"own:{tmp_path / 'run'}")
    assert ext.dim == 16 and ext.model_dir.name == "model_ema"
    assert main(["eval", "classifier", "--model", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"),
                 "--split", "all", "--min-count", "2", "--no-progress"]) == 0  # fmt: skip
