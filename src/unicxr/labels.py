"""The one label convention used everywhere in unicxr.

The 14 CheXpert findings in a fixed order (:data:`FINDINGS`). Values: ``1`` positive, ``0`` negative,
``-1`` uncertain, blank (NaN in arrays) = not mentioned. :data:`CE5` is the 5-finding subset used by
clinical-efficacy metrics. CSV column names are exactly these names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum

import numpy as np

__all__ = [
    "FINDINGS",
    "CE5",
    "NUM_FINDINGS",
    "POSITIVE",
    "NEGATIVE",
    "UNCERTAIN",
    "UncertainPolicy",
    "finding_index",
    "parse_label",
    "parse_labels",
    "labels_from_row",
    "apply_policy",
    "format_label",
    "parse_findings_list",
    "no_finding_value",
    "LabelConvention",
]

FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NUM_FINDINGS = len(FINDINGS)
CE5: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

POSITIVE = 1.0
NEGATIVE = 0.0
UNCERTAIN = -1.0

_INDEX = {name: i for i, name in enumerate(FINDINGS)}
_LOWER = {name.lower(): name for name in FINDINGS}


class LabelConvention(str, Enum):
    """How a labeler writes findings it cannot affirm (see :func:`no_finding_value`).

    * ``chexpert`` — the CheXpert labeler's output: a finding is blank unless it is mentioned
      ("the lungs are clear" mentions none of Lung Opacity, Consolidation, Pneumonia), and
      ``No Finding`` is 1 or blank, never 0;
    * ``unicxr`` — the earlier unicxr labeler output: "the lungs are clear" negates the airspace
      opacity family and ``No Finding`` is 1 or 0.
    """

    CHEXPERT = "chexpert"
    UNICXR = "unicxr"


class UncertainPolicy(str, Enum):
    """How an uncertain (-1) label is turned into a binary target."""

    AS_NEGATIVE = "uncertain_as_negative"  # U-Zeros
    AS_POSITIVE = "uncertain_as_positive"  # U-Ones
    IGNORE = "ignore"  # uncertain becomes NaN (masked out)


def finding_index(name: str) -> int:
    """Index of a finding in :data:`FINDINGS` (case-insensitive); ``KeyError`` naming it if unknown."""
    canon = _LOWER.get(name.strip().lower())
    if canon is None:
        raise KeyError(f"unknown finding {name!r}; expected one of: {', '.join(FINDINGS)}")
    return _INDEX[canon]


def parse_label(cell: object) -> float:
    """Parse one CSV cell into ``1.0``, ``0.0``, ``-1.0`` or NaN (blank / not mentioned).

    Accepts ``1``, ``0``, ``-1``, ``1.0``, ``-1.0``, ``''``, ``None``, NaN, booleans and numpy scalars.
    Raises ``ValueError`` for anything else (e.g. ``2`` or ``"yes"``).
    """
    if cell is None:
        return math.nan
    if isinstance(cell, (bool, np.bool_)):
        return 1.0 if cell else 0.0
    if isinstance(cell, (int, float, np.integer, np.floating)):
        value = float(cell)
        if math.isnan(value):
            return math.nan
    else:
        text = str(cell).strip()
        if text == "" or text.lower() in {"nan", "none", "null"}:
            return math.nan
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"label value {cell!r} is not one of 1, 0, -1 or blank") from None
    if value not in (1.0, 0.0, -1.0):
        raise ValueError(f"label value {cell!r} is not one of 1, 0, -1 or blank")
    return value


def parse_labels(cells: Sequence[object]) -> np.ndarray:
    """Parse 14 cells (in :data:`FINDINGS` order) into a float32 array of shape (14,)."""
    if len(cells) != NUM_FINDINGS:
        raise ValueError(f"expected {NUM_FINDINGS} label cells, got {len(cells)}")
    return np.array([parse_label(c) for c in cells], dtype=np.float32)


def labels_from_row(row: Mapping[str, object], *, strict: bool = False) -> np.ndarray:
    """Read the 14 label columns from a mapping (e.g. a CSV row); missing columns are NaN.

    With ``strict=True`` a missing column raises ``KeyError`` naming it.
    """
    out = np.full(NUM_FINDINGS, np.nan, dtype=np.float32)
    for i, name in enumerate(FINDINGS):
        if name in row:
            try:
                out[i] = parse_label(row[name])
            except ValueError as exc:
                raise ValueError(f"column {name!r}: {exc}") from None
        elif strict:
            raise KeyError(f"missing label column {name!r}")
    return out


def apply_policy(labels: np.ndarray, policy: UncertainPolicy | str, *, blank_as_negative: bool = True) -> np.ndarray:
    """Map labels (..., 14) with -1/NaN to binary float targets under an uncertainty policy.

    Blank (NaN, not mentioned) becomes 0 when ``blank_as_negative`` (CheXpert convention for CE
    metrics), otherwise stays NaN. Uncertain becomes 0, 1 or NaN according to ``policy``.
    """
    policy = UncertainPolicy(policy)
    arr = np.asarray(labels, dtype=np.float32).copy()
    if blank_as_negative:
        arr[np.isnan(arr)] = 0.0
    unc = arr == UNCERTAIN
    if policy is UncertainPolicy.AS_NEGATIVE:
        arr[unc] = 0.0
    elif policy is UncertainPolicy.AS_POSITIVE:
        arr[unc] = 1.0
    else:
        arr[unc] = np.nan
    return arr


def format_label(value: float) -> str:
    """Format one label for CSV output: ``'1'``, ``'0'``, ``'-1'`` or ``''`` for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    v = float(value)
    if math.isnan(v):
        return ""
    return str(int(v))


def parse_findings_list(text: str | Iterable[str]) -> np.ndarray:
    """Parse ``"Cardiomegaly, Pleural Effusion"`` (or a list) into a (14,) array: listed → 1, rest → 0.

    ``No Finding`` is set to 1 only when nothing else is listed.
    """
    names = [t for t in (text.split(",") if isinstance(text, str) else text)]
    out = np.zeros(NUM_FINDINGS, dtype=np.float32)
    for name in names:
        if name.strip():
            out[finding_index(name)] = 1.0
    out[0] = no_finding_value(out)
    return out


def no_finding_value(labels: np.ndarray, convention: LabelConvention | str = LabelConvention.UNICXR) -> float:
    """CheXpert's No Finding rule: 1 when no finding other than Support Devices is positive or
    uncertain; otherwise 0 (``unicxr`` convention, the default: sources whose labels are complete
    lists, such as NIH or IU-Xray MeSH terms) or NaN (``chexpert`` convention: the labeler output and
    the phantom ground truth)."""
    arr = np.asarray(labels, dtype=np.float32)
    others = arr[1 : NUM_FINDINGS - 1]
    if np.any((others == POSITIVE) | (others == UNCERTAIN)):
        return math.nan if LabelConvention(convention) is LabelConvention.CHEXPERT else 0.0
    return 1.0
