"""Reader for NIH ChestX-ray14: ``Data_Entry_2017*.csv`` + PNGs under ``images*/``.

``Finding Labels`` ("Cardiomegaly|Effusion", "No Finding") are mapped to the 14 findings; findings
the NIH vocabulary cannot express (Enlarged Cardiomediastinum, Fracture, Support Devices) stay NaN.
``test_list.txt`` gives the official test split; ``train_val_list.txt`` patients are split into
train/validate at patient level (seeded).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from unicxr.data.sources.common import (
    ReadStats,
    Record,
    SourceOptions,
    find_table,
    index_files,
    labels_from_names,
    normalize_view,
    read_table,
)
from unicxr.data.splits import patient_split
from unicxr.utils import UnicxrError

__all__ = ["NAME", "NIH_MAP", "NIH_COVERED", "read"]

NAME = "nih"

NIH_MAP: dict[str, tuple[str, ...]] = {
    "atelectasis": ("Atelectasis",),
    "cardiomegaly": ("Cardiomegaly",),
    "consolidation": ("Consolidation",),
    "edema": ("Edema",),
    "effusion": ("Pleural Effusion",),
    "infiltration": ("Lung Opacity",),
    "infiltrate": ("Lung Opacity",),
    "mass": ("Lung Lesion",),
    "nodule": ("Lung Lesion",),
    "pleural_thickening": ("Pleural Other",),
    "pleural thickening": ("Pleural Other",),
    "pneumonia": ("Pneumonia",),
    "pneumothorax": ("Pneumothorax",),
    # Emphysema, Fibrosis, Hernia have no CheXpert counterpart
}
NIH_COVERED = tuple(sorted({f for fs in NIH_MAP.values() for f in fs}))


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()}


def read(root: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Record]:
    """Yield one :class:`Record` per row of the Data_Entry CSV whose image exists under ``root``."""
    csv = find_table(root, "Data_Entry_2017*.csv", "Data_Entry*.csv", "*/Data_Entry_2017*.csv")
    if csv is None:
        raise UnicxrError(f"{root}: no Data_Entry_2017*.csv (NIH ChestX-ray14 layout)")
    rows = read_table(csv)
    if rows and ("Image Index" not in rows[0] or "Finding Labels" not in rows[0]):
        raise UnicxrError(f"{csv}: expected columns 'Image Index' and 'Finding Labels'")
    test = _read_list(root / "test_list.txt")
    trainval = _read_list(root / "train_val_list.txt")
    if test or trainval:
        stats.note(f"official split lists: {len(trainval)} train/val, {len(test)} test images")
    images = index_files(root, (".png", ".jpg", ".jpeg", ".dcm"))
    for row in rows:
        stats.listed += 1
        name = row["Image Index"].strip()
        path = images.get(name)
        if path is None:
            stats.missing_files += 1
            continue
        patient = row.get("Patient ID", "").strip().lstrip("0") or name.split("_")[0]
        names = [n for n in row["Finding Labels"].split("|")]
        labels = labels_from_names(names, NIH_MAP, NIH_COVERED, normal_names=("no finding",))
        split: str | None = None
        if name in test:
            split = "test"
        elif name in trainval:
            split = patient_split(patient, options.seed, options.val_fraction, 0.0)
        followup = row.get("Follow-up #", "").strip()
        yield Record(
            path=str(path.resolve()),
            patient_id=patient,
            study_id=f"{patient}_{followup}" if followup else name,
            view=normalize_view(row.get("View Position", "")),
            split=split,
            report="",
            labels=labels,
            source=NAME,
            meta={
                k: row[c].strip()
                for k, c in (("finding_labels", "Finding Labels"), ("age", "Patient Age"), ("sex", "Patient Gender"))
                if row.get(c, "").strip()
            },
        )
