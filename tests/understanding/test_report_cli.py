"""End to end: tiny report-generator and classifier runs, `unicxr report` on PNG/JPEG/DICOM (and a real
radiograph when present), `--cache --split --out` scored by `unicxr eval reports`, `unicxr eval findings`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli
from tests.data.data_test_trees import write_dicom, write_jpeg
from unicxr.cli import main
from unicxr.labels import FINDINGS

REFERENCE = Path("/work/shared/reference/00000001_000.png")
TINY_ENCODER = ["model.encoder.init_features=8", "model.encoder.growth_rate=4", "model.encoder.block_config=[1,1]",
                "model.encoder.bn_size=2"]  # fmt: skip
TINY_TRAIN = ["train.max_steps=4", "train.batch_size=8", "train.warmup_steps=1", "train.eval_every=0",
              "train.ckpt_every=4", "train.tensorboard=false", "data.eval_min_count=2"]  # fmt: skip


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("und")
    run_cli("phantom", "--n", "60", "--size", "32", "--seed", "4", "--out", root / "ph", "--workers", "1",
            check=True)  # fmt: skip
    run_cli("prepare", "--format", "phantom", "--root", root / "ph", "--out", root / "cache", "--size", "32",
            check=True)  # fmt: skip
    return root


def _train(recipe: str, out: Path, cache: Path, extra: list[str]) -> None:
    args = ["train", recipe, "--out", str(out), "--no-progress", "--set", f"data.cache={cache}"]
    for o in [*TINY_ENCODER, *TINY_TRAIN, *extra]:
        args += ["--set", o]
    assert main(args) == 0


@pytest.fixture(scope="module")
def report_run(phantom):
    run = phantom / "rep"
    _train("report_phantom", run, phantom / "cache",
           ["model.dim=32", "model.depth=1", "model.num_heads=2", "data.vocab_size=300", "data.eval_reports=4",
            "data.media_n=2", "data.max_tokens=48", "model.max_len=64", "model.label_input=hard",
            "data.label_teacher_forcing=0.5"])  # fmt: skip
    return run


@pytest.fixture(scope="module")
def clf_run(phantom):
    run = phantom / "clf"
    _train("classifier_phantom", run, phantom / "cache", ["data.pos_weight=balanced"])
    return run


def _image_files(phantom: Path, tmp: Path) -> list[Path]:
    from unicxr.data.io import decode_image

    src = sorted((phantom / "ph" / "images").glob("*.png"))[0]
    arr = decode_image(src)
    jpg = write_jpeg(tmp / "x.jpg", (arr * 255).astype(np.uint8))
    dcm = write_dicom(tmp / "x.dcm", (arr * 4095).astype(np.uint16), bits_stored=12)
    files = [src, jpg, dcm]
    if REFERENCE.is_file():
        files.append(REFERENCE)
    return files


def test_report_on_png_jpeg_dicom_and_bad_file(report_run, phantom, tmp_path, capsys):
    files = _image_files(phantom, tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "o.csv"
    rc = main(["report", "--model", str(report_run), *map(str, files), str(bad), "--json", "--out", str(out),
               "--max-tokens", "24"])  # fmt: skip
    assert rc == 0
    cap = capsys.readouterr()
    recs = json.loads(cap.out)
    assert len(recs) == len(files)
    assert "bad.png: skipped" in cap.err and cap.err.count("skipped:") == 1
    for r in recs:
        assert isinstance(r["report"], str) and set(r["labels"]) == set(FINDINGS)
        assert all(v in (None, 1, 0, -1) for v in r["labels"].values())
        assert len(r["probabilities"]) == 14 and all(0 <= p <= 1 for p in r["probabilities"].values())
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns[:17]) == ["path", "study_id", "report", *FINDINGS] and len(df) == len(files)
    # beam / nucleus options and plain text output
    assert main(["report", "--model", str(report_run), str(files[0]), "--method", "beam", "--beams", "2",
                 "--max-tokens", "16", "--no-repeat-ngram", "3", "--repetition-penalty", "1.2"]) == 0  # fmt: skip
    assert "labels: positive" in capsys.readouterr().out
    # every file bad: exit 1
    assert main(["report", "--model", str(report_run), str(bad)]) == 1


def test_report_cache_split_scored_by_eval_reports(report_run, phantom, tmp_path):
    out = tmp_path / "pred.csv"
    assert main(["report", "--model", str(report_run), "--cache", str(phantom / "cache"), "--split", "train",
                 "--max-items", "6", "--out", str(out), "--max-tokens", "24"]) == 0  # fmt: skip
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(df) == 6 and df["study_id"].str.len().min() > 0
    ref = pd.read_csv(phantom / "ph" / "metadata.csv", dtype=str, keep_default_na=False)
    assert set(df["study_id"]) <= set(ref["study_id"])
    assert main(["eval", "reports", "--pred", str(out), "--ref", str(phantom / "ph" / "metadata.csv"),
                 "--out", str(tmp_path / "m"), "--bootstrap", "10"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["n"] == 6
    # the final validation chose the aux head's thresholds, saved with the model for hard label tokens
    cfg = json.loads((report_run / "model" / "config.json").read_text())["config"]
    assert len(cfg["thresholds"]) == 14 and all(0 <= t <= 1 for t in cfg["thresholds"])


def test_classifier_template_report_and_eval_findings(clf_run, phantom, tmp_path, capsys):
    cfg = json.loads((clf_run / "model" / "config.json").read_text())["config"]
    assert len(cfg["thresholds"]) == 14 and cfg["image_size"] == 32
    files = _image_files(phantom, tmp_path)
    assert main(["report", "--model", str(clf_run), *map(str, files), "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert all(r["report"].startswith("FINDINGS:") and "IMPRESSION:" in r["report"] for r in recs)
    assert main(["eval", "findings", "--model", str(clf_run), "--cache", str(phantom / "cache"), "--split", "all",
                 "--min-count", "2", "--out", str(tmp_path / "f.json")]) == 0  # fmt: skip
    assert "| Cardiomegaly |" in capsys.readouterr().out
    res = json.loads((tmp_path / "f.json").read_text())
    assert len(res["per_finding"]) == 14 and "ece" in res
    # the report generator's auxiliary head is evaluated the same way
    assert main(["eval", "findings", "--model", str(clf_run), "--cache", str(phantom / "cache"), "--split", "all",
                 "--policy", "uncertain_as_positive"]) == 0  # fmt: skip
