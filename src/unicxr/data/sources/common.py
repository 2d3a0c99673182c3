"""Shared pieces of the data-set readers: the :class:`Record`, options, CSV and file helpers, views."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unicxr.data.reports import clean_report, clean_whitespace, findings_impression
from unicxr.labels import FINDINGS, NUM_FINDINGS, no_finding_value, parse_label
from unicxr.utils import UnicxrError

__all__ = [
    "Record",
    "SourceOptions",
    "ReadStats",
    "blank_labels",
    "labels_from_cells",
    "labels_from_names",
    "read_table",
    "find_table",
    "index_files",
    "normalize_view",
    "is_frontal",
    "report_text",
    "compose_report",
]


@dataclass
class Record:
    """One image of a data set, as every reader yields it.

    Attributes:
        path: absolute path of the source image file.
        patient_id: patient identifier ("" when unknown).
        study_id: study identifier ("" when unknown).
        view: normalised view (``PA``, ``AP``, ``FRONTAL``, ``LATERAL``, ``LL``, ... or ``""``).
        split: ``train``/``validate``/``test`` from the source, or None when it has none.
        report: cleaned report text ("" when none).
        labels: float32 (14,) in :data:`unicxr.labels.FINDINGS` order; 1/0/-1, NaN = not mentioned.
        source: reader name (``mimic-cxr-jpg``, ...).
        meta: small source-specific extras (strings), stored as JSON in the cache index.
    """

    path: str
    patient_id: str
    study_id: str
    view: str
    split: str | None
    report: str
    labels: np.ndarray
    source: str
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class SourceOptions:
    """Reader options (most apply to one format only).

    Attributes:
        csv: folder format: optional CSV with a path column plus report/label columns.
        label_source: MIMIC-CXR-JPG: ``chexpert`` or ``negbio`` label file.
        report_text: ``findings-impression`` (training text) or ``full`` (whole cleaned report).
        seed: seed of patient-level splits made by readers (NIH train/val).
        val_fraction: fraction of patients sent to ``validate`` when a reader splits.
    """

    csv: Path | None = None
    label_source: str = "chexpert"
    report_text: str = "findings-impression"
    seed: int = 0
    val_fraction: float = 0.1


@dataclass
class ReadStats:
    """Counters a reader fills in (printed by ``unicxr prepare``)."""

    listed: int = 0
    missing_files: int = 0
    bad_label_cells: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)


def blank_labels() -> np.ndarray:
    """float32 (14,) of NaN (nothing mentioned)."""
    return np.full(NUM_FINDINGS, np.nan, dtype=np.float32)


def labels_from_cells(row: Mapping[str, object], stats: ReadStats | None = None) -> np.ndarray:
    """14 labels from a row with the CheXpert column names; unparseable cells become NaN (counted)."""
    out = blank_labels()
    for i, name in enumerate(FINDINGS):
        if name in row:
            try:
                out[i] = parse_label(row[name])
            except ValueError:
                if stats is not None:
                    stats.bad_label_cells += 1
    return out


def labels_from_names(
    names: Iterable[str],
    mapping: Mapping[str, Iterable[str]],
    covered: Iterable[str] | None = None,
    *,
    normal_names: Iterable[str] = ("normal", "no finding"),
) -> np.ndarray:
    """Labels from a list of source label names (NIH, PadChest, IU-Xray style: only positives listed).

    Listed names that map to one of the 14 findings become 1. Covered findings (those the source
    vocabulary can express) that are not listed become 0; uncovered ones stay NaN. ``No Finding`` is
    1 when a normal name is listed, else the CheXpert rule on the other findings.

    Args:
        names: source label names (case-insensitive, surrounding spaces ignored).
        mapping: lower-case source name -> finding names it implies.
        covered: findings the source can express; default: every finding any mapping entry names.
        normal_names: source names meaning "normal".

    Returns:
        float32 (14,).
    """
    index = {n: i for i, n in enumerate(FINDINGS)}
    cov = set(covered) if covered is not None else {f for fs in mapping.values() for f in fs}
    out = blank_labels()
    for f in cov:
        out[index[f]] = 0.0
    normals = {n.lower() for n in normal_names}
    is_normal = False
    for raw in names:
        key = clean_whitespace(str(raw)).lower()
        if not key:
            continue
        if key in normals:
            is_normal = True
            continue
        for f in mapping.get(key, ()):
            out[index[f]] = 1.0
    out[0] = 1.0 if is_normal and not np.any(out[1:-1] == 1.0) else no_finding_value(out)
    return out


def read_table(path: Path) -> list[dict[str, str]]:
    """Read a CSV (``.csv`` or ``.csv.gz``, comma or tab separated) as a list of string dicts.

    Blank cells are ``""``; nothing is converted. Raises :class:`UnicxrError` naming the file on
    failure.
    """
    import pandas as pd

    sep = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz", ".txt")) else ","
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, sep=sep, encoding_errors="replace")
    except FileNotFoundError:
        raise UnicxrError(f"{path}: file not found") from None
    except Exception as exc:
        raise UnicxrError(f"{path}: cannot read table: {type(exc).__name__}: {exc}") from None
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    return df.to_dict("records")


def find_table(root: Path, *patterns: str) -> Path | None:
    """First file in ``root`` matching one of the glob patterns (each tried as-is and with ``.gz``)."""
    for pattern in patterns:
        hits: list[Path] = []
        for pat in (pattern, pattern + ".gz"):
            hits.extend(p for p in root.glob(pat) if p.is_file())
        if hits:
            return sorted(hits)[-1]  # the newest version number sorts last
    return None


def index_files(root: Path, suffixes: Iterable[str], *, skip: Iterable[Path] = ()) -> dict[str, Path]:
    """Map file name -> path for every file under ``root`` with one of the (lower-case) suffixes.

    Hidden folders are skipped; with duplicate names the first in sorted walk order wins.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    skip_set = {os.path.realpath(p) for p in skip}
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and os.path.realpath(os.path.join(dirpath, d)) not in skip_set
        )
        for name in sorted(filenames):
            if name.lower().endswith(suffixes) and name not in out:
                out[name] = Path(dirpath) / name
    return out


