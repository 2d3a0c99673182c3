"""Reader for IU-Xray (Open-i Indiana University chest X-ray collection), in its two common forms.

1. NLMCXR: one XML report per study (``ecgen-radiology/*.xml``; ``<AbstractText Label="FINDINGS">``,
   ``<parentImage id="CXR1_1_IM-0001-3001">``, ``<MeSH><major>``) + PNGs named ``<parentImage id>.png``
   anywhere under ROOT.
2. Kaggle CSVs: ``indiana_reports.csv`` (uid, MeSH, Problems, findings, impression, ...) and
   ``indiana_projections.csv`` (uid, filename, projection) + images named ``filename`` under ROOT.

IU-Xray has no patient identifier: each report (``uid``) counts as one patient and one study. Labels
come from the MeSH / Problems terms (positives listed; covered findings not listed are 0).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from unicxr.data.sources.common import (
    ReadStats,
    Record,
    SourceOptions,
    blank_labels,
    compose_report,
    index_files,
    labels_from_names,
    normalize_view,
    read_table,
)
from unicxr.utils import UnicxrError

__all__ = ["NAME", "read", "iu_labels", "parse_report_xml"]

NAME = "iu-xray"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
_MAX_XML_BYTES = 10 * 1024 * 1024

# (substring rules on a lower-case term, finding) — first term component is the MeSH heading,
# qualifiers follow after "/" (e.g. "Pulmonary Atelectasis/base/left/mild").
_TERM_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("cardiomegaly",), "Cardiomegaly"),
    (("pleural effusion",), "Pleural Effusion"),
    (("pneumothorax",), "Pneumothorax"),
    (("atelectas",), "Atelectasis"),
    (("consolidation",), "Consolidation"),
    (("pneumonia",), "Pneumonia"),
    (("edema",), "Edema"),
    (("opacity",), "Lung Opacity"),
    (("infiltrat",), "Lung Opacity"),
    (("airspace disease",), "Lung Opacity"),
    (("nodule",), "Lung Lesion"),
    (("mass",), "Lung Lesion"),
    (("neoplasm",), "Lung Lesion"),
    (("fracture",), "Fracture"),
    (("catheter",), "Support Devices"),
    (("medical device",), "Support Devices"),
    (("pacemaker",), "Support Devices"),
    (("tube, inserted",), "Support Devices"),
    (("stent",), "Support Devices"),
    (("surgical instrument",), "Support Devices"),
    (("pleura", "thicken"), "Pleural Other"),
    (("mediastinum", "enlarged"), "Enlarged Cardiomediastinum"),
    (("mediastinum", "wide"), "Enlarged Cardiomediastinum"),
    (("cardiomediastinal", "enlarged"), "Enlarged Cardiomediastinum"),
)
_COVERED = tuple(sorted({f for _, f in _TERM_RULES}))


def iu_labels(terms: Iterable[str]) -> np.ndarray:
    """Labels (14,) from IU MeSH/Problems terms (``"normal"``, ``"Cardiomegaly/borderline"``, ...).

    Returns all-NaN when no term is given.
    """
    terms = [t.strip() for t in terms if t and t.strip()]
    if not terms:
        return blank_labels()
    names: list[str] = []
    mapping: dict[str, tuple[str, ...]] = {}
    for term in terms:
        low = term.lower()
        if low.split("/")[0].strip() in ("normal", "no indexing"):
            names.append("normal" if low.startswith("normal") else "")
            continue
        hits = tuple(f for needles, f in _TERM_RULES if all(n in low for n in needles))
        names.append(low)
        mapping[low] = hits
    if all(n == "" for n in names):  # "No Indexing" only: nothing known
        return blank_labels()
    return labels_from_names(names, mapping, _COVERED)


def parse_report_xml(path: Path) -> dict[str, object]:
    """Parse one NLMCXR XML file → ``{"uid", "sections" (label → text), "images" (ids), "terms"}``.

    Raises:
        ValueError: the file is not a parsable report.
    """
    if path.stat().st_size > _MAX_XML_BYTES:
        raise ValueError("XML file too large")
    root = ElementTree.parse(path).getroot()
    uid_el = root.find(".//uId")
    uid = (uid_el.get("id") if uid_el is not None else None) or path.stem
    sections: dict[str, str] = {}
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().lower()
        text = "".join(el.itertext()).strip()
        if label:
            sections[label] = f"{sections.get(label, '')} {text}".strip()
    images = [el.get("id", "").strip() for el in root.iter("parentImage") if el.get("id")]
    terms = [(el.text or "").strip() for el in root.findall(".//MeSH/major")]
    return {"uid": uid, "sections": sections, "images": images, "terms": terms}


def _split_terms(cell: str) -> list[str]:
    return [t for t in re.split(r";", cell or "") if t.strip()]


def _read_xml_form(root: Path, xmls: list[Path], options: SourceOptions, stats: ReadStats) -> Iterator[Record]:
    images = index_files(root, _IMAGE_SUFFIXES)
    by_stem: dict[str, Path] = {}
    for name, p in images.items():
        stem = name.rsplit(".", 1)[0]
        by_stem.setdefault(stem, p)
        if stem.endswith(".dcm"):
            by_stem.setdefault(stem[:-4], p)
    bad = 0
    for xml in xmls:
        try:
            rep = parse_report_xml(xml)
        except (ElementTree.ParseError, ValueError, OSError):
            bad += 1
            continue
        uid = str(rep["uid"])
        report = compose_report(rep["sections"], options.report_text)  # type: ignore[arg-type]
        labels = iu_labels(rep["terms"])  # type: ignore[arg-type]
        for image_id in rep["images"]:  # type: ignore[union-attr]
            stats.listed += 1
            path = by_stem.get(image_id)
            if path is None:
                stats.missing_files += 1
                continue
            yield Record(
                path=str(path.resolve()),
                patient_id=uid,
                study_id=uid,
                view="",
                split=None,
                report=report,
                labels=labels.copy(),
                source=NAME,
                meta={"image_id": image_id, "mesh": ";".join(rep["terms"])},  # type: ignore[arg-type]
            )
    if bad:
        stats.note(f"{bad} unreadable XML report files skipped")


def _read_csv_form(root: Path, reports_csv: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Record]:
    proj_csv = next((p for p in sorted(root.rglob("indiana_projections.csv*")) if p.is_file()), None)
    if proj_csv is None:
        raise UnicxrError(f"{reports_csv}: found, but indiana_projections.csv (uid, filename, projection) is missing")
    reports: dict[str, dict[str, str]] = {}
    for row in read_table(reports_csv):
        reports[row.get("uid", "").strip()] = row
    images = index_files(root, _IMAGE_SUFFIXES)
    for row in read_table(proj_csv):
        stats.listed += 1
        uid = row.get("uid", "").strip()
        name = row.get("filename", "").strip()
        path = images.get(name) or images.get(Path(name).name)
        if path is None:
            stats.missing_files += 1
            continue
        rep = reports.get(uid, {})
        sections = {
            k: rep.get(k, "") for k in ("comparison", "indication", "findings", "impression") if rep.get(k, "").strip()
        }
        terms = _split_terms(rep.get("Problems", "")) or _split_terms(rep.get("MeSH", ""))
        yield Record(
            path=str(path.resolve()),
            patient_id=uid,
            study_id=uid,
            view=normalize_view(row.get("projection", "")),
            split=None,
            report=compose_report(sections, options.report_text),
            labels=iu_labels(terms),
            source=NAME,
            meta={"image_id": name, "mesh": rep.get("MeSH", "").strip()},
        )


def read(root: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Record]:
    """Yield one :class:`Record` per image referenced by a report (XML or CSV form)."""
    reports_csv = next((p for p in sorted(root.rglob("indiana_reports.csv*")) if p.is_file()), None)
    if reports_csv is not None:
        yield from _read_csv_form(root, reports_csv, options, stats)
        return
    xmls = sorted(p for p in root.rglob("*.xml") if p.is_file())
    if not xmls:
        raise UnicxrError(
            f"{root}: no IU-Xray reports (expected NLMCXR *.xml reports or indiana_reports.csv + indiana_projections.csv)"
        )
    yield from _read_xml_form(root, xmls, options, stats)
