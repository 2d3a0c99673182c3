"""``unicxr eval recon`` end to end on a tiny cache with a tiny random evaluation encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unicxr.eval.recon import bicubic_baseline, image_scores
from unicxr.models.autoencoder import build_autoencoder
from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig


def test_image_scores_and_baseline():
    x = torch.rand(3, 1, 32, 32)
    s = image_scores(x, x)
    assert (s["psnr"] > 90).all() and abs(float(s["ssim"].mean()) - 1) < 1e-4 and abs(float(s["ms_ssim"].mean()) - 1) < 1e-4
    b = bicubic_baseline(x, 16)
    assert b.shape == x.shape and float(b.min()) >= 0 and float(b.max()) <= 1
    assert float(image_scores(b, x)["psnr"].mean()) < 90


def test_eval_recon_end_to_end(tiny_phantom_cache, tmp_path, capsys):
    from unicxr.cli import main

    torch.manual_seed(0)
    ae = build_autoencoder({"kind": "kl", "channels": [8, 16, 16], "norm_num_groups": 8, "latent_channels": 2})
    ae.set_scale_factor(1.2)
    ae.save_pretrained(tmp_path / "ae")
    CXRClassifier(CXRClassifierConfig(image_size=32, resnet_widths=[4, 8, 8, 16])).save_pretrained(tmp_path / "enc")
    out = tmp_path / "recon"
    assert main(["eval", "recon", "--model", str(tmp_path / "ae"), "--cache", str(tiny_phantom_cache), "--split", "all",
                 "--features", f"own:{tmp_path / 'enc'}", "--out", str(out), "--min-count", "2", "--n-grid", "4",
                 "--n-boot", "40", "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"psnr", "ssim", "ms_ssim", "fd", "max_abs_delta_auroc"} <= set(line)
    res = json.loads((out / "metrics.json").read_text())
    assert res["n"] == 60 and res["latent_shape"] == [2, 8, 8]
    assert res["bicubic"]["side"] == 11  # round(sqrt(2*8*8)) keeps as many values as the latent
    assert "bicubic_bits" not in res  # a KL latent is floats: no code bits to match
    for key in ("recon", "bicubic"):
        assert {"psnr", "ssim", "ms_ssim", "fd"} <= set(res[key])
    assert res["throughput"]["encode_img_s"] > 0 and res["throughput"]["decode_img_s"] > 0
    per = res["auroc"]["per_finding"]
    assert per and all({"auroc_orig", "auroc_recon", "delta", "n_pos", "delta_ci"} <= set(v) for v in per.values())
    assert all(v["delta_ci"][0] <= v["delta_ci"][1] for v in per.values() if None not in v["delta_ci"])
    assert "ci_low" in res["recon"]["fd"]
    from PIL import Image

    grid = Image.open(out / "grid.png")
    assert grid.text.get("synthetic") == "true" and grid.size[0] > 3 * 32
    md = (out / "report.md").read_text()
    assert "Δ [95% CI]" in md and "| autoencoder (2, 8, 8) |" in md and "bicubic 11px" in md and "grid.png" in md
    assert "<table>" in (out / "report.html").read_text()


def test_eval_recon_findings_grid(tiny_phantom_cache, tmp_path):
    """--grid-findings: positives of each named finding, the largest probability drop first, as
    original | reconstruction | difference rows; an unknown finding is a one-line error naming the option."""
    import numpy as np
    from PIL import Image

    from unicxr.data import CXRCache
    from unicxr.eval.recon import evaluate_recon
    from unicxr.labels import FINDINGS
    from unicxr.utils import UnicxrError

    torch.manual_seed(0)
    ae = build_autoencoder({"kind": "kl", "channels": [8, 16, 16], "norm_num_groups": 8, "latent_channels": 2})
    ae.save_pretrained(tmp_path / "ae")
    enc = CXRClassifier(CXRClassifierConfig(image_size=32, resnet_widths=[4, 8, 8, 16])).eval()
    enc.save_pretrained(tmp_path / "enc")
    ae.eval()
    labels = CXRCache(tiny_phantom_cache).labels
    names = [n for n in FINDINGS[1:] if (labels[:, FINDINGS.index(n)] == 1).sum() >= 3][:2]
    res = evaluate_recon(tmp_path / "ae", tiny_phantom_cache, tmp_path / "r", split="all", features=f"own:{tmp_path / 'enc'}",
                         n_grid=0, baseline=False, grid_findings=",".join(n.lower() for n in names), grid_per_finding=3,
                         progress=False)
    rows = res["grid_findings"]["rows"]
    assert [r["finding"] for r in rows] == [names[0]] * 3 + [names[1]] * 3
    for name in names:
        mine = [r for r in rows if r["finding"] == name]
        assert all(labels[r["index"], FINDINGS.index(name)] == 1 for r in mine)
        drops = [r["p_orig"] - r["p_recon"] for r in mine]
        assert drops == sorted(drops, reverse=True)
        # the largest drop of all that finding's positives comes first (by hand, with the classifier itself)
        j = FINDINGS.index(name)
        pos = np.flatnonzero(labels[:, j] == 1)
        x = CXRCache(tiny_phantom_cache).batch(pos.tolist())["image"]
        with torch.no_grad():
            drop = enc.probabilities(x)[:, j] - enc.probabilities(ae.decode(ae.encode(x)).clamp(0, 1))[:, j]
        assert mine[0]["index"] == int(pos[int(drop.argmax())])
        assert mine[0]["p_orig"] - mine[0]["p_recon"] == pytest.approx(float(drop.max()), abs=1e-5)
    assert np.isfinite([r["p_orig"] for r in rows]).all()
    img = Image.open(tmp_path / "r" / "grid_findings.png")
    assert img.text.get("synthetic") == "true" and names[0] in img.text["rows"]
    assert img.size[1] > 6 * 32 and img.size[0] > 3 * 32  # six rows of three 32 px tiles
    assert "grid_findings.png" in (tmp_path / "r" / "report.md").read_text()
    assert names[0] in (tmp_path / "r" / "report.html").read_text()
    with pytest.raises(UnicxrError, match="--grid-findings: unknown finding 'Pleurl'"):
        evaluate_recon(tmp_path / "ae", tiny_phantom_cache, tmp_path / "r2", split="all", grid_findings="Pleurl",
                       progress=False)


@pytest.mark.parametrize("num_quantizers", [1, 2])
def test_eval_recon_vq_has_an_equal_bits_baseline(num_quantizers, tiny_phantom_cache, tmp_path):
    from unicxr.eval.recon import evaluate_recon

    torch.manual_seed(0)
    ae = build_autoencoder({"kind": "vq", "channels": [8, 16, 16], "norm_num_groups": 8, "latent_channels": 2,
                            "num_embeddings": 16, "num_quantizers": num_quantizers})
    ae.set_scale_factor(1.0)
    ae.save_pretrained(tmp_path / "vq")
    CXRClassifier(CXRClassifierConfig(image_size=32, resnet_widths=[4, 8, 8, 16])).save_pretrained(tmp_path / "enc")
    res = evaluate_recon(tmp_path / "vq", tiny_phantom_cache, tmp_path / "out", split="all", max_images=20,
                         features=f"own:{tmp_path / 'enc'}", progress=False)
    assert res["bicubic"]["side"] == 11  # 2 x 8 x 8 pre-quantisation values
    bits = res["bicubic_bits"]
    # 64 positions x log2(16) = 256 bits per codebook = 32 8-bit pixels -> a 6 px copy (two codebooks: 8 px)
    side = {1: 6, 2: 8}[num_quantizers]
    assert bits["code_bits"] == 256.0 * num_quantizers and bits["side"] == side
    assert {"psnr", "ssim", "ms_ssim", "fd"} <= set(bits)
    # fewer kept values -> a worse copy than the equal-values one
    assert bits["psnr"]["mean"] < res["bicubic"]["psnr"]["mean"]
    assert f"bicubic {side}px (as many bits" in (tmp_path / "out" / "report.md").read_text()


def test_paired_auroc_deltas_see_a_one_sided_change():
    """The bootstrap is paired: lowering the score of positives can only lower the AUROC on every
    resample, so the whole interval is at or below 0 (an unpaired interval would straddle 0), and an
    unchanged scorer gives exactly 0."""
    from unicxr.eval.image_metrics import percentile_ci
    from unicxr.utils.metrics import auroc, paired_auroc_deltas

    rng = np.random.default_rng(0)
    y = (rng.random((120, 2)) < 0.3).astype(float)
    before = y * 0.6 + rng.random((120, 2))
    after = before - 0.3 * y * (rng.random((120, 2)) < 0.5)  # half the positives drop
    reps = paired_auroc_deltas(y, before, after, n_boot=100, seed=1)
    assert reps.shape == (100, 2)
    for j in range(2):
        lo, hi = percentile_ci(reps[:, j])
        assert hi <= 0 and lo < 0
        assert lo <= auroc(y[:, j], after[:, j]) - auroc(y[:, j], before[:, j]) <= hi
    assert np.all(paired_auroc_deltas(y, before, before, n_boot=20) == 0)
