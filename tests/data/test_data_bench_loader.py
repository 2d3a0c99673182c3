from __future__ import annotations

import json

from data_test_trees import gradient, write_png

from unicxr.bench.loader import main


def test_loader_benchmark_runs_and_reports_figures(tmp_path, capsys):
    root = tmp_path / "imgs"
    for k in range(6):
        write_png(root / f"{k}.png", gradient(128, 128, seed=k))
    out = tmp_path / "fig.json"
    assert main(["--root", str(root), "--size", "32", "--batches", "3", "--batch-size", "4", "--workers", "0",
                 "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["images"] == 6 and fig["speedup"] > 0 and fig["prepare_images_per_s"] > 0
    assert fig["cache_items_per_s"] > 0 and fig["pil_items_per_s"] > 0
    assert "faster than PIL" in capsys.readouterr().out


def test_loader_benchmark_missing_root(tmp_path):
    assert main(["--root", str(tmp_path / "nope")]) == 2
