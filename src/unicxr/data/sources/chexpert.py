"""Reader for CheXpert v1.0 / v1.0-small (+ CheXpert Plus reports when present).

``ROOT/train.csv`` and ``ROOT/valid.csv`` (``test.csv`` too when it has a ``Path`` column) with columns
``Path,Sex,Age,Frontal/Lateral,AP/PA`` + the 14 findings. ``Path`` is relative to ROOT's parent
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``); paths relative to ROOT itself
are accepted too. CheXpert Plus's ``df_chexpert_plus_*.csv`` (in ROOT or its parent) supplies the
reports (``section_findings``, ``section_impression``, ``report``), matched on ``path_to_image``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from unicxr.data.sources.common import (
    ReadStats,
    Record,
    SourceOptions,
    compose_report,
    labels_from_cells,
    normalize_view,
    read_table,
    report_text,
)
from unicxr.utils import UnicxrError

__all__ = ["NAME", "read", "relative_key"]

NAME = "chexpert"
_CSV_SPLITS = (("train.csv", "train"), ("valid.csv", "validate"), ("test.csv", "test"), ("test_labels.csv", "test"))


def relative_key(path: str) -> str:
    """Normalised key ``train/patient00001/study1/view1_frontal`` for a CheXpert image path.

    Leading ``CheXpert-v1.0*`` folder, backslashes and the extension are removed, so the label CSV
    (``.jpg``) and CheXpert Plus (``.jpg``/``.png``) rows of the same image meet.
    """
    parts = list(PurePosixPath(path.strip().replace("\\", "/")).parts)
    while parts and (parts[0] in ("/", ".") or parts[0].lower().startswith("chexpert")):
        parts.pop(0)
    if not parts:
        return ""
    parts[-1] = parts[-1].rsplit(".", 1)[0]
    return "/".join(parts)


def _resolve(root: Path, rel: str) -> Path | None:
    rel = rel.strip().replace("\\", "/")
    parts = PurePosixPath(rel).parts
    candidates = [root.parent / rel]
    if len(parts) > 1:
        candidates.append(root.joinpath(*parts[1:]))
    candidates.append(root / rel)
    for c in candidates:
        if c.is_file():
            return c
    return None


def _plus_reports(root: Path, mode: str, stats: ReadStats) -> dict[str, str]:
    for base in (root, root.parent):
        hits = sorted(base.glob("df_chexpert_plus*.csv")) + sorted(base.glob("df_chexpert_plus*.csv.gz"))
        if hits:
            out: dict[str, str] = {}
            for row in read_table(hits[-1]):
                key = relative_key(row.get("path_to_image", ""))
                if not key:
                    continue
                findings = row.get("section_findings", "") or ""
                impression = row.get("section_impression", "") or ""
                if mode != "full" and (findings.strip() or impression.strip()):
                    text = compose_report({"findings": findings, "impression": impression})
                else:
                    text = report_text(row.get("report", "") or "", mode)
                out[key] = text
            stats.note(f"reports from {hits[-1].name} ({len(out)} images)")
            return out
    return {}


def read(root: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Record]:
    """Yield one :class:`Record` per CSV row whose image exists."""
    csvs = [(root / name, split) for name, split in _CSV_SPLITS if (root / name).is_file()]
    if not csvs:
        raise UnicxrError(f"{root}: no train.csv or valid.csv (expected the CheXpert layout)")
    reports = _plus_reports(root, options.report_text, stats)
    for csv, split in csvs:
        rows = read_table(csv)
        if rows and "Path" not in rows[0]:
            if split == "test":
                stats.note(f"{csv.name} has no Path column: skipped")
                continue
            raise UnicxrError(f"{csv}: missing column 'Path'")
        for row in rows:
            stats.listed += 1
            path = _resolve(root, row["Path"])
            if path is None:
                stats.missing_files += 1
                continue
            key = relative_key(row["Path"])
            parts = key.split("/")
            patient = next((p for p in parts if p.startswith("patient")), parts[0] if parts else "")
            study = next((p for p in parts if p.startswith("study")), "")
            fl = row.get("Frontal/Lateral", "").strip().lower()
            appa = normalize_view(row.get("AP/PA", ""))
            if fl == "lateral":
                view = appa if appa in ("LL", "RL") else "LATERAL"
            elif fl == "frontal":
                view = appa if appa in ("AP", "PA") else "FRONTAL"
            else:
                view = appa
            yield Record(
                path=str(path.resolve()),
                patient_id=patient,
                study_id=f"{patient}/{study}" if study else patient,
                view=view,
                split=split,
                report=reports.get(key, ""),
                labels=labels_from_cells(row, stats),
                source=NAME,
                meta={k.lower(): row[k].strip() for k in ("Sex", "Age") if row.get(k, "").strip()},
            )
