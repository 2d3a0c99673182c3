"""End-to-end tests of every reader on trees built at test time (real file names and CSV columns)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from data_test_trees import (
    build_chexpert,
    build_iu_csv,
    build_iu_xml,
    build_mimic,
    build_nih,
    build_padchest,
    gradient,
    write_csv,
    write_png,
)

from unicxr.cli import main
from unicxr.data import CXRCache
from unicxr.data.sources import ReadStats, SourceOptions, iter_records
from unicxr.data.sources.padchest import padchest_labels, parse_label_list
from unicxr.labels import FINDINGS, finding_index
from unicxr.utils import UnicxrError

I = finding_index  # noqa: E741


def _prepare(fmt, root, out, *extra):
    code = main(["prepare", "--format", fmt, "--root", str(root), "--out", str(out), "--size", "32",
                 "--workers", "0", "--no-progress", *extra])
    assert code == 0
    return CXRCache(out)


def _by_name(cache):
    return {cache[i]["path"].rsplit("/", 1)[-1]: cache[i] for i in range(len(cache))}


def _lab(item, name):
    return float(item["labels"][I(name)])


# ----------------------------------------------------------------------------------------- MIMIC
@pytest.mark.parametrize("reports_beside,gz", [(False, True), (True, False)])
def test_mimic_cxr_jpg_end_to_end(tmp_path, reports_beside, gz):
    build_mimic(tmp_path / "mimic", reports_beside=reports_beside, gz=gz)
    cache = _prepare("mimic-cxr-jpg", tmp_path / "mimic", tmp_path / "c")
    assert len(cache) == 3  # 4 on disk, the LATERAL one dropped; the 5th listed image has no file
    assert cache.manifest["counts"]["missing_files"] == 1
    items = _by_name(cache)
    first = items["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"]
    assert first["report"].startswith("FINDINGS: Heart size is mildly enlarged.")
    assert first["report"].endswith("IMPRESSION: Cardiomegaly and small left effusion.")
    assert "___" not in first["report"] and "cough" not in first["report"]
    assert _lab(first, "Cardiomegaly") == 1.0 and _lab(first, "Pneumothorax") == 0.0
    assert math.isnan(_lab(first, "Edema"))
    assert first["split"] == "train" and first["view"] == "PA"
    assert first["image"].shape == (1, 32, 32)
    other = items["ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c.jpg"]
    assert other["split"] == "test" and _lab(other, "Edema") == -1.0
    assert other["report"] == "IMPRESSION: No acute process."


def test_mimic_negbio_labels_and_all_views(tmp_path):
    build_mimic(tmp_path / "m")
    cache = _prepare("mimic-cxr-jpg", tmp_path / "m", tmp_path / "c", "--labels", "negbio", "--views", "all")
    assert len(cache) == 4
    assert all(_lab(cache[i], "Atelectasis") == 1.0 for i in range(len(cache)))
    assert "LATERAL" in set(cache.index["view"])


def test_mimic_without_csvs_walks_files(tmp_path):
    build_mimic(tmp_path / "m")
    for p in (tmp_path / "m").glob("*.csv.gz"):
        p.unlink()
    recs = list(iter_records("mimic-cxr-jpg", tmp_path / "m"))
    assert len(recs) == 4
    assert {r.patient_id for r in recs} == {"10000032", "11000011"}
    assert all(r.split is None and r.view == "" and np.isnan(r.labels).all() for r in recs)


# -------------------------------------------------------------------------------------- CheXpert
@pytest.mark.parametrize("root_is_parent_rel", [True, False])
def test_chexpert_end_to_end(tmp_path, root_is_parent_rel):
    root = build_chexpert(tmp_path)
    if not root_is_parent_rel:
        # CSV paths written relative to ROOT itself ("train/patient.../view1_frontal.jpg")
        for name in ("train.csv", "valid.csv"):
            text = (root / name).read_text().replace("CheXpert-v1.0-small/", "")
            (root / name).write_text(text)
    cache = _prepare("chexpert", root, tmp_path / "c")
    assert len(cache) == 3  # the lateral is dropped
    assert sorted(set(cache.index["split"])) == ["train", "validate"]
    rows = {cache[i]["path"].split("CheXpert-v1.0-small/")[1]: cache[i] for i in range(len(cache))}
    p2 = rows["train/patient00002/study2/view1_frontal.jpg"]
    assert _lab(p2, "Cardiomegaly") == -1.0 and _lab(p2, "Lung Opacity") == 1.0
    assert _lab(p2, "Pleural Effusion") == 0.0 and math.isnan(_lab(p2, "Edema"))
    assert p2["report"] == "FINDINGS: Opacity at the right base. IMPRESSION: Right basilar opacity."
    p1 = rows["train/patient00001/study1/view1_frontal.jpg"]
    # no section columns: taken from the full report, the unknown NARRATIVE header standing in for findings
    assert p1["report"] == "FINDINGS: Lines and tubes in place. IMPRESSION: No acute process."
    assert p1["view"] == "AP" and p1["patient_id"] == "patient00001"
    val = rows["valid/patient64541/study1/view1_frontal.jpg"]
    assert val["split"] == "validate" and not np.isnan(val["labels"].numpy()).any()


def test_chexpert_lateral_view_and_missing(tmp_path):
    root = build_chexpert(tmp_path, plus=False)
    (tmp_path / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg").unlink()
    stats = ReadStats()
    recs = list(iter_records("chexpert", root, SourceOptions(), stats))
    assert stats.missing_files == 1 and len(recs) == 3
    assert sorted(r.view for r in recs) == ["AP", "LATERAL", "PA"]
    assert all(r.report == "" for r in recs)


# --------------------------------------------------------------------------------------- IU-Xray
def test_iu_xray_xml_end_to_end(tmp_path):
    build_iu_xml(tmp_path / "iu")
    cache = _prepare("iu-xray", tmp_path / "iu", tmp_path / "c")
    # 4 images referenced, 3 on disk; the XML form has no view information, so all are kept
    assert len(cache) == 3 and cache.manifest["counts"]["missing_files"] == 1
    items = _by_name(cache)
    normal = items["CXR1_1_IM-0001-3001.png"]
    assert normal["report"] == "FINDINGS: The heart is normal in size. are intact. IMPRESSION: Normal chest x-."
    assert _lab(normal, "No Finding") == 1.0 and _lab(normal, "Cardiomegaly") == 0.0
    sick = items["CXR2_1_IM-0652-1001.png"]
    assert _lab(sick, "Cardiomegaly") == 1.0 and _lab(sick, "Pleural Effusion") == 1.0
    assert _lab(sick, "No Finding") == 0.0
    assert sick["report"].startswith("FINDINGS: Heart is enlarged.")
    # patient = report uid; split is deterministic and per patient
    assert set(cache.index["patient_id"]) == {"CXR1", "CXR2"}


def test_iu_xray_csv_form(tmp_path):
    build_iu_csv(tmp_path / "iu")
    cache = _prepare("iu-xray", tmp_path / "iu", tmp_path / "c", "--views", "all")
    items = _by_name(cache)
    assert len(items) == 3
    assert items["1_IM-0001-3001.dcm.png"]["view"] == "LATERAL"
    assert items["1_IM-0001-4001.dcm.png"]["view"] == "FRONTAL"
    two = items["2_IM-0652-1001.dcm.png"]
    assert _lab(two, "Cardiomegaly") == 1.0 and _lab(two, "Atelectasis") == 1.0
    assert two["report"] == "FINDINGS: Borderline cardiomegaly. Left basilar atelectasis. IMPRESSION: No acute disease."
    frontal_only = _prepare("iu-xray", tmp_path / "iu", tmp_path / "c2")
    assert len(frontal_only) == 2


# -------------------------------------------------------------------------------------- PadChest
def test_padchest_label_parsing():
    assert parse_label_list("['cardiomegaly', ' pleural effusion']") == ["cardiomegaly", "pleural effusion"]
    assert parse_label_list("['normal']") == ["normal"]
    assert parse_label_list("") is None and parse_label_list("[]") is None and parse_label_list("nan") is None
    assert parse_label_list("['unterminated', 'list'") == ["unterminated", "list"]
    lab = padchest_labels("['cardiomegaly', 'pleural effusion', 'scoliosis']")
    assert lab[I("Cardiomegaly")] == 1 and lab[I("Pleural Effusion")] == 1 and lab[I("No Finding")] == 0
    assert lab[I("Edema")] == 0 and not np.isnan(lab).any()
    normal = padchest_labels("['normal']")
    assert normal[I("No Finding")] == 1 and normal[1:].sum() == 0
    assert np.isnan(padchest_labels("['exclude']")).all()
    assert padchest_labels("['hydropneumothorax']")[[I("Pleural Effusion"), I("Pneumothorax")]].tolist() == [1, 1]


def test_padchest_end_to_end(tmp_path):
    build_padchest(tmp_path / "pc")
    cache = _prepare("padchest", tmp_path / "pc", tmp_path / "c")
    assert len(cache) == 3  # the L (lateral) projection is dropped
    items = {it["path"].rsplit("_", 1)[-1]: it for it in (cache[i] for i in range(len(cache)))}
    a = items["00-043-192.png"]
    assert a["report"] == "cardiomegalia. derrame pleural izquierdo."
    assert _lab(a, "Cardiomegaly") == 1 and _lab(a, "Pleural Effusion") == 1
    b = items["00-196-188.png"]
    assert b["view"] == "AP" and _lab(b, "Support Devices") == 1 and _lab(b, "Pneumonia") == 1
    # 12-bit data in 16-bit PNGs is scaled to the full range, not left nearly black
    assert float(a["image"].max()) > 0.9
    # patient-level split: both images of a patient share a split
    per_patient = cache.index.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()


def test_padchest_flat_image_folder(tmp_path):
    build_padchest(tmp_path / "pc")
    flat = tmp_path / "pc" / "all_images"
    flat.mkdir()
    for p in list((tmp_path / "pc").glob("[01]/*.png")):
        shutil.move(str(p), flat / p.name)
    recs = list(iter_records("padchest", tmp_path / "pc"))
    assert len(recs) == 4 and all("all_images" in r.path for r in recs)


# ------------------------------------------------------------------------------------------- NIH
def test_nih_end_to_end(tmp_path):
    build_nih(tmp_path / "nih")
    cache = _prepare("nih", tmp_path / "nih", tmp_path / "c")
    assert len(cache) == 4
    items = _by_name(cache)
    eff = items["00000003_000.png"]
    assert eff["split"] == "test"
    for name in ("Pleural Effusion", "Lung Opacity", "Lung Lesion", "Pleural Other"):
        assert _lab(eff, name) == 1.0
    assert _lab(eff, "Cardiomegaly") == 0.0 and _lab(eff, "No Finding") == 0.0
    assert math.isnan(_lab(eff, "Support Devices")) and math.isnan(_lab(eff, "Fracture"))
    nf = items["00000002_000.png"]
    assert _lab(nf, "No Finding") == 1.0 and nf["view"] == "AP"
    assert nf["split"] in ("train", "validate")
    # the two images of patient 1 share a split
    assert items["00000001_000.png"]["split"] == items["00000001_001.png"]["split"]


def test_nih_without_lists_uses_hash_split(tmp_path):
    build_nih(tmp_path / "nih", with_lists=False)
    recs = list(iter_records("nih", tmp_path / "nih"))
    assert all(r.split is None for r in recs)


# ---------------------------------------------------------------------------------------- folder
def test_folder_with_csv(tmp_path):
    root = tmp_path / "imgs"
    write_png(root / "a" / "one.png", gradient(seed=1))
    write_png(root / "b" / "two.png", gradient(seed=2))
    write_png(root / "three.png", gradient(seed=3))
    (root / "notes.txt").write_text("not an image")
    write_csv(tmp_path / "meta.csv", ["path", "report", "Cardiomegaly", "patient_id", "split"],
              [["a/one.png", "FINDINGS: Big heart. IMPRESSION: Cardiomegaly.", "1", "p1", "test"],
               ["b/two.png", "Lungs are clear.", "0", "p2", ""]])
    cache = _prepare("folder", root, tmp_path / "c", "--csv", str(tmp_path / "meta.csv"))
    items = _by_name(cache)
    assert set(items) == {"one.png", "two.png", "three.png"}
    assert items["one.png"]["report"] == "FINDINGS: Big heart. IMPRESSION: Cardiomegaly."
    assert _lab(items["one.png"], "Cardiomegaly") == 1.0 and items["one.png"]["split"] == "test"
    assert items["two.png"]["report"] == "Lungs are clear."
    assert items["three.png"]["report"] == "" and np.isnan(items["three.png"]["labels"].numpy()).all()


def test_folder_csv_without_path_column(tmp_path):
    write_png(tmp_path / "imgs" / "one.png", gradient())
    write_csv(tmp_path / "bad.csv", ["report"], [["x"]])
    with pytest.raises(UnicxrError, match="no path column"):
        list(iter_records("folder", tmp_path / "imgs", SourceOptions(csv=tmp_path / "bad.csv")))


def test_unknown_format_and_missing_root(tmp_path):
    with pytest.raises(UnicxrError, match="unknown format"):
        list(iter_records("dicomdir", tmp_path))
    with pytest.raises(UnicxrError, match="not a folder"):
        list(iter_records("nih", tmp_path / "nope"))
    with pytest.raises(UnicxrError, match="Data_Entry"):
        list(iter_records("nih", tmp_path))
    assert main(["prepare", "--format", "nih", "--root", str(tmp_path), "--out", str(tmp_path / "c")]) == 2


# ------------------------------------------------------------------------------ phantom layouts
def _phantom(out, layout, n=12):
    code = main(["phantom", "--n", str(n), "--size", "64", "--seed", "3", "--out", str(out), "--layout", layout,
                 "--workers", "1"])
    assert code == 0


def test_phantom_unicxr_layout_end_to_end(tmp_path):
    _phantom(tmp_path / "ph", "unicxr")
    cache = _prepare("phantom", tmp_path / "ph", tmp_path / "c")
    assert len(cache) == 12
    import pandas as pd

    meta = pd.read_csv(tmp_path / "ph" / "metadata.csv", dtype=str, keep_default_na=False)
    for i in range(len(cache)):
        it = cache[i]
        path = it["path"]
        row = meta[meta["image_path"].map(path.endswith)].iloc[0]
        expected = np.array([float(row[f]) if row[f] != "" else np.nan for f in FINDINGS], np.float32)
        np.testing.assert_array_equal(it["labels"].numpy(), expected)
        assert it["split"] == row["split"]
        assert it["report"].startswith(("FINDINGS:", "IMPRESSION:"))


@pytest.mark.parametrize("layout,fmt", [("mimic-cxr-jpg", "mimic-cxr-jpg"), ("chexpert", "chexpert")])
def test_phantom_real_layouts_end_to_end(tmp_path, layout, fmt):
    _phantom(tmp_path / "ph", layout)
    root = tmp_path / "ph"
    if fmt == "chexpert":
        root = next(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("chexpert"))
    cache = _prepare(fmt, root, tmp_path / "c", "--views", "all")
    assert len(cache) == 12 and cache.manifest["counts"]["rejected"] == 0
    labelled = np.isfinite(cache.labels).any(axis=1)
    assert labelled.all()
    reports = [cache.report(i) for i in range(len(cache))]
    assert sum(r.startswith(("FINDINGS:", "IMPRESSION:")) for r in reports) >= 10
    assert set(cache.index["split"]) <= {"train", "validate", "test"}
    item = cache[0]
    assert item["image"].shape == (1, 32, 32) and 0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1
