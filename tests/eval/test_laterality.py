"""Left/right checks: sides read from report text, and `unicxr eval laterality` end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig
from unicxr.text.laterality import mirror_sides, report_side, report_sides


@pytest.mark.parametrize(("text", "finding", "side"), [
    ("FINDINGS: Small right pleural effusion. No pneumothorax.", "Pleural Effusion", "right"),
    ("FINDINGS: Small right pleural effusion. No pneumothorax.", "Pneumothorax", ""),
    ("IMPRESSION: There is a moderate left-sided pneumothorax.", "Pneumothorax", "left"),
    ("Moderate bilateral pleural effusions.", "Pleural Effusion", "bilateral"),
    ("Pleural effusion on the left.", "Pleural Effusion", "left"),
    ("Right pleural effusion. Left pleural effusion is new.", "Pleural Effusion", "bilateral"),
    ("Small right pleural effusion and left pneumothorax.", "Pleural Effusion", "right"),
    ("Small right pleural effusion and left pneumothorax.", "Pneumothorax", "left"),
    ("No left pneumothorax. Heart size normal.", "Pneumothorax", ""),
    ("Possible small left apical pneumothorax.", "Pneumothorax", "left"),
    ("Blunting of the right costophrenic angle may reflect a small pleural effusion.", "Pleural Effusion", "right"),
    ("FINDINGS: Cardiomegaly. left pleural effusion.", "Pleural Effusion", "left"),  # a --findings prompt
    ("", "Pleural Effusion", ""),
])
def test_report_side(text, finding, side):
    assert report_side(text, finding) == side


def test_mirror_sides_swaps_whole_words_and_keeps_case():
    text = "FINDINGS: Left pleural effusion. RIGHT IJ catheter; no right pneumothorax. Bilateral leftover opacities."
    mirrored = mirror_sides(text)
    assert mirrored == ("FINDINGS: Right pleural effusion. LEFT IJ catheter; no left pneumothorax. "
                        "Bilateral leftover opacities.")
    assert mirror_sides(mirrored) == text
    assert report_side(mirrored, "Pleural Effusion") == "right"


def test_report_sides_rejects_unknown_finding():
    with pytest.raises(ValueError, match="unknown finding"):
        report_sides(["x"], "Effusion")


def _folder(root, n, *, seed, flip=False, split=True):
    """Images with a bright blob on the image's right for "left" reports (the patient's left) and on
    its left for "right" ones; ``flip`` mirrors the images but keeps the reports."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        side = ("left", "right", "bilateral", "")[i % 4]
        img = rng.random((48, 48)) * 0.3
        yy, xx = np.mgrid[:48, :48]
        for cx in {"left": [36], "right": [12], "bilateral": [12, 36], "": []}[side]:
            img += 0.6 * np.exp(-((yy - 34) ** 2 + (xx - cx) ** 2) / 40.0)
        if flip:
            img = img[:, ::-1]
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"{i:04d}.png")
        text = f"FINDINGS: Small {side} pleural effusion." if side else "FINDINGS: No pleural effusion."
        row = {"image_path": f"images/{i:04d}.png", "report": text, "prompt": text}
        if split:
            row["split"] = "train" if i < n * 3 // 4 else "test"
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)


@pytest.fixture
def encoder_run(tmp_path):
    torch.manual_seed(0)
    cfg = CXRClassifierConfig(arch="resnet", image_size=64, resnet_layers=(1, 1, 1, 1), resnet_widths=(4, 8, 8, 16))
    CXRClassifier(cfg).save_pretrained(tmp_path / "enc" / "model")
    return tmp_path / "enc"


def test_feature_map_pools_to_the_features(encoder_run):
    from unicxr.models import load_model

    model = load_model(encoder_run / "model").eval()
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        fm = model.feature_map(x)
        assert fm.shape == (2, 16, 2, 2)
        torch.testing.assert_close(fm.mean((2, 3)), model.features(x))


def test_eval_laterality_end_to_end(tmp_path, encoder_run, cli):
    _folder(tmp_path / "real", 160, seed=0)
    _folder(tmp_path / "same", 40, seed=1, split=False)
    _folder(tmp_path / "mirror", 40, seed=1, split=False, flip=True)
    res = {}
    for name in ("same", "mirror"):
        out = tmp_path / f"out_{name}"
        proc = cli("eval", "laterality", "--real", tmp_path / "real", "--fake", tmp_path / name, "--encoder",
                   f"own:{encoder_run}", "--findings", "Pleural Effusion", "--out", out, "--n-boot", "50",
                   "--no-progress")
        assert proc.returncode == 0, proc.stderr
        res[name] = json.loads((out / "laterality.json").read_text())["findings"]["Pleural Effusion"]
        assert "| Pleural Effusion |" in (out / "laterality.md").read_text()
    same, mirror = res["same"], res["mirror"]
    assert same["fit"] == {"n": 60, "left": 30}  # one-sided training reports only
    assert same["real"]["n"] == 20 and same["fake"]["n"] == 20 and same["fake"]["bilateral_or_unsided"] == 10
    # the blob side is easy: the probe is right on the real test images and on same-looking fakes,
    # and wrong on mirrored fakes whose prompts were kept
    assert same["real"]["agree"] >= 0.9 and same["fake"]["agree"] >= 0.9
    assert mirror["fake"]["agree"] <= 0.1
    lo, hi = same["fake"]["ci"]
    assert lo <= same["fake"]["agree"] <= hi
    for r in (same["fake"], mirror["fake"]):  # the per-side figures add up to the total
        by, n_left = r["agree_by_side"], r["left"]
        assert 0 < n_left < r["n"]
        assert by["left"] * n_left + by["right"] * (r["n"] - n_left) == pytest.approx(r["agree"] * r["n"])
    assert max(mirror["fake"]["agree_by_side"].values()) <= 0.2  # mirrored: wrong on both sides
    bad = cli("eval", "laterality", "--real", tmp_path / "real", "--encoder", f"own:{encoder_run}",
              "--findings", "Pneumothorax", "--out", tmp_path / "bad", "--no-progress")
    assert bad.returncode != 0 and "at least 5 of each" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
