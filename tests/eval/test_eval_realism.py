"""``unicxr eval realism``: statistics behave as described and the CLI writes its report (tiny, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import run_cli
from unicxr.eval.realism import STAT_KEYS, compare, image_statistics

REFERENCE = Path("/work/shared/reference")


def _write(folder: Path, imgs: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for i, im in enumerate(imgs):
        Image.fromarray(np.round(np.clip(im, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _smooth(seed: int, n: int = 64) -> np.ndarray:
    from scipy import ndimage

    z = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((n, n)), 4)
    return 0.5 + 0.4 * z / np.abs(z).max()


def test_statistics_measure_what_they_say() -> None:
    n = 64
    img = _smooth(0, n)
    s = image_statistics(img)
    assert set(s) == set(STAT_KEYS)
    assert s["q01"] <= s["q50"] <= s["q99"]
    sym = image_statistics(0.5 * (img + img[:, ::-1]))
    assert sym["symmetry"] > 0.999 > s["symmetry"]
    noisy = image_statistics(np.clip(img + 0.05 * np.random.default_rng(1).standard_normal((n, n)), 0, 1))
    # noise flattens the high-frequency spectrum and raises Laplacian energy
    assert noisy["psd_slope_high"] > s["psd_slope_high"] and noisy["lap_energy"] > s["lap_energy"]
    ramp = np.tile(np.linspace(0.0, 1.0, n)[:, None], (1, n))  # dark top, bright bottom
    assert image_statistics(ramp)["top_bottom"] > 0.6


def test_compare_fraction_inside_and_tolerance() -> None:
    real = {k: np.array([0.0, 1.0]) for k in STAT_KEYS}
    fake = {k: np.array([-0.4, 0.5, 1.2, 3.0]) for k in STAT_KEYS}
    c = compare(real, fake, tolerance=0.5)  # range widened to -0.5 .. 1.5
    assert c["mean"]["inside"] == 0.75 and c["mean"]["lo"] == -0.5
    assert compare(real, fake, tolerance=0.0)["mean"]["inside"] == 0.25


def test_cli_writes_report(tmp_path: Path) -> None:
    real = _write(tmp_path / "real", [_smooth(s, 96) for s in range(3)])
    fake = _write(tmp_path / "fake", [_smooth(s, 64) for s in range(10, 14)])
    out = tmp_path / "out"
    proc = run_cli("eval", "realism", "--real", real, "--fake", fake, "--out", out, "--size", "64",
                   "--no-progress", check=True)  # fmt: skip
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["n_real"] == 3 and summary["n_fake"] == 4
    res = json.loads((out / "realism.json").read_text())
    assert set(res["comparison"]) >= set(STAT_KEYS)
    md = (out / "report.md").read_text()
    assert "psd_slope" in md and "accepted range" in md
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    assert (out / "statistics_hist.png").is_file()
    bad = run_cli("eval", "realism", "--real", tmp_path / "nope", "--fake", fake, "--out", out)
    assert bad.returncode != 0 and "not found" in bad.stderr