_VIEW_ALIASES = {
    "PA": "PA",
    "POSTEROANTERIOR": "PA",
    "POSTERO-ANTERIOR": "PA",
    "AP": "AP",
    "ANTEROPOSTERIOR": "AP",
    "ANTERO-POSTERIOR": "AP",
    "AP_HORIZONTAL": "AP",
    "AP HORIZONTAL": "AP",
    "AP SUPINE": "AP",
    "AP UPRIGHT": "AP",
    "AP PORTABLE": "AP",
    "FRONTAL": "FRONTAL",
    "LATERAL": "LATERAL",
    "LAT": "LATERAL",
    "L": "LATERAL",
    "XTABLE LATERAL": "LATERAL",
    "LL": "LL",
    "RL": "RL",
    "LEFT LATERAL": "LL",
    "RIGHT LATERAL": "RL",
}
FRONTAL_VIEWS = frozenset({"PA", "AP", "FRONTAL"})


def normalize_view(value: object) -> str:
    """Normalise a view/projection string: ``PA``, ``AP``, ``FRONTAL``, ``LATERAL``, ``LL``, ... or ``""``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = " ".join(str(value).strip().upper().split())
    if text in ("", "NAN", "NONE", "UNK", "UNKNOWN"):
        return ""
    return _VIEW_ALIASES.get(text, text)


def is_frontal(view: str) -> bool | None:
    """True for PA/AP/FRONTAL, False for any other known view, None when the view is unknown."""
    if not view:
        return None
    return view in FRONTAL_VIEWS


def compose_report(sections: Mapping[str, str], mode: str = "findings-impression") -> str:
    """Training text from already separated sections (``findings``, ``impression``, others).

    ``findings-impression``: ``"FINDINGS: ... IMPRESSION: ..."`` (either part alone when the other is
    empty). ``full``: every non-empty section as ``"NAME: text"`` in the given order.
    """
    if mode == "full":
        parts = [f"{k.upper()}: {clean_report(v)}" for k, v in sections.items() if clean_report(v)]
        return " ".join(parts)
    findings = clean_report(sections.get("findings", "") or "")
    impression = clean_report(sections.get("impression", "") or "")
    if findings and impression:
        return f"FINDINGS: {findings} IMPRESSION: {impression}"
    if findings:
        return f"FINDINGS: {findings}"
    if impression:
        return f"IMPRESSION: {impression}"
    return ""


def report_text(raw: str, mode: str = "findings-impression") -> str:
    """Training text from a raw report: :func:`findings_impression` or the whole :func:`clean_report`."""
    if not raw:
        return ""
    if mode == "full":
        return clean_report(raw)
    return findings_impression(raw)
