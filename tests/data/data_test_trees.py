"""Builders of small on-disk data-set trees and odd image files for the data-layer tests.

Everything is written at test time with PIL/pydicom/zlib; CSVs use the real column names.
"""

from __future__ import annotations

import csv
import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from unicxr.labels import FINDINGS

__all__ = [
    "gradient",
    "write_png",
    "write_jpeg",
    "write_dicom",
    "write_bomb_png",
    "write_csv",
    "MIMIC_REPORT",
    "build_mimic",
    "build_chexpert",
    "build_iu_xml",
    "build_iu_csv",
    "build_padchest",
    "build_nih",
]


def gradient(h: int = 48, w: int = 40, seed: int = 0) -> np.ndarray:
    """A float (h, w) test pattern in [0, 1]: horizontal ramp + a bright square + a little noise."""
    rng = np.random.default_rng(seed)
    img = np.tile(np.linspace(0.0, 1.0, w, dtype=np.float32), (h, 1))
    img[h // 4 : h // 2, w // 4 : w // 2] = 1.0
    img += rng.uniform(-0.02, 0.02, size=img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def write_png(path: Path, img: np.ndarray, bits: int = 8, mode: str | None = None) -> Path:
    """Save a [0, 1] float image as an 8-bit ('L' or a given mode) or 16-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(path)
    else:
        im = Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L")
        if mode is not None:
            im = im.convert(mode)
        im.save(path)
    return path


def write_jpeg(path: Path, img: np.ndarray, quality: int = 95, exif_orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L")
    if exif_orientation is None:
        im.save(path, quality=quality)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(path, quality=quality, exif=exif.tobytes())
    return path


def write_dicom(
    path: Path,
    arr: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    transfer_syntax: str | None = None,
    **elements,
) -> Path:
    """Write a DICOM file (explicit VR little endian unless told) with the given stored pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(arr.dtype, np.signedinteger) else 0
    for k, v in elements.items():
        setattr(ds, k, v)
    if "PixelData" not in ds:
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb_png(path: Path, side: int = 40_000) -> Path:
    """A valid 1-bit grayscale PNG of side×side zeros, ~200 KB on disk (decodes to side² pixels)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    co = zlib.compressobj(9)
    parts = []
    step = 1000
    for start in range(0, side, step):
        parts.append(co.compress(row * min(step, side - start)))
    parts.append(co.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    """Write a CSV (gzipped when the name ends with .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


MIMIC_REPORT = (
    '                                 FINAL REPORT\n'
    ' EXAMINATION:  CHEST (PA AND LAT)\n'
    ' \n'
    ' INDICATION:  ___F with cough  // eval for pneumonia\n'
    ' \n'
    ' COMPARISON:  ___\n'
    ' \n'
    ' FINDINGS: \n'
    ' \n'
    ' Heart size is mildly enlarged.  There is a small left pleural effusion.  No\n'
    ' pneumothorax.  Dr. ___ was notified.\n'
    ' \n'
    ' IMPRESSION: \n'
    ' \n'
    ' Cardiomegaly and small left effusion.\n'
)


def _label_cells(values: dict[str, object]) -> list[object]:
    return [values.get(f, "") for f in FINDINGS]


def build_mimic(root: Path, *, reports_beside: bool = False, gz: bool = True) -> dict[str, object]:
    """A 2-patient MIMIC-CXR-JPG tree: 3 studies, 4 images (one LATERAL, one without a file)."""
    ext = ".csv.gz" if gz else ".csv"
    studies = [
        ("10000032", "50414267", [("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA"),
                                  ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL")]),
        ("10000032", "53189527", [("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP")]),
        ("11000011", "56699142", [("ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c", "PA"),
                                  ("ffffffff-00000000-11111111-22222222-33333333", "PA")]),  # listed, no file
    ]
    meta_rows, split_rows = [], []
    for s_i, (subj, study, images) in enumerate(studies):
        for d_i, (dicom, view) in enumerate(images):
            code = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}[view]
            # the lateral image has a blank ViewPosition (as ~4% of real rows do): the code meaning tells
            meta_rows.append([dicom, subj, study, "CHEST (PA AND LAT)", "" if view == "LATERAL" else view, 48, 40,
                              21800506, 213014.531, "CHEST (PA AND LAT)", code, "Erect"])
            split_rows.append([dicom, study, subj, "test" if subj == "11000011" else "train"])
            if dicom.startswith("ffff"):
                continue
            write_jpeg(root / "files" / f"p{subj[:2]}" / f"p{subj}" / f"s{study}" / f"{dicom}.jpg",
                       gradient(seed=s_i * 10 + d_i))
        rdir = root / "files" if reports_beside else root / "mimic-cxr-reports" / "files"
        rp = rdir / f"p{subj[:2]}" / f"p{subj}" / f"s{study}.txt"
        rp.parent.mkdir(parents=True, exist_ok=True)
        rp.write_text(MIMIC_REPORT if s_i == 0 else "FINAL REPORT\n IMPRESSION:  No acute process.\n")
    write_csv(root / f"mimic-cxr-2.0.0-metadata{ext}",
              ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
               "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
               "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"], meta_rows)
    write_csv(root / f"mimic-cxr-2.0.0-split{ext}", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    chexpert = [
        ["10000032", "50414267", *_label_cells({"Cardiomegaly": "1.0", "Pleural Effusion": "1.0", "Pneumothorax": "0.0",
                                                "No Finding": ""})],
        ["10000032", "53189527", *_label_cells({"No Finding": "1.0"})],
        ["11000011", "56699142", *_label_cells({"Edema": "-1.0"})],
    ]
    negbio = [r[:2] + _label_cells({"Atelectasis": "1.0"}) for r in chexpert]
    write_csv(root / f"mimic-cxr-2.0.0-chexpert{ext}", ["subject_id", "study_id", *FINDINGS], chexpert)
    write_csv(root / f"mimic-cxr-2.0.0-negbio{ext}", ["subject_id", "study_id", *FINDINGS], negbio)
    return {"n_images_on_disk": 4, "n_frontal": 3}


def build_chexpert(parent: Path, *, plus: bool = True, name: str = "CheXpert-v1.0-small") -> Path:
    """CheXpert-v1.0-small under ``parent``: 3 train images (one lateral), 1 valid image."""
    root = parent / name
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS]
    train = [
        [f"{name}/train/patient00001/study1/view1_frontal.jpg", "Female", 68, "Frontal", "AP",
         *_label_cells({"No Finding": "1.0", "Support Devices": "1.0"})],
        [f"{name}/train/patient00002/study2/view1_frontal.jpg", "Female", 87, "Frontal", "PA",
         *_label_cells({"Cardiomegaly": "-1.0", "Lung Opacity": "1.0", "Pleural Effusion": "0.0"})],
        [f"{name}/train/patient00002/study2/view2_lateral.jpg", "Female", 87, "Lateral", "",
         *_label_cells({"Cardiomegaly": "-1.0"})],
    ]
    valid = [[f"{name}/valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "Frontal", "AP",
              *[("1.0" if f == "Edema" else "0.0") for f in FINDINGS]]]
    for i, row in enumerate(train + valid):
        write_jpeg(parent / row[0], gradient(seed=100 + i))
    write_csv(root / "train.csv", header, train)
    write_csv(root / "valid.csv", header, valid)
    if plus:
        write_csv(root / "df_chexpert_plus_240401.csv",
                  ["path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id", "report",
                   "section_findings", "section_impression"],
                  [["train/patient00002/study2/view1_frontal.jpg", "", "Frontal", "PA", "patient00002",
                    "FINDINGS: Opacity at the right base. IMPRESSION: Right basilar opacity.",
                    "Opacity at the right base.", "Right basilar opacity."],
                   ["train/patient00001/study1/view1_frontal.jpg", "", "Frontal", "AP", "patient00001",
                    "NARRATIVE: Lines and tubes in place. IMPRESSION: No acute process.", "",
                    ""]])
    return root


_IU_XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<eCitation>\n'
    '  <meta type="rr"/>\n'
    '  <uId id="{uid}"/>\n'
    '  <pmcId id="{n}"/>\n'
    '  <MedlineCitation Owner="Indiana University" Status="supplied by publisher">\n'
    '    <Article PubModel="Electronic">\n'
    '      <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>\n'
    '      <Abstract>\n'
    '        <AbstractText Label="COMPARISON">None.</AbstractText>\n'
    '        <AbstractText Label="INDICATION">XXXX-year-old with cough</AbstractText>\n'
    '        <AbstractText Label="FINDINGS">{findings}</AbstractText>\n'
    '        <AbstractText Label="IMPRESSION">{impression}</AbstractText>\n'
    '      </Abstract>\n'
    '    </Article>\n'
    '  </MedlineCitation>\n'
    '  <MeSH>\n'
    '{mesh}\n'
    '  </MeSH>\n'
    '{images}\n'
    '</eCitation>\n'
)


def build_iu_xml(root: Path) -> None:
    """NLMCXR form: 2 XML reports (3 images referenced, 1 missing) + PNGs in NLMCXR_png/."""
    cases = [
        ("CXR1", 1, "The heart is normal in size. XXXX XXXX are intact.", "Normal chest x-XXXX.", ["normal"],
         ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
        ("CXR2", 2, "Heart is enlarged. Small right pleural effusion.", "Cardiomegaly with effusion.",
         ["Cardiomegaly/mild", "Pleural Effusion/right/small"], ["CXR2_1_IM-0652-1001", "CXR2_1_IM-0652-2001"]),
    ]
    for uid, n, findings, impression, mesh, images in cases:
        mesh_xml = "\n".join(f"    <major>{m}</major>" for m in mesh)
        img_xml = "\n".join(f'  <parentImage id="{i}"><caption>Xray Chest PA and Lateral</caption></parentImage>'
                            for i in images)
        xml = root / "ecgen-radiology" / f"{n}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(_IU_XML.format(uid=uid, n=n, findings=findings, impression=impression, mesh=mesh_xml,
                                      images=img_xml))
        for k, image_id in enumerate(images):
            if image_id.endswith("2001"):
                continue  # referenced but not downloaded
            write_png(root / "NLMCXR_png" / f"{image_id}.png", gradient(seed=200 + n * 10 + k))


def build_iu_csv(root: Path) -> None:
    """Kaggle form: indiana_reports.csv + indiana_projections.csv + images/images_normalized/*.png."""
    write_csv(root / "indiana_reports.csv",
              ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"],
              [[1, "normal", "normal", "Xray Chest PA and Lateral", "Positive TB test", "None.",
                "The cardiac silhouette and mediastinum size are within normal limits.", "Normal chest x-XXXX."],
               [2, "Cardiomegaly/borderline;Pulmonary Atelectasis/base/left", "Cardiomegaly;Pulmonary Atelectasis",
                "Chest, 2 views, frontal and lateral", "", "", "Borderline cardiomegaly. Left basilar atelectasis.",
                "No acute disease."]])
    write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"],
              [[1, "1_IM-0001-4001.dcm.png", "Frontal"], [1, "1_IM-0001-3001.dcm.png", "Lateral"],
               [2, "2_IM-0652-1001.dcm.png", "Frontal"]])
    for k, name in enumerate(["1_IM-0001-4001.dcm.png", "1_IM-0001-3001.dcm.png", "2_IM-0652-1001.dcm.png"]):
        write_png(root / "images" / "images_normalized" / name, gradient(seed=300 + k))


