"""Reader for a plain folder: every image file under ROOT, optionally described by a CSV.

Images: files with an image/DICOM extension, and extension-less files with the DICOM ``DICM`` magic.
The optional CSV (``--csv``) has a path column (``path``, ``image_path``, ``Path``, ``filename``,
``file``, ``image``; relative to ROOT, to the CSV's folder, or absolute) and optionally ``report``
(or ``text``/``findings``+``impression``), the 14 label columns, ``patient_id``, ``study_id``,
``view``/``view_position`` and ``split``. Images the CSV does not list are still read (no report,
blank labels); each image without a patient id is its own patient.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from unicxr.data.io import is_image_candidate
from unicxr.data.sources.common import (
    ReadStats,
    Record,
    SourceOptions,
    blank_labels,
    compose_report,
    labels_from_cells,
    normalize_view,
    read_table,
    report_text,
)
from unicxr.data.splits import normalize_split
from unicxr.utils import UnicxrError

__all__ = ["NAME", "read", "list_images", "PATH_COLUMNS"]

NAME = "folder"
PATH_COLUMNS = ("path", "image_path", "Path", "filepath", "file_path", "filename", "file", "image", "Image Index", "ImageID")
_REPORT_COLUMNS = ("report", "text", "Report", "report_text")


def list_images(root: Path, *, skip: tuple[Path, ...] = ()) -> list[Path]:
    """Every image candidate under ``root`` in sorted order (hidden folders and ``skip`` excluded)."""
    skip_set = {os.path.realpath(p) for p in skip}
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and os.path.realpath(os.path.join(dirpath, d)) not in skip_set
        )
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if is_image_candidate(p):
                out.append(p)
    return out


def _csv_rows(csv: Path, root: Path) -> dict[str, dict[str, str]]:
    rows = read_table(csv)
    if not rows:
        return {}
    col = next((c for c in PATH_COLUMNS if c in rows[0]), None)
    if col is None:
        raise UnicxrError(f"{csv}: no path column (expected one of: {', '.join(PATH_COLUMNS)})")
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        rel = row[col].strip()
        if not rel:
            continue
        for base in (root, csv.parent):
            p = Path(rel) if Path(rel).is_absolute() else base / rel
            if p.exists():
                out[os.path.realpath(p)] = row
                break
        else:
            out.setdefault("name:" + Path(rel).name, row)
    return out


def _report(row: dict[str, str], mode: str) -> str:
    for c in _REPORT_COLUMNS:
        if row.get(c, "").strip():
            return report_text(row[c], mode)
    sections = {k: row.get(k, "") for k in ("findings", "impression") if row.get(k, "").strip()}
    return compose_report(sections, mode) if sections else ""


def read(root: Path, options: SourceOptions, stats: ReadStats, *, skip: tuple[Path, ...] = ()) -> Iterator[Record]:
    """Yield one :class:`Record` per image file under ``root``."""
    if not root.is_dir():
        raise UnicxrError(f"{root}: not a folder")
    table: dict[str, dict[str, str]] = {}
    if options.csv is not None:
        if not Path(options.csv).is_file():
            raise UnicxrError(f"{options.csv}: CSV file not found")
        table = _csv_rows(Path(options.csv), root)
        stats.note(f"{len(table)} rows from {Path(options.csv).name}")
    for path in list_images(root, skip=skip):
        stats.listed += 1
        real = os.path.realpath(path)
        row = table.get(real) or table.get("name:" + path.name) or {}
        rel = path.relative_to(root).with_suffix("").as_posix()
        view = normalize_view(row.get("view", "") or row.get("view_position", "") or row.get("ViewPosition", ""))
        yield Record(
            path=str(Path(real)),
            patient_id=row.get("patient_id", "").strip() or rel,
            study_id=row.get("study_id", "").strip() or rel,
            view=view,
            split=normalize_split(row.get("split")),
            report=_report(row, options.report_text) if row else "",
            labels=labels_from_cells(row, stats) if row else blank_labels(),
            source=NAME,
            meta={},
        )
