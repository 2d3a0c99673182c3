"""`unicxr eval images` end to end on image folders with a tiny untrained encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from unicxr.labels import FINDINGS
from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig


def _write_folder(root, n, *, seed, bright, labels=True, split=True, prompt=True):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        lab = (rng.random(14) < 0.4).astype(int)
        img = rng.random((48, 48)) * 0.3 + bright + 0.2 * lab[2]
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"{i:04d}.png")
        row = {"image_path": f"images/{i:04d}.png"}
        if split:
            row["split"] = "test" if i % 2 else "train"
        if prompt:
            row["prompt"] = f"p{i % 4}"
        if labels:
            row.update({f: str(v) for f, v in zip(FINDINGS, lab, strict=True)})
        rows.append(row)
    import pandas as pd

    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)


@pytest.fixture
def encoder_dir(tmp_path):
    torch.manual_seed(0)
    cfg = CXRClassifierConfig(image_size=32, init_features=8, growth_rate=4, block_config=(2, 2), bn_size=2)
    d = tmp_path / "run" / "model"
    CXRClassifier(cfg).save_pretrained(d)
    return d.parent


def test_eval_images_folder_end_to_end(tmp_path, encoder_dir, cli):
    _write_folder(tmp_path / "real", 120, seed=0, bright=0.3)
    _write_folder(tmp_path / "fake", 60, seed=1, bright=0.3, split=False)
    out = tmp_path / "out"
    proc = cli(
        "eval",
        "images",
        "--real",
        tmp_path / "real",
        "--fake",
        tmp_path / "fake",
        "--features",
        f"own:{encoder_dir}",
        "--out",
        out,
        "--n-boot",
        "20",
        "--seed",
        "3",
        "--min-per-finding",
        "10",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    res = json.loads((out / "metrics.json").read_text())
    assert res["metrics"]["n_real"] == 60 and res["metrics"]["n_fake"] == 60
    assert summary["fd"] == pytest.approx(res["metrics"]["fd"]["value"], rel=1e-5)
    assert res["features"]["kind"] == "own" and res["features"]["dim"] > 0
    assert res["features"]["preprocessing"]["resize"] == [32, 32]
    assert "alignment" in res and res["alignment"]["encoder"].startswith("own:")
    assert res["diversity"]["n_groups"] == 4
    assert any("fd" in v for v in res["metrics"]["per_finding_fd"].values())
    md = (out / "report.md").read_text()
    assert "| FD |" in md and "pca.png" in md and "own:" in md
    co = res["alignment"]["cooccurrence"]
    assert co and all(r["n_with"] >= 5 and r["n_without"] >= 5 and r["finding"] != r["with"] for r in co)
    assert all(r["drop_fake_ci"][0] <= r["drop_fake"] <= r["drop_fake_ci"][1] for r in co)
    assert "Prompt alignment per finding" in md and "Largest alignment drops" in md
    assert f"| {co[0]['finding']} | {co[0]['with']} | {co[0]['n_with']} / {co[0]['n_without']} |" in md
    assert (out / "pca.png").stat().st_size > 1000
    assert "data:image/png;base64" in (out / "report.html").read_text()
    # same seed -> same numbers
    out2 = tmp_path / "out2"
    from unicxr.cli import main

    args = ["eval", "images", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--features",
            f"own:{encoder_dir}", "--out", str(out2), "--n-boot", "20", "--seed", "3", "--min-per-finding", "10",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    res2 = json.loads((out2 / "metrics.json").read_text())
    assert res2["metrics"] == res["metrics"] and res2["alignment"] == res["alignment"]


def test_eval_images_shifted_fakes_score_worse(tmp_path, encoder_dir):
    from unicxr.eval.image_eval import evaluate_images

    _write_folder(tmp_path / "real", 160, seed=0, bright=0.3)
    _write_folder(tmp_path / "same", 80, seed=1, bright=0.3, split=False, labels=False, prompt=False)
    _write_folder(tmp_path / "dark", 80, seed=2, bright=0.0, split=False, labels=False, prompt=False)
    kw = dict(real_split="test", n_boot=0, progress=False, diversity=False)
    same = evaluate_images(tmp_path / "real", tmp_path / "same", f"own:{encoder_dir}", **kw)
    dark = evaluate_images(tmp_path / "real", tmp_path / "dark", f"own:{encoder_dir}", **kw)
    assert dark["metrics"]["fd"]["value"] > 5 * same["metrics"]["fd"]["value"]
    assert dark["metrics"]["prdc"]["precision"]["value"] < same["metrics"]["prdc"]["precision"]["value"]
    assert "alignment" not in same  # fakes without labels
    # folder without metadata.csv: every image file, no labels
    res = evaluate_images(tmp_path / "real", tmp_path / "same" / "images", f"own:{encoder_dir}", **kw)
    assert res["metrics"]["n_fake"] == 80


def test_eval_images_errors(tmp_path, encoder_dir, capsys):
    from unicxr.cli import main

    _write_folder(tmp_path / "real", 10, seed=0, bright=0.3)
    common = ["--features", f"own:{encoder_dir}", "--out", str(tmp_path / "o"), "--no-progress"]
    cases = [
        (["--real", str(tmp_path / "real"), "--fake", str(tmp_path / "nope"), *common], "nope"),
        (
            [
                "--real",
                str(tmp_path / "real"),
                "--fake",
                str(tmp_path / "real"),
                *common[2:],
                "--features",
                "bogus:x",
            ],
            "unknown kind",
        ),
        (
            [
                "--real",
                str(tmp_path / "real"),
                "--real-split",
                "validate",
                "--fake",
                str(tmp_path / "real"),
                *common,
            ],
            "split == 'validate'",
        ),
    ]
    for args, msg in cases:
        assert main(["eval", "images", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and msg in err, err


def test_image_folder_set_findings_column_sizes_and_subset(tmp_path):
    import pandas as pd

    from unicxr.data.image_sets import open_image_set
    from unicxr.utils import UnicxrError

    (tmp_path / "f").mkdir()
    sizes = [(40, 40), (64, 48), (40, 40)]
    for i, (h, w) in enumerate(sizes):
        arr = (np.arange(h * w).reshape(h, w) % 256).astype(np.uint16) * 200  # 16-bit PNG
        Image.fromarray(arr).save(tmp_path / "f" / f"{i}.png")
    pd.DataFrame(
        {
            "file": ["0.png", "1.png", "2.png"],
            "findings": ["Cardiomegaly", "", "Edema, Pleural Effusion"],
            "prompt": ["a", "b", "a"],
        }  # fmt: skip
    ).to_csv(tmp_path / "f" / "metadata.csv", index=False)
    ds = open_image_set(tmp_path / "f")
    assert len(ds) == 3 and ds.prompts == ["a", "b", "a"]
    assert ds.labels[0, FINDINGS.index("Cardiomegaly")] == 1 and ds.labels[1, 0] == 1  # empty -> No Finding
    assert (
        ds.labels[2, FINDINGS.index("Edema")] == 1 and ds.labels[2, FINDINGS.index("Pleural Effusion")] == 1
    )
    item = ds[1]
    assert (
        item["image"].shape == (1, 40, 40)
        and 0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1
    )
    sub = open_image_set(tmp_path / "f", max_images=2, seed=0)
    assert len(sub) == 2 and sub.labels.shape == (2, 14) and len(sub.prompts) == 2
    with pytest.raises(UnicxrError, match="use split 'all'"):
        open_image_set(tmp_path / "f", split="test")
    pd.DataFrame({"file": ["0.png"], "findings": ["Unicorn"]}).to_csv(
        tmp_path / "f" / "metadata.csv", index=False
    )
    with pytest.raises(UnicxrError, match="Unicorn"):
        open_image_set(tmp_path / "f")


class _Set:
    """In-memory image set: images (N, 1, H, W), labels (N, 14), optional prompts."""

    def __init__(self, images, labels, prompts=None):
        self.images, self.labels, self.prompts = images, labels, prompts

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "labels": torch.from_numpy(self.labels[i])}


def test_diversity_has_a_real_baseline_with_the_same_positive_findings():
    from unicxr.eval.image_eval import diversity_by_prompt

    g = torch.Generator().manual_seed(0)
    lab = np.full((8, 14), np.nan, np.float32)
    lab[:4, FINDINGS.index("Cardiomegaly")] = 1
    lab[4:, FINDINGS.index("Pneumothorax")] = 1
    fake = _Set(torch.rand(8, 1, 48, 48, generator=g), lab, ["cardio"] * 4 + ["ptx"] * 4)
    # real: 5 identical images with Cardiomegaly (and a negative, which does not change the positive set),
    # 3 random ones with Pneumothorax, 2 normals at another size (resized to the fakes')
    rl = np.zeros((10, 14), np.float32)
    rl[:5, FINDINGS.index("Cardiomegaly")] = 1
    rl[5:8, FINDINGS.index("Pneumothorax")] = 1
    one = torch.rand(1, 1, 64, 64, generator=g)
    rimg = torch.cat([one.expand(5, -1, -1, -1), torch.rand(5, 1, 64, 64, generator=g)])
    res = diversity_by_prompt(fake, real=_Set(rimg, rl), progress=False)
    per = {p["group"]: p for p in res["groups"]}
    assert per["cardio"]["n_real_same_labels"] == 5 and per["cardio"]["real_ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert per["ptx"]["n_real_same_labels"] == 3 and per["ptx"]["real_ms_ssim"] < 0.5
    assert res["n_groups_real"] == 2
    assert res["real_ms_ssim"] == pytest.approx((per["cardio"]["real_ms_ssim"] + per["ptx"]["real_ms_ssim"]) / 2)
    assert res["fake_ms_ssim_same_groups"] == pytest.approx(res["ms_ssim"])
    # no real set: the fake-only figures are unchanged
    alone = diversity_by_prompt(fake, progress=False)
    assert alone["ms_ssim"] == res["ms_ssim"] and "real_ms_ssim" not in alone
