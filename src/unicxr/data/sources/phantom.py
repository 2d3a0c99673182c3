"""Reader for unicxr's own phantom layout: ``DIR/metadata.csv`` + ``DIR/images/*.png``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from unicxr.data.sources.common import (
    ReadStats,
    Record,
    SourceOptions,
    labels_from_cells,
    normalize_view,
    report_text,
)
from unicxr.data.splits import normalize_split
from unicxr.labels import FINDINGS
from unicxr.utils import UnicxrError

__all__ = ["NAME", "read"]

NAME = "phantom"
_CORE = {"image_path", "patient_id", "study_id", "view_position", "split", "report", *FINDINGS}


def read(root: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Record]:
    """Yield one :class:`Record` per row of ``root/metadata.csv``.

    Simulator parameters and mask paths (every non-core column) go to ``meta``.
    """
    from unicxr.data.sources.common import read_table

    csv = root / "metadata.csv"
    if not csv.is_file():
        raise UnicxrError(f"{root}: no metadata.csv (expected the phantom layout DIR/metadata.csv + DIR/images/)")
    rows = read_table(csv)
    if rows and "image_path" not in rows[0]:
        raise UnicxrError(f"{csv}: missing column 'image_path'")
    for row in rows:
        stats.listed += 1
        rel = row["image_path"].strip()
        path = (root / rel).resolve()
        if not path.is_file():
            stats.missing_files += 1
            continue
        yield Record(
            path=str(path),
            patient_id=row.get("patient_id", "").strip() or Path(rel).stem,
            study_id=row.get("study_id", "").strip(),
            view=normalize_view(row.get("view_position", "")),
            split=normalize_split(row.get("split")),
            report=report_text(row.get("report", ""), options.report_text),
            labels=labels_from_cells(row, stats),
            source=NAME,
            meta={k: v for k, v in row.items() if k not in _CORE and v != ""},
        )
