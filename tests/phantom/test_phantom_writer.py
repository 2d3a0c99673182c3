"""Data-set writer: determinism (byte-identical files), the three layouts, masks, 16-bit, CLI errors."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unicxr.labels import FINDINGS
from unicxr.phantom.simulate import MASK_NAMES
from unicxr.phantom.writer import write_dataset


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_same_seed_gives_byte_identical_output_regardless_of_workers(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_dataset(a, 10, 64, seed=4, workers=1, progress=False, masks=True)
    write_dataset(b, 10, 64, seed=4, workers=2, progress=False, masks=True)
    write_dataset(c, 10, 64, seed=5, workers=1, progress=False, masks=True)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db
    assert len(da) == 1 + 10 + 10 * len(MASK_NAMES)
    assert da["metadata.csv"] != dc["metadata.csv"]
    assert da["images/000000.png"] != dc["images/000000.png"]


def test_unicxr_layout_columns_and_files(tmp_path: Path) -> None:
    rows = write_dataset(tmp_path, 24, 64, seed=1, workers=1, progress=False, masks=True)
    meta = _read_csv((tmp_path / "metadata.csv").read_bytes())
    assert len(meta) == len(rows) == 24
    cols = list(meta[0])
    assert cols[:6] == ["image_path", "patient_id", "study_id", "view_position", "split", "report"]
    assert cols[6 : 6 + len(FINDINGS)] == list(FINDINGS)
    assert "severity_pleural_effusion" in cols and "laterality_pneumothorax" in cols
    assert [f"mask_{m}" for m in MASK_NAMES] == [c for c in cols if c.startswith("mask_")]
    assert not any(c.startswith("_") for c in cols)
    for r in meta:
        assert re.fullmatch(r"images/\d{6}\.png", r["image_path"])
        img = Image.open(tmp_path / r["image_path"])
        assert img.size == (64, 64) and img.mode == "L"
        assert r["view_position"] in ("PA", "AP")
        assert r["split"] in ("train", "validate", "test")
        assert "FINDINGS:" in r["report"] and "IMPRESSION:" in r["report"]
        for name in FINDINGS:
            assert r[name] in ("1", "0", "-1", "")
        m = np.asarray(Image.open(tmp_path / r["mask_lungs"]))
        assert set(np.unique(m)) <= {0, 255} and (m == 255).mean() > 0.1
    # patient-level split and some patients with several studies
    by_patient: dict[str, set[str]] = {}
    for r in meta:
        by_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values())
    assert len(by_patient) < len(meta)


def test_sixteen_bit_png(tmp_path: Path) -> None:
    write_dataset(tmp_path, 2, 48, seed=0, workers=1, progress=False, bit_depth=16)
    arr = np.asarray(Image.open(tmp_path / "images" / "000000.png"))
    assert arr.dtype == np.uint16 and arr.max() > 255


def test_mimic_cxr_jpg_layout(tmp_path: Path) -> None:
    write_dataset(tmp_path, 14, 64, seed=2, layout="mimic-cxr-jpg", workers=1, progress=False)
    names = {p.name for p in tmp_path.iterdir()}
    for f in ("chexpert", "negbio", "split", "metadata"):
        assert f"mimic-cxr-2.0.0-{f}.csv.gz" in names
    lab = _read_csv(gzip.decompress((tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz").read_bytes()))
    assert list(lab[0]) == ["subject_id", "study_id", *FINDINGS]
    for r in lab:
        for name in FINDINGS:
            assert r[name] in ("1.0", "0.0", "-1.0", "")
        assert r["No Finding"] in ("1.0", "")
    split = _read_csv(gzip.decompress((tmp_path / "mimic-cxr-2.0.0-split.csv.gz").read_bytes()))
    assert list(split[0]) == ["dicom_id", "study_id", "subject_id", "split"]
    meta = _read_csv(gzip.decompress((tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz").read_bytes()))
    assert list(meta[0]) == ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                             "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                             "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
    assert len(meta) == 14 and len({r["dicom_id"] for r in meta}) == 14
    for r in meta:
        subj, study, dicom = r["subject_id"], r["study_id"], r["dicom_id"]
        assert re.fullmatch(r"1\d{7}", subj) and re.fullmatch(r"5\d{7}", study)
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", dicom)
        assert r["ViewPosition"] in ("PA", "AP") and r["Rows"] == "64"
        assert re.fullmatch(r"\d{8}", r["StudyDate"])
        img = tmp_path / "files" / f"p{subj[:2]}" / f"p{subj}" / f"s{study}" / f"{dicom}.jpg"
        assert img.is_file() and Image.open(img).format == "JPEG"
        rep = (tmp_path / "mimic-cxr-reports" / "files" / f"p{subj[:2]}" / f"p{subj}" / f"s{study}.txt").read_text()
        assert "FINAL REPORT" in rep and "\n FINDINGS:" in rep and "\n IMPRESSION:" in rep
        assert max(len(line) for line in rep.splitlines()) <= 80
    assert {r["split"] for r in split} <= {"train", "validate", "test"}
    # follow-up studies of a subject come later in time; a subject stays in one split
    dates: dict[str, list[str]] = {}
    for r in meta:
        dates.setdefault(r["subject_id"], []).append(r["StudyDate"])
    assert all(d == sorted(d) for d in dates.values())
    assert any(len(d) > 1 for d in dates.values())
    subj_split: dict[str, set[str]] = {}
    for r in split:
        subj_split.setdefault(r["subject_id"], set()).add(r["split"])
    assert all(len(v) == 1 for v in subj_split.values())


def test_chexpert_layout(tmp_path: Path) -> None:
    write_dataset(tmp_path, 30, 64, seed=3, layout="chexpert", workers=1, progress=False)
    root = tmp_path / "CheXpert-v1.0-small"
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS]
    total = 0
    for fname, part in (("train.csv", "train"), ("valid.csv", "valid")):
        rows = _read_csv((root / fname).read_bytes())
        if not rows:
            continue
        assert list(rows[0]) == header
        for r in rows:
            assert re.fullmatch(rf"CheXpert-v1\.0-small/{part}/patient\d{{5}}/study\d+/view1_frontal\.jpg", r["Path"])
            assert (tmp_path / r["Path"]).is_file()
            assert r["Sex"] in ("Male", "Female") and r["Frontal/Lateral"] == "Frontal" and r["AP/PA"] in ("AP", "PA")
            for name in FINDINGS:
                allowed = ("1.0", "0.0", "-1.0") if part == "valid" else ("1.0", "0.0", "-1.0", "")
                assert r[name] in allowed
        total += len(rows)
    assert total == 30
    plus = _read_csv((root / "df_chexpert_plus_240401.csv").read_bytes())
    assert len(plus) == 30
    for col in ("path_to_image", "section_findings", "section_impression", "report"):
        assert col in plus[0]
    assert all((root / r["path_to_image"]).is_file() for r in plus)


def test_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    from unicxr.cli import main

    assert main(["phantom", "--n", "0", "--out", str(tmp_path / "x")]) == 2
    assert main(["phantom", "--n", "2", "--out", str(tmp_path / "x"), "--prevalence", "Bogus=0.2"]) == 2
    assert main(["phantom", "--n", "2", "--out", str(tmp_path / "x"), "--layout", "chexpert", "--bit-depth", "16"]) == 2


def test_cli_writes_dataset_and_preview(tmp_path: Path) -> None:
    from unicxr.cli import main

    out = tmp_path / "ds"
    prev = tmp_path / "sheet.png"
    code = main(["phantom", "--n", "6", "--size", "48", "--seed", "1", "--out", str(out), "--workers", "1",
                 "--preview", str(prev), "--prevalence", "Cardiomegaly=1.0"])
    assert code == 0
    meta = _read_csv((out / "metadata.csv").read_bytes())
    assert len(meta) == 6
    assert sum(r["Cardiomegaly"] in ("1", "-1") for r in meta) >= 4
    assert Image.open(prev).size[0] >= 48 * 4


@pytest.mark.slow
def test_thousand_images_stream(tmp_path: Path) -> None:
    rows = write_dataset(tmp_path, 1000, 256, seed=0, workers=2, progress=False)
    assert len(rows) == 1000


def test_images_marked_synthetic(tmp_path):
    """Simulated images carry synthetic=true (PNG tEXt chunk; JPEG comment in the MIMIC layout)."""
    from PIL import Image

    from unicxr.cli import main

    assert main(["phantom", "--n", "2", "--size", "48", "--out", str(tmp_path / "a")]) == 0
    assert main(["phantom", "--n", "2", "--size", "48", "--out", str(tmp_path / "b"), "--layout", "mimic-cxr-jpg"]) == 0
    png = next((tmp_path / "a" / "images").glob("*.png"))
    with Image.open(png) as im:
        assert im.text["synthetic"] == "true" and "unicxr" in im.text["Software"]
    jpg = next((tmp_path / "b" / "files").rglob("*.jpg"))
    with Image.open(jpg) as im:
        assert b"synthetic=true" in im.info["comment"]
