"""Output layouts: unicxr's own (``metadata.csv`` + ``images/``), MIMIC-CXR-JPG 2.x and CheXpert.

Each layout decides, in the main process and before rendering, where every case goes
(:meth:`Layout.locate`); workers write the files; :meth:`Layout.finish` writes the CSVs atomically.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import math
import textwrap
from pathlib import Path

import numpy as np

from unicxr.labels import FINDINGS
from unicxr.phantom.simulate import MASK_NAMES, CasePlan
from unicxr.utils.io import atomic_write_bytes

__all__ = ["LAYOUTS", "Layout", "UnicxrLayout", "MimicLayout", "ChexpertLayout", "mimic_report_text", "make_layout"]

LAYOUTS = ("unicxr", "mimic-cxr-jpg", "chexpert")
_PRIME = 9_999_991


def _csv_bytes(header: list[str], rows: list[dict[str, object]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode("utf-8")


def _gz(data: bytes) -> bytes:
    """Deterministic gzip (no file name, mtime 0)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as fh:
        fh.write(data)
    return buf.getvalue()


def _float_label(v: float, *, no_finding: bool = False, fill_blank: bool = False) -> str:
    """MIMIC/CheXpert style label cell: ``1.0``, ``0.0``, ``-1.0`` or blank."""
    if v is None or math.isnan(v):
        return "0.0" if fill_blank else ""
    if no_finding and v == 0.0 and not fill_blank:
        return ""
    return f"{float(v):.1f}"


def mimic_report_text(sections: dict[str, str]) -> str:
    """A report in MIMIC-CXR's free-text style: header, upper-case sections, lines wrapped at ~70."""

    def wrap(text: str) -> str:
        return "\n".join(" " + line for line in textwrap.wrap(text, width=68))

    return (
        "                                 FINAL REPORT\n"
        f" EXAMINATION:  {sections['examination']}\n \n"
        f"{wrap('INDICATION:  ' + sections['indication'])}\n \n"
        f"{wrap('TECHNIQUE:  ' + sections['technique'])}\n \n"
        f"{wrap('COMPARISON:  ' + sections['comparison'])}\n \n"
        f" FINDINGS:\n \n{wrap(sections['findings'])}\n \n"
        f" IMPRESSION:\n \n{wrap(sections['impression'])}\n"
    )


class Layout:
    """Base class: where a case's files go and how the index CSVs are written."""

    name = ""
    image_ext = ".png"

    def __init__(self, out: Path, seed: int, masks: bool) -> None:
        self.out = out
        self.seed = seed
        self.masks = masks

    def locate(self, plan: CasePlan, n: int) -> dict[str, object]:
        """Per-case info (paths relative to ``out`` and ids) decided in the main process."""
        raise NotImplementedError

    def extra_files(self, info: dict[str, object], sections: dict[str, str]) -> dict[str, bytes]:
        """Files besides the image to write for a case (relative path -> bytes)."""
        return {}

    def finish(self, rows: list[dict[str, object]]) -> None:
        """Write the index CSVs (rows are in case order)."""
        raise NotImplementedError


class UnicxrLayout(Layout):
    """``DIR/metadata.csv`` + ``DIR/images/*.png`` (+ ``DIR/masks/<stem>_<name>.png``)."""

    name = "unicxr"

    def locate(self, plan: CasePlan, n: int) -> dict[str, object]:
        width = max(6, len(str(n - 1)))
        stem = f"{plan.index:0{width}d}"
        info: dict[str, object] = {
            "image_path": f"images/{stem}.png",
            "patient_id": f"p{plan.patient:06d}",
            "study_id": f"s{plan.index:0{width}d}",
        }
        if self.masks:
            for m in MASK_NAMES:
                info[f"mask_{m}"] = f"masks/{stem}_{m}.png"
        return info

    def finish(self, rows: list[dict[str, object]]) -> None:
        if not rows:
            return
        head = ["image_path", "patient_id", "study_id", "view_position", "split", "report", *FINDINGS]
        params = [k for k in rows[0] if k not in head and not k.startswith("mask_") and not k.startswith("_")]
        header = head + params + ([f"mask_{m}" for m in MASK_NAMES] if self.masks else [])
        atomic_write_bytes(self.out / "metadata.csv", _csv_bytes(header, rows))


