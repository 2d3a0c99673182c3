"""Reader for MIMIC-CXR-JPG 2.x (+ the MIMIC-CXR free-text reports).

Layout: ``ROOT/files/p10/p10000032/s50414267/<dicom_id>.jpg``; CSVs in ROOT as ``.csv.gz`` or ``.csv``:
``mimic-cxr-2.0.0-{chexpert,negbio}`` (labels per study), ``-split`` (per dicom_id), ``-metadata``
(ViewPosition per dicom_id). Reports: ``ROOT/mimic-cxr-reports/files/p10/p10000032/s50414267.txt`` or
``ROOT/files/p10/p10000032/s50414267.txt``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from unicxr.data.sources.common import (
    ReadStats,
    Record,
    SourceOptions,
    blank_labels,
    find_table,
    labels_from_cells,
    normalize_view,
    read_table,
    report_text,
)
from unicxr.data.splits import normalize_split
from unicxr.utils import UnicxrError

__all__ = ["NAME", "read", "image_path", "report_path"]

NAME = "mimic-cxr-jpg"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm")


def _strip_prefix(value: str, prefix: str) -> str:
    value = value.strip()
    if value.lower().startswith(prefix):
        value = value[1:]
    if value.endswith(".0"):  # ids written as floats by some tools
        value = value[:-2]
    return value


def image_path(root: Path, subject_id: str, study_id: str, dicom_id: str, suffix: str = ".jpg") -> Path:
    """``ROOT/files/p{first 2 digits}/p{subject}/s{study}/{dicom_id}{suffix}``."""
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}{suffix}"


def report_path(root: Path, subject_id: str, study_id: str) -> Path | None:
    """The study's report file in one of the accepted places, or None."""
    rel = Path(f"p{subject_id[:2]}") / f"p{subject_id}" / f"s{study_id}.txt"
    for base in (
        root / "mimic-cxr-reports" / "files",
        root / "mimic-cxr-reports",
        root / "files",
        root / "reports" / "files",
        root / "reports",
    ):
        candidate = base / rel
        if candidate.is_file():
            return candidate
    return None


_DIR_RE = re.compile(r"^p(\d+)$")
_STUDY_RE = re.compile(r"^s(\d+)$")


def _walk_images(root: Path) -> Iterator[tuple[str, str, str, Path]]:
    """(subject, study, dicom_id, path) for every image under ROOT/files when no CSV lists them."""
    files = root / "files"
    for dirpath, dirnames, filenames in os.walk(files):
        dirnames.sort()
        parts = Path(dirpath).relative_to(files).parts
        if len(parts) != 3:
            continue
        subj, study = _DIR_RE.match(parts[1]), _STUDY_RE.match(parts[2])
        if not subj or not study:
            continue
        for name in sorted(filenames):
            if name.lower().endswith(_IMAGE_SUFFIXES):
                yield subj.group(1), study.group(1), Path(name).stem, Path(dirpath) / name


def read(root: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Record]:
    """Yield one :class:`Record` per image (listed in the metadata/split CSV, or found under files/)."""
    if not (root / "files").is_dir():
        raise UnicxrError(f"{root}: no files/ folder (expected MIMIC-CXR-JPG layout ROOT/files/pXX/pSUBJECT/sSTUDY/*.jpg)")
    label_kinds = ["chexpert", "negbio"] if options.label_source != "negbio" else ["negbio", "chexpert"]
    labels: dict[tuple[str, str], object] = {}
    for kind in label_kinds:
        csv = find_table(root, f"mimic-cxr-*-{kind}.csv", f"*{kind}*.csv")
        if csv is not None:
            for row in read_table(csv):
                key = (_strip_prefix(row.get("subject_id", ""), "p"), _strip_prefix(row.get("study_id", ""), "s"))
                labels[key] = labels_from_cells(row, stats)
            stats.note(f"labels from {csv.name} ({len(labels)} studies)")
            break
    else:
        stats.note("no chexpert/negbio label CSV: labels are blank")

    split_csv = find_table(root, "mimic-cxr-*-split.csv", "*split*.csv")
    meta_csv = find_table(root, "mimic-cxr-*-metadata.csv", "*metadata*.csv")
    splits: dict[str, str | None] = {}
    listing: list[tuple[str, str, str]] = []
    if split_csv is not None:
        for row in read_table(split_csv):
            splits[row["dicom_id"].strip()] = normalize_split(row.get("split"))
    meta_rows: dict[str, dict[str, str]] = {}
    if meta_csv is not None:
        for row in read_table(meta_csv):
            dicom = row.get("dicom_id", "").strip()
            meta_rows[dicom] = row
            listing.append((_strip_prefix(row["subject_id"], "p"), _strip_prefix(row["study_id"], "s"), dicom))
    elif split_csv is not None:
        for row in read_table(split_csv):
            listing.append(
                (_strip_prefix(row["subject_id"], "p"), _strip_prefix(row["study_id"], "s"), row["dicom_id"].strip())
            )

    if listing:

        def located() -> Iterator[tuple[str, str, str, Path | None]]:
            for subject, study, dicom in listing:
                found = None
                for suffix in _IMAGE_SUFFIXES:
                    p = image_path(root, subject, study, dicom, suffix)
                    if p.is_file():
                        found = p
                        break
                yield subject, study, dicom, found

        items: Iterator[tuple[str, str, str, Path | None]] = located()
    else:
        stats.note("no metadata/split CSV: images found by walking files/")
        items = iter(_walk_images(root))

    reports: dict[tuple[str, str], str] = {}
    for subject, study, dicom, path in items:
        stats.listed += 1
        if path is None:
            stats.missing_files += 1
            continue
        key = (subject, study)
        if key not in reports:
            rp = report_path(root, subject, study)
            raw = rp.read_text(encoding="utf-8", errors="replace") if rp is not None else ""
            reports[key] = report_text(raw, options.report_text)
        meta = meta_rows.get(dicom, {})
        extra = {
            k: meta[k].strip()
            for k in ("StudyDate", "PerformedProcedureStepDescription", "ViewCodeSequence_CodeMeaning")
            if meta.get(k, "").strip()
        }
        extra["dicom_id"] = dicom
        yield Record(
            path=str(path.resolve()),
            patient_id=subject,
            study_id=study,
            view=normalize_view(meta.get("ViewPosition", "")) or normalize_view(meta.get("ViewCodeSequence_CodeMeaning", "")),
            split=splits.get(dicom),
            report=reports[key],
            labels=labels.get(key, blank_labels()).copy(),  # type: ignore[union-attr]
            source=NAME,
            meta=extra,
        )
