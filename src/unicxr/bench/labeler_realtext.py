"""Labeler benchmark on real report language: IU-Xray (OpenI) reports scored against MeSH indexing.

``python -m unicxr.bench.labeler_realtext --reports NLMCXR_reports.tgz --ids even`` reads the
NLMCXR XML reports (the ``.tgz`` archive, or a folder of ``*.xml``), keeps the reports whose numeric
id has the requested parity (``even`` is the development split, ``odd`` the held-out split; members of
the other parity are skipped by name before they are read), labels FINDINGS + IMPRESSION with the
rule labeler and with a naive keyword + negation matcher (:func:`naive_label`, implemented here so the
gain is always visible), and scores both against the radiologists' MeSH indexing.

Reference labels (:func:`mesh_reference`) come from the ``<MeSH><major>`` terms. A term is
``Heading/qualifier/...``; its heading (the part before the first ``/``) is mapped by
:data:`MESH_TO_FINDING`:

=========================  =======================================================================
finding                    MeSH headings
=========================  =======================================================================
Cardiomegaly               Cardiomegaly
Pleural Effusion           Pleural Effusion
Atelectasis                Pulmonary Atelectasis, Atelectasis
Pneumothorax               Pneumothorax, Hydropneumothorax (also Pleural Effusion)
Edema                      Pulmonary Edema, Edema, Pulmonary Congestion, Heart Failure
Pneumonia                  Pneumonia
Consolidation              Consolidation
Fracture                   Fractures, Bone; Rib Fractures; Fractures, Compression; Spinal Fractures
Lung Lesion                Nodule, Mass, Cavitation, Lung Neoplasms, Neoplasm Metastasis, Multiple Pulmonary
                           Nodules, Solitary Pulmonary Nodule
Lung Opacity               Opacity, Infiltrate, Airspace Disease, Pulmonary Infiltrate
=========================  =======================================================================

A listed term is present (1) whatever its qualifiers, except that a term qualified ``borderline``
(``Cardiomegaly/borderline``) is the indexers' own uncertain label (-1): the uncertainty policy
binarises it exactly as it binarises the labelers' uncertain labels (absent under
``uncertain_as_negative``, present under ``uncertain_as_positive``), and an unqualified term of the
same finding wins over it. A finding whose heading is not listed is absent (0). Reports indexed ``No
Indexing`` or without FINDINGS/IMPRESSION text are skipped. ``No Finding`` is derived from the
reference by CheXpert's rule (1 when none of the 10 findings is present; the MeSH ``normal`` term is
not needed). Granulomas, calcified nodules, scarring, emphysema, etc. are not mapped (CheXpert does
not count them as these findings either).

Predictions are binarised with blank → 0 and uncertain → 0 (``uncertain_as_negative``) or 1
(``uncertain_as_positive``). The output is micro-F1 over the 10 findings and a per-finding table for
both labelers under both policies, plus labeling throughput (reports per CPU second).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from unicxr.labels import FINDINGS, NUM_FINDINGS, UncertainPolicy, apply_policy

__all__ = [
    "IUReport",
    "MESH_TO_FINDING",
    "SCORED",
    "iter_iu_reports",
    "mesh_reference",
    "naive_label",
    "score",
    "main",
]

# The 10 findings the MeSH indexing can support (acceptance scoring set).
SCORED: tuple[str, ...] = (
    "Cardiomegaly", "Pleural Effusion", "Atelectasis", "Pneumothorax", "Edema",
    "Pneumonia", "Consolidation", "Fracture", "Lung Lesion", "Lung Opacity",
)
MESH_TO_FINDING: dict[str, str | tuple[str, ...]] = {
    "cardiomegaly": "Cardiomegaly",
    "pleural effusion": "Pleural Effusion",
    "pulmonary atelectasis": "Atelectasis",
    "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "hydropneumothorax": ("Pneumothorax", "Pleural Effusion"),
    "pulmonary edema": "Edema",
    "edema": "Edema",
    "pulmonary congestion": "Edema",
    "heart failure": "Edema",
    "pneumonia": "Pneumonia",
    "consolidation": "Consolidation",
    "fractures, bone": "Fracture",
    "rib fractures": "Fracture",
    "fractures, compression": "Fracture",
    "spinal fractures": "Fracture",
    "nodule": "Lung Lesion",
    "cavitation": "Lung Lesion",
    "mass": "Lung Lesion",
    "lung neoplasms": "Lung Lesion",
    "neoplasm metastasis": "Lung Lesion",
    "multiple pulmonary nodules": "Lung Lesion",
    "solitary pulmonary nodule": "Lung Lesion",
    "opacity": "Lung Opacity",
    "infiltrate": "Lung Opacity",
    "pulmonary infiltrate": "Lung Opacity",
    "airspace disease": "Lung Opacity",
}
_MEMBER = re.compile(r"(?:^|/)(\d+)\.xml$")
_MAX_XML_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class IUReport:
    """One IU-Xray report: numeric id, FINDINGS and IMPRESSION text, MeSH major terms."""

    id: int
    findings: str
    impression: str
    terms: tuple[str, ...]

    @property
    def text(self) -> str:
        """The labelled text: ``FINDINGS: ... IMPRESSION: ...`` (either part alone when the other is empty)."""
        parts = [f"{h}: {t}" for h, t in (("FINDINGS", self.findings), ("IMPRESSION", self.impression)) if t]
        return " ".join(parts)


def _parse(data: bytes, rid: int) -> IUReport:
    root = ElementTree.fromstring(data)
    sections: dict[str, str] = {}
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().lower()
        sections[label] = " ".join(f"{sections.get(label, '')} {''.join(el.itertext())}".split())
    terms = tuple((el.text or "").strip() for el in root.findall(".//MeSH/major") if (el.text or "").strip())
    return IUReport(rid, sections.get("findings", ""), sections.get("impression", ""), terms)


def _wanted(rid: int, ids: str) -> bool:
    return ids == "all" or (rid % 2 == 0) == (ids == "even")


def iter_iu_reports(path: str | Path, ids: str = "even") -> Iterator[IUReport]:
    """Yield the IU-Xray reports of one id parity, in id order.

    Args:
        path: ``NLMCXR_reports.tgz`` (as shipped in the torchxrayvision wheel) or a folder of
            ``<id>.xml`` files.
        ids: ``even``, ``odd`` or ``all``. Files of the other parity are skipped by name, unread.

    Raises:
        ValueError: unknown ``ids``; FileNotFoundError: ``path`` does not exist.
    """
    if ids not in ("even", "odd", "all"):
        raise ValueError(f"ids must be even, odd or all, not {ids!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    found: list[IUReport] = []
    if path.is_dir():
        for p in path.rglob("*.xml"):
            m = _MEMBER.search(p.as_posix())
            if m and _wanted(int(m.group(1)), ids) and p.stat().st_size <= _MAX_XML_BYTES:
                found.append(_parse(p.read_bytes(), int(m.group(1))))
    else:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                m = _MEMBER.search(member.name)
                if not (member.isfile() and m and _wanted(int(m.group(1)), ids)) or member.size > _MAX_XML_BYTES:
                    continue
                fh = tar.extractfile(member)
                if fh is not None:
                    found.append(_parse(fh.read(), int(m.group(1))))
    yield from sorted(found, key=lambda r: r.id)


def mesh_reference(terms: Sequence[str]) -> np.ndarray | None:
    """Reference labels (14,) from MeSH major terms; ``None`` for ``No Indexing`` / no terms.

    The 10 :data:`SCORED` findings are 1 (a mapped heading is listed), -1 (listed only with the
    ``borderline`` qualifier) or 0; the others are NaN; ``No Finding`` is 1 when none of the 10 is
    present or borderline, else 0.
    """
    heads = [t.split("/")[0].strip().lower() for t in terms if t.strip()]
    if not heads or all(h == "no indexing" for h in heads):
        return None
    out = np.full(NUM_FINDINGS, np.nan, dtype=np.float32)
    for name in SCORED:
        out[FINDINGS.index(name)] = 0.0
    for term in terms:
        parts = [x.strip().lower() for x in term.split("/")]
        hit = MESH_TO_FINDING.get(parts[0])
        if hit is None:
            continue
        value = -1.0 if "borderline" in parts[1:] else 1.0
        for name in (hit,) if isinstance(hit, str) else hit:
            i = FINDINGS.index(name)
            out[i] = max(out[i], value) if out[i] != 0 else value  # positive beats borderline
    out[0] = 0.0 if np.any(out[1:] == 1.0) or np.any(out[1:] == -1.0) else 1.0
    return out


# --------------------------------------------------------------------------- naive baseline
_NAIVE_KEYS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("cardiomegaly", "enlarged heart", "heart is enlarged", "heart size is enlarged"),
    "Pleural Effusion": ("effusion",),
    "Atelectasis": ("atelecta",),
    "Pneumothorax": ("pneumothora",),
    "Edema": ("edema", "chf", "heart failure"),
    "Pneumonia": ("pneumonia",),
    "Consolidation": ("consolidat",),
    "Fracture": ("fracture",),
    "Lung Lesion": ("nodule", "mass", "lesion", "tumor", "neoplasm"),
    "Lung Opacity": ("opacit", "infiltrat", "airspace disease"),
}
_NAIVE_NEG = re.compile(r"\b(?:no|not|without|negative for|free of|resolved)\b")
_NAIVE_UNC = re.compile(r"\b(?:may|might|possible|possibly|probable|likely|suspected|questionable|versus|cannot be excluded)\b")


def naive_label(text: str) -> np.ndarray:
    """A deliberately simple keyword + negation labeler (the baseline of this bench).

    Per sentence and keyword: negative when a negation word precedes the keyword in the sentence,
    uncertain when a hedge word is anywhere in the sentence, else positive; positive beats uncertain
    beats negative across sentences. Returns (14,) with only the 10 :data:`SCORED` findings set.
    """
    out = np.full(NUM_FINDINGS, np.nan, dtype=np.float32)
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    for sent in re.split(r"[.;\n]", text.lower()):
        for name, keys in _NAIVE_KEYS.items():
            pos = min((i for i in (sent.find(k) for k in keys) if i >= 0), default=-1)
            if pos < 0:
                continue
            v = 0.0 if _NAIVE_NEG.search(sent[:pos]) else (-1.0 if _NAIVE_UNC.search(sent) else 1.0)
            i = FINDINGS.index(name)
            if np.isnan(out[i]) or rank[v] > rank[float(out[i])]:
                out[i] = v
    return out


# --------------------------------------------------------------------------- scoring
def score(pred: np.ndarray, ref: np.ndarray, policy: UncertainPolicy | str, findings: Sequence[str] = SCORED) -> dict:
    """Per-finding and micro precision/recall/F1 of binarised predictions against binary references.

    Args:
        pred: (N, 14) labels (1/0/-1/NaN).
        ref: (N, 14) reference (1/0/-1 on ``findings``).
        policy: how an uncertain label (prediction or reference) is binarised (blank is always 0).
        findings: the findings scored.

    Returns:
        ``{"micro": {...}, "per_finding": {name: {...}}}`` with tp, fp, fn, support, precision,
        recall, f1.
    """
    p = apply_policy(pred, policy, blank_as_negative=True)
    r = apply_policy(ref, policy, blank_as_negative=True)

    def prf(pp: np.ndarray, rr: np.ndarray) -> dict:
        tp = int(np.sum((pp == 1) & (rr == 1)))
        fp = int(np.sum((pp == 1) & (rr == 0)))
        fn = int(np.sum((pp == 0) & (rr == 1)))
        prec = tp / (tp + fp) if tp + fp else float("nan")
        rec = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        return {"tp": tp, "fp": fp, "fn": fn, "support": tp + fn, "precision": prec, "recall": rec, "f1": f1}

    idx = [FINDINGS.index(f) for f in findings]
    per = {f: prf(p[:, i], r[:, i]) for f, i in zip(findings, idx, strict=True)}
    return {"micro": prf(p[:, idx].ravel(), r[:, idx].ravel()), "per_finding": per}


def _table(results: dict[str, dict], policy: str) -> str:
    names = list(results)
    head = "| finding | support | " + " | ".join(f"{n} P / R / F1" for n in names) + " |"
    lines = [head, "|" + "---|" * (2 + len(names))]
    first = results[names[0]][policy]
    for f in [*first["per_finding"], "micro"]:
        cells = []
        for n in names:
            res = results[n][policy]
            s = res["micro"] if f == "micro" else res["per_finding"][f]
            cells.append(f"{s['precision']:.3f} / {s['recall']:.3f} / **{s['f1']:.3f}**")
        sup = first["micro"]["support"] if f == "micro" else first["per_finding"][f]["support"]
        lines.append(f"| {'micro (10)' if f == 'micro' else f} | {sup} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m unicxr.bench.labeler_realtext", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", required=True, help="NLMCXR_reports.tgz or a folder of IU-Xray <id>.xml reports")
    ap.add_argument("--ids", choices=("even", "odd", "all"), default="even",
                    help="id parity: even = development split, odd = held-out split")
    ap.add_argument("--convention", default="chexpert", help="labeler output convention (chexpert or unicxr)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)

    from unicxr.text.labeler import RuleLabeler

    try:
        reports = list(iter_iu_reports(args.reports, args.ids))
    except (FileNotFoundError, tarfile.TarError, ElementTree.ParseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kept = [(r, ref) for r in reports if r.text for ref in [mesh_reference(r.terms)] if ref is not None]
    if not kept:
        print("error: no indexed report with text found", file=sys.stderr)
        return 2
    texts = [r.text for r, _ in kept]
    ref = np.stack([x for _, x in kept])
    labeler = RuleLabeler(convention=args.convention)
    c0 = time.process_time()
    ours = labeler.label_many(texts)
    rate = len(texts) / max(time.process_time() - c0, 1e-9)
    naive = np.stack([naive_label(t) for t in texts])
    results = {
        name: {pol.value: score(pred, ref, pol) for pol in (UncertainPolicy.AS_NEGATIVE, UncertainPolicy.AS_POSITIVE)}
        for name, pred in (("unicxr", ours), ("naive", naive))
    }
    print(f"IU-Xray {args.ids} ids: {len(reports)} reports read, {len(kept)} indexed with text; "
          f"labeler {rate:.0f} reports/CPU-s")
    for pol in (UncertainPolicy.AS_NEGATIVE.value, UncertainPolicy.AS_POSITIVE.value):
        u, n = results["unicxr"][pol]["micro"]["f1"], results["naive"][pol]["micro"]["f1"]
        print(f"\n### {pol}: micro-F1 unicxr {u:.4f}  naive {n:.4f}  (gain {u - n:+.4f})\n")
        print(_table(results, pol))
    if args.json is not None:
        args.json.write_text(json.dumps({"ids": args.ids, "n": len(kept), "reports_per_cpu_s": rate,
                                         "results": results}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