class MimicLayout(Layout):
    """MIMIC-CXR-JPG 2.x: ``files/pXX/pSUBJECT/sSTUDY/DICOM.jpg`` + the four ``mimic-cxr-2.0.0-*.csv.gz``,
    with reports under ``mimic-cxr-reports/files/pXX/pSUBJECT/sSTUDY.txt``."""

    name = "mimic-cxr-jpg"
    image_ext = ".jpg"

    def locate(self, plan: CasePlan, n: int) -> dict[str, object]:
        subject = 10_000_000 + (plan.patient * 7_919 + 1_234_567 + self.seed * 31) % _PRIME
        study = 50_000_000 + (plan.index * 104_729 + 7_654_321 + self.seed * 17) % _PRIME
        h = hashlib.sha1(f"unicxr-phantom:{self.seed}:{plan.index}".encode()).hexdigest()
        dicom = "-".join(h[i * 8 : (i + 1) * 8] for i in range(5))
        rng = np.random.default_rng([self.seed, 5, plan.patient])
        base = dt.date(2110, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 80)))
        date = base + dt.timedelta(days=int(plan.day))
        secs = int(np.random.default_rng([self.seed, 6, plan.index]).integers(0, 86400))
        folder = f"p{str(subject)[:2]}/p{subject}/s{study}"
        return {
            "image_path": f"files/{folder}/{dicom}.jpg",
            "report_path": f"mimic-cxr-reports/files/p{str(subject)[:2]}/p{subject}/s{study}.txt",
            "dicom_id": dicom,
            "subject_id": subject,
            "study_id": study,
            "StudyDate": date.strftime("%Y%m%d"),
            "StudyTime": f"{secs // 3600:02d}{secs % 3600 // 60:02d}{secs % 60:02d}.{(secs * 37) % 1000:03d}",
        }

    def extra_files(self, info: dict[str, object], sections: dict[str, str]) -> dict[str, bytes]:
        return {str(info["report_path"]): mimic_report_text(sections).encode("utf-8")}

    def finish(self, rows: list[dict[str, object]]) -> None:
        label_rows = []
        for r in sorted(rows, key=lambda r: (r["subject_id"], r["study_id"])):
            lr: dict[str, object] = {"subject_id": r["subject_id"], "study_id": r["study_id"]}
            for i, name in enumerate(FINDINGS):
                lr[name] = _float_label(float(r["_labels"][i]), no_finding=(i == 0))
            label_rows.append(lr)
        lab_header = ["subject_id", "study_id", *FINDINGS]
        lab = _gz(_csv_bytes(lab_header, label_rows))
        atomic_write_bytes(self.out / "mimic-cxr-2.0.0-chexpert.csv.gz", lab)
        atomic_write_bytes(self.out / "mimic-cxr-2.0.0-negbio.csv.gz", lab)
        split_rows = [{"dicom_id": r["dicom_id"], "study_id": r["study_id"], "subject_id": r["subject_id"], "split": r["split"]}
                      for r in rows]
        atomic_write_bytes(self.out / "mimic-cxr-2.0.0-split.csv.gz",
                           _gz(_csv_bytes(["dicom_id", "study_id", "subject_id", "split"], split_rows)))
        meta_rows = []
        for r in rows:
            ap = r["view_position"] == "AP"
            meta_rows.append({
                "dicom_id": r["dicom_id"], "subject_id": r["subject_id"], "study_id": r["study_id"],
                "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)" if ap else "CHEST (PA AND LAT)",
                "ViewPosition": r["view_position"], "Rows": r["_size"], "Columns": r["_size"],
                "StudyDate": r["StudyDate"], "StudyTime": r["StudyTime"],
                "ProcedureCodeSequence_CodeMeaning": "CHEST (PORTABLE AP)" if ap else "CHEST (PA AND LAT)",
                "ViewCodeSequence_CodeMeaning": "antero-posterior" if ap else "postero-anterior",
                "PatientOrientationCodeSequence_CodeMeaning": "Erect",
            })
        header = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                  "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
                  "PatientOrientationCodeSequence_CodeMeaning"]
        atomic_write_bytes(self.out / "mimic-cxr-2.0.0-metadata.csv.gz", _gz(_csv_bytes(header, meta_rows)))


class ChexpertLayout(Layout):
    """CheXpert v1.0-small: ``CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyK/view1_frontal.jpg``,
    ``train.csv``/``valid.csv`` and the CheXpert Plus report table ``df_chexpert_plus_240401.csv``."""

    name = "chexpert"
    image_ext = ".jpg"
    root_name = "CheXpert-v1.0-small"

    def locate(self, plan: CasePlan, n: int) -> dict[str, object]:
        part = "train" if plan.split == "train" else "valid"
        rel = f"{part}/patient{plan.patient + 1:05d}/study{plan.study + 1}/view1_frontal.jpg"
        return {"image_path": f"{self.root_name}/{rel}", "Path": f"{self.root_name}/{rel}", "path_to_image": rel,
                "part": part}

    def finish(self, rows: list[dict[str, object]]) -> None:
        root = self.out / self.root_name
        header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS]
        for part, fname in (("train", "train.csv"), ("valid", "valid.csv")):
            out_rows = []
            for r in rows:
                if r["part"] != part:
                    continue
                o: dict[str, object] = {"Path": r["Path"], "Sex": "Female" if r["sex"] == "F" else "Male", "Age": r["age"],
                                        "Frontal/Lateral": "Frontal", "AP/PA": r["view_position"]}
                for i, name in enumerate(FINDINGS):
                    o[name] = _float_label(float(r["_labels"][i]), no_finding=(i == 0), fill_blank=(part == "valid"))
                out_rows.append(o)
            atomic_write_bytes(root / fname, _csv_bytes(header, out_rows))
        plus_header = ["path_to_image", "frontal_lateral", "ap_pa", "deid_patient_id", "patient_report_date_order",
                       "report", "section_clinical_history", "section_technique", "section_comparison",
                       "section_findings", "section_impression", "age", "sex", "split"]
        plus_rows = []
        for r in rows:
            s = r["_sections"]
            plus_rows.append({
                "path_to_image": r["path_to_image"], "frontal_lateral": "Frontal", "ap_pa": r["view_position"],
                "deid_patient_id": r["patient_id"], "patient_report_date_order": r["_study"] + 1, "report": r["report"],
                "section_clinical_history": s["indication"], "section_technique": s["technique"],
                "section_comparison": s["comparison"], "section_findings": s["findings"],
                "section_impression": s["impression"], "age": r["age"], "sex": "Female" if r["sex"] == "F" else "Male",
                "split": "train" if r["part"] == "train" else "valid",
            })
        atomic_write_bytes(root / "df_chexpert_plus_240401.csv", _csv_bytes(plus_header, plus_rows))


def make_layout(name: str, out: Path, seed: int, masks: bool) -> Layout:
    """Layout object by name (one of :data:`LAYOUTS`)."""
    cls = {"unicxr": UnicxrLayout, "mimic-cxr-jpg": MimicLayout, "chexpert": ChexpertLayout}[name]
    return cls(out, seed, masks)