def build_padchest(root: Path) -> None:
    """PadChest: the real CSV name/columns, 16-bit PNGs (12-bit data) in ImageDir sub-folders."""
    header = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
              "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Modality_DICOM",
              "Manufacturer_DICOM", "PhotometricInterpretation_DICOM", "PixelRepresentation_DICOM",
              "PixelAspectRatio_DICOM", "SpatialResolution_DICOM", "BitsStored_DICOM", "WindowCenter_DICOM",
              "WindowWidth_DICOM", "Rows_DICOM", "Columns_DICOM", "XRayTubeCurrent_DICOM", "Exposure_DICOM",
              "ExposureInuAs_DICOM", "ExposureTime", "RelativeXRayExposure_DICOM", "ReportID", "Report",
              "MethodLabel", "Labels", "Localizations", "LabelsLocalizationsBySentence", "labelCUIS",
              "LocalizationsCUIS"]
    cases = [
        ("216840111366964012339356563862009072111404053_00-043-192.png", 0, "PA",
         "['cardiomegaly', ' pleural effusion', 'costophrenic angle blunting']",
         " cardiomegalia . derrame pleural izquierdo ."),
        ("216840111366964012819207061112010307142602253_04-014-084.png", 0, "L", "['normal']", " sin hallazgos ."),
        ("216840111366964013076187734852011291090445391_00-196-188.png", 1, "AP_horizontal",
         "['NSG tube', 'pneumonia', 'vertebral degenerative changes']", " sonda nasogastrica . neumonia basal ."),
        ("216840111366964012989926673512011151082430686_00-157-045.png", 1, "PA", "['normal']", ""),
    ]
    rows = []
    for k, (name, image_dir, proj, labels, report) in enumerate(cases):
        img = gradient(seed=400 + k) * (4095 / 65535)  # 12-bit data in a 16-bit PNG
        write_png(root / str(image_dir) / name, img, bits=16)
        row = {h: "" for h in header}
        row.update(ImageID=name, ImageDir=image_dir, StudyID=f"study{k // 2}", PatientID=f"pat{k // 2}",
                   PatientSex_DICOM="F", ViewPosition_DICOM="POSTEROANTERIOR" if proj == "PA" else "",
                   Projection=proj, Report=report, MethodLabel="Physician", Labels=labels, BitsStored_DICOM=12)
        rows.append([row[h] for h in header])
    write_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", header, rows)


def build_nih(root: Path, *, with_lists: bool = True) -> None:
    """NIH ChestX-ray14: Data_Entry_2017.csv + images_001/images/*.png (+ split lists)."""
    header = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
              "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
    cases = [
        ("00000001_000.png", "Cardiomegaly", 0, 1, "PA"),
        ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, "PA"),
        ("00000002_000.png", "No Finding", 0, 2, "AP"),
        ("00000003_000.png", "Effusion|Infiltration|Mass|Pleural_Thickening", 0, 3, "PA"),
    ]
    rows = []
    for k, (name, labels, follow, pid, view) in enumerate(cases):
        write_png(root / "images_001" / "images" / name, gradient(seed=500 + k))
        rows.append([name, labels, follow, pid, 58, "M", view, 2682, 2749, 0.143, 0.143])
    write_csv(root / "Data_Entry_2017.csv", header, rows)
    if with_lists:
        (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n")
        (root / "test_list.txt").write_text("00000003_000.png\n")
