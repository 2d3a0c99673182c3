"""Reader for PadChest: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` + 16-bit PNGs.

Columns used: ``ImageID``, ``ImageDir`` (images at ``ROOT/<ImageDir>/<ImageID>``; a flat folder or any
sub-folder is accepted too), ``StudyID``, ``PatientID``, ``Projection`` (PA, AP, AP_horizontal, L,
COSTAL, EXCLUDE, UNK), ``ViewPosition_DICOM``, ``Labels`` (a Python-list-like string such as
``"['cardiomegaly', 'pleural effusion']"``) and ``Report`` (Spanish). Labels with a CheXpert
counterpart are mapped; the PadChest vocabulary covers all 14 findings, so unlisted ones are 0.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from unicxr.data.reports import clean_report
from unicxr.data.sources.common import (
    ReadStats,
    Record,
    SourceOptions,
    blank_labels,
    find_table,
    index_files,
    labels_from_names,
    normalize_view,
    read_table,
)
from unicxr.labels import FINDINGS
from unicxr.utils import UnicxrError

__all__ = ["NAME", "PADCHEST_MAP", "parse_label_list", "padchest_labels", "read"]

NAME = "padchest"

_SD = ("Support Devices",)
PADCHEST_MAP: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "mediastinal enlargement": ("Enlarged Cardiomediastinum",),
    "superior mediastinal enlargement": ("Enlarged Cardiomediastinum",),
    "pleural effusion": ("Pleural Effusion",),
    "loculated pleural effusion": ("Pleural Effusion",),
    "loculated fissural effusion": ("Pleural Effusion",),
    "hydropneumothorax": ("Pleural Effusion", "Pneumothorax"),
    "pneumothorax": ("Pneumothorax",),
    "atelectasis": ("Atelectasis",),
    "laminar atelectasis": ("Atelectasis",),
    "round atelectasis": ("Atelectasis",),
    "lobar atelectasis": ("Atelectasis",),
    "segmental atelectasis": ("Atelectasis",),
    "total atelectasis": ("Atelectasis",),
    "atelectasis basal": ("Atelectasis",),
    "consolidation": ("Consolidation",),
    "pneumonia": ("Pneumonia",),
    "atypical pneumonia": ("Pneumonia",),
    "pulmonary edema": ("Edema",),
    "edema": ("Edema",),
    "infiltrates": ("Lung Opacity",),
    "alveolar pattern": ("Lung Opacity",),
    "interstitial pattern": ("Lung Opacity",),
    "reticular interstitial pattern": ("Lung Opacity",),
    "reticulonodular interstitial pattern": ("Lung Opacity",),
    "ground glass pattern": ("Lung Opacity",),
    "increased density": ("Lung Opacity",),
    "nodule": ("Lung Lesion",),
    "multiple nodules": ("Lung Lesion",),
    "mass": ("Lung Lesion",),
    "pulmonary mass": ("Lung Lesion",),
    "lung metastasis": ("Lung Lesion",),
    "pleural thickening": ("Pleural Other",),
    "apical pleural thickening": ("Pleural Other",),
    "calcified pleural thickening": ("Pleural Other",),
    "pleural plaques": ("Pleural Other",),
    "calcified pleural plaques": ("Pleural Other",),
    "fracture": ("Fracture",),
    "rib fracture": ("Fracture",),
    "clavicle fracture": ("Fracture",),
    "humeral fracture": ("Fracture",),
    "vertebral fracture": ("Fracture",),
    "callus rib fracture": ("Fracture",),
    "vertebral compression": ("Fracture",),
    "pacemaker": _SD,
    "dual chamber device": _SD,
    "single chamber device": _SD,
    "electrical device": _SD,
    "nsg tube": _SD,
    "endotracheal tube": _SD,
    "tracheostomy tube": _SD,
    "chest drain tube": _SD,
    "ventriculoperitoneal drain tube": _SD,
    "catheter": _SD,
    "central venous catheter": _SD,
    "central venous catheter via jugular vein": _SD,
    "central venous catheter via subclavian vein": _SD,
    "central venous catheter via umbilical vein": _SD,
    "reservoir central venous catheter": _SD,
    "artificial heart valve": _SD,
    "artificial mitral heart valve": _SD,
    "artificial aortic heart valve": _SD,
    "heart valve": _SD,
}
_COVERED = tuple(n for n in FINDINGS if n != "No Finding")
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def parse_label_list(cell: str) -> list[str] | None:
    """Parse PadChest's ``Labels`` cell (``"['normal']"``) into names; None when blank/unparseable."""
    text = (cell or "").strip()
    if not text or text.lower() in ("nan", "none", "[]"):
        return None
    try:
        value = ast.literal_eval(text)
        if isinstance(value, (list, tuple)):
            names = [str(v).strip() for v in value if str(v).strip() and str(v).strip().lower() != "nan"]
            return names or None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    names = [(a or b).strip() for a, b in _QUOTED.findall(text)]
    names = [n for n in names if n]
    return names or None


def padchest_labels(cell: str):
    """(14,) float32 labels from a ``Labels`` cell; all-NaN when the cell has no labels.

    ``exclude`` / ``suboptimal study`` only → all-NaN (no reading of the image content).
    """
    names = parse_label_list(cell)
    if not names:
        return blank_labels()
    content = [n for n in names if n.lower() not in ("exclude", "suboptimal study")]
    if not content:
        return blank_labels()
    return labels_from_names(content, PADCHEST_MAP, _COVERED, normal_names=("normal",))


def read(root: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Record]:
    """Yield one :class:`Record` per CSV row whose image exists under ``root``."""
    csv = find_table(root, "PADCHEST_chest_x_ray_images_labels_160K*.csv", "PADCHEST*.csv", "*/PADCHEST*.csv")
    if csv is None:
        raise UnicxrError(f"{root}: no PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv (PadChest layout)")
    rows = read_table(csv)
    if rows and "ImageID" not in rows[0]:
        raise UnicxrError(f"{csv}: missing column 'ImageID'")
    index: dict[str, Path] | None = None
    for row in rows:
        stats.listed += 1
        name = row["ImageID"].strip()
        path: Path | None = None
        image_dir = row.get("ImageDir", "").strip()
        if image_dir.endswith(".0"):
            image_dir = image_dir[:-2]
        for candidate in ((root / image_dir / name) if image_dir else None, root / name, root / "images" / name):
            if candidate is not None and candidate.is_file():
                path = candidate
                break
        if path is None:
            if index is None:
                index = index_files(root, (".png", ".jpg", ".jpeg", ".dcm"))
            path = index.get(name)
        if path is None:
            stats.missing_files += 1
            continue
        view = normalize_view(row.get("Projection", "")) or normalize_view(row.get("ViewPosition_DICOM", ""))
        meta = {
            k: row[c].strip()
            for k, c in (("labels", "Labels"), ("sex", "PatientSex_DICOM"), ("birth", "PatientBirth"),
                         ("method_label", "MethodLabel"))
            if row.get(c, "").strip()
        }
        yield Record(
            path=str(path.resolve()),
            patient_id=row.get("PatientID", "").strip(),
            study_id=row.get("StudyID", "").strip(),
            view=view,
            split=None,
            report=clean_report(row.get("Report", "")),
            labels=padchest_labels(row.get("Labels", "")),
            source=NAME,
            meta=meta,
        )
