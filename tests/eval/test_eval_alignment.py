"""Alignment: AUROC against torchmetrics, per-finding fake/real ratio, encoder path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unicxr.eval.alignment import alignment, alignment_from_probabilities, auroc
from unicxr.labels import FINDINGS


def test_auroc_matches_torchmetrics_with_ties_and_nans():
    from torchmetrics.functional.classification import binary_auroc

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    s = np.round(rng.random(300) + 0.5 * y, 1)  # rounding creates ties
    ref = float(binary_auroc(torch.from_numpy(s), torch.from_numpy(y).long()))
    assert auroc(y, s) == pytest.approx(ref, abs=1e-6)  # torchmetrics returns float32
    y2 = y.copy()
    y2[:10] = np.nan
    assert auroc(y2, s) == pytest.approx(auroc(y[10:], s[10:]))
    assert np.isnan(auroc(np.zeros(5), np.arange(5)))
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0


def _probs(labels: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    return 1 / (1 + np.exp(-(strength * (labels - 0.5) * 4 + rng.normal(size=labels.shape))))


def test_alignment_ratio_reflects_prompt_following():
    rng = np.random.default_rng(1)
    real_y = (rng.random((400, 14)) < 0.3).astype(np.float32)
    real_y[:, 11] = np.nan  # never mentioned -> all negative -> skipped
    real_y[:50, 2] = -1  # uncertain ignored
    fake_y = (rng.random((300, 14)) < 0.3).astype(np.float32)
    real_p = _probs(np.nan_to_num(real_y, nan=0.0), 1.0, rng)
    good = alignment_from_probabilities(_probs(fake_y, 1.0, rng), fake_y, real_p, real_y, n_boot=30)
    bad = alignment_from_probabilities(rng.random((300, 14)), fake_y, real_p, real_y, n_boot=30)
    assert "skipped" in good["per_finding"][FINDINGS[11]]
    assert good["per_finding"]["Cardiomegaly"]["n_pos_real"] < int((real_y[:, 2] == 1).sum()) + 1
    assert 0.85 < good["macro"]["ratio"] < 1.15
    assert bad["macro"]["ratio"] < 0.7
    lo, hi = good["macro"]["ratio_ci"]
    assert lo <= good["macro"]["ratio"] <= hi
    assert set(good["findings_scored"]) == set(FINDINGS) - {FINDINGS[11]}


def test_alignment_with_encoder(tmp_path):
    from unicxr.eval.features import parse_features_spec
    from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig

    torch.manual_seed(0)
    CXRClassifier(
        CXRClassifierConfig(image_size=32, init_features=8, growth_rate=4, block_config=(2,))
    ).save_pretrained(tmp_path / "enc")
    ext = parse_features_spec(f"own:{tmp_path / 'enc'}")
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(24, 1, 32, 32, generator=g)
    labels = (torch.rand(24, 14, generator=g) < 0.5).float().numpy()
    out = alignment(
        ext, imgs[:12], labels[:12], imgs[12:], labels[12:], min_positives=2, n_boot=5, progress=False
    )
    assert out["encoder"].startswith("own:")
    some = [v for v in out["per_finding"].values() if "skipped" not in v]
    assert some and all(0.0 <= v["auroc_fake"] <= 1.0 for v in some)


def test_cooccurrence_alignment_finds_the_drop_the_real_images_do_not_share():
    from unicxr.eval.alignment import cooccurrence_alignment

    rng = np.random.default_rng(2)
    ptx, cons = FINDINGS.index("Pneumothorax"), FINDINGS.index("Consolidation")
    fake_y = (rng.random((600, 14)) < 0.25).astype(np.float32)
    real_y = (rng.random((600, 14)) < 0.25).astype(np.float32)
    fake_p = _probs(fake_y, 1.5, rng)
    real_p = _probs(real_y, 1.5, rng)
    hidden = (fake_y[:, ptx] == 1) & (fake_y[:, cons] == 1)
    fake_p[hidden, ptx] = rng.choice(fake_p[fake_y[:, ptx] == 0, ptx], int(hidden.sum()))  # not drawn: scored as negatives
    rows = cooccurrence_alignment(fake_p, fake_y, real_p, real_y, n_boot=50)
    top = rows[0]
    assert (top["finding"], top["with"]) == ("Pneumothorax", "Consolidation")
    assert top["n_with"] == int(hidden.sum()) and top["n_with"] + top["n_without"] == int((fake_y[:, ptx] == 1).sum())
    assert top["auroc_fake_with"] < 0.65 < 0.9 < top["auroc_fake_without"]
    assert top["drop_fake_ci"][0] > 0.2
    assert abs(top["auroc_real_with"] - top["auroc_real_without"]) < 0.1  # the encoder sees it on real images
    assert top["auroc_fake_without"] == pytest.approx(
        auroc(np.r_[np.ones(top["n_without"]), np.zeros(top["n_neg"])],
              np.r_[fake_p[(fake_y[:, ptx] == 1) & ~hidden, ptx], fake_p[fake_y[:, ptx] == 0, ptx]]))
    others = [r for r in rows[1:] if r["finding"] != "Pneumothorax"]
    assert others and max(abs(r["drop_fake"]) for r in others) < 0.2
    assert [r["drop_fake"] for r in rows] == sorted((r["drop_fake"] for r in rows), reverse=True)
    assert cooccurrence_alignment(fake_p, fake_y, real_p, real_y, min_group=10_000) == []


def test_bootstrap_group_aurocs_match_the_plain_auroc_on_resampled_rows():
    from unicxr.eval.alignment import _bootstrap_group_aurocs

    rng = np.random.default_rng(3)
    neg, pos = np.round(rng.random(40), 1), np.round(rng.random(15) + 0.3, 1)  # ties on purpose
    reps = _bootstrap_group_aurocs(neg, [pos], 20, np.random.default_rng(7))
    replay = np.random.default_rng(7)  # same draws, as rows: counts of each negative and each positive
    c_neg = replay.multinomial(neg.size, np.full(neg.size, 1 / neg.size), size=20)
    c_pos = replay.multinomial(pos.size, np.full(pos.size, 1 / pos.size), size=20)
    for b in range(20):
        n_b, p_b = np.repeat(np.sort(neg), c_neg[b]), np.repeat(pos, c_pos[b])
        assert reps[b, 0] == pytest.approx(auroc(np.r_[np.ones(p_b.size), np.zeros(n_b.size)], np.r_[p_b, n_b]))
