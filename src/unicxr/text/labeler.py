"""Rule-based CheXpert-style report labeler: report text → 14 labels (1 / 0 / -1 / NaN).

Pipeline for one report:

1. section selection (:func:`select_section`, through :mod:`unicxr.data.reports`): by default the
   content sections (findings, impression, header-less text); indication/history/comparison/technique
   are dropped because they state the question ("r/o pneumonia"), not the answer;
2. normalisation (:func:`unicxr.text.negation.normalize`), clause and sentence boundaries, cues;
3. mentions from the lexicon (:mod:`unicxr.text.lexicon`), each valued by its cues (or fixed for
   normal statements such as "heart size is normal");
4. CheXpert aggregation per finding over its mentions: positive beats uncertain beats negative;
   nothing mentioned stays blank (NaN);
5. ``No Finding`` by CheXpert's rule (:func:`unicxr.labels.no_finding_value`). An empty report has
   all 14 labels blank.

Output convention (:class:`unicxr.labels.LabelConvention`): by default the CheXpert labeler's own —
a finding that is not mentioned stays blank ("the lungs are clear" leaves Lung Opacity,
Consolidation and Pneumonia blank) and ``No Finding`` is 1 or blank. ``convention="unicxr"`` gives
the earlier output: "the lungs are clear" negates those three and ``No Finding`` is 1 or 0.

Work per report is linear in its length (bounded regex gaps, prefiltered patterns) and each report
is capped at :data:`MAX_CHARS` characters.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from unicxr.labels import FINDINGS, NUM_FINDINGS, LabelConvention, no_finding_value
from unicxr.text.lexicon import compile_finding_patterns
from unicxr.text.negation import find_cues, mention_value, normalize

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "Section",
    "Mention",
    "RuleLabeler",
    "select_section",
    "label_report",
    "label_reports",
    "label_dataframe",
    "label_csv",
    "MAX_CHARS",
]

MAX_CHARS = 100_000  # characters of one report that are labelled (the rest is ignored)
_SD = FINDINGS.index("Support Devices")
_RANK = {1.0: 3, -1.0: 2, 0.0: 1}


class Section(str, Enum):
    """Which part of a report is labelled."""

    FULL = "full"  # all content sections (findings, impression, unnamed body); meta sections dropped
    IMPRESSION = "impression"  # impression only (falls back to FULL when there is none)
    FINDINGS_IMPRESSION = "findings_impression"  # findings + impression (falls back to FULL)
    RAW = "raw"  # the whole text as it is, no section handling


def select_section(text: str, section: Section | str = Section.FULL) -> str:
    """Return the part of ``text`` to label.

    Args:
        text: raw report text.
        section: see :class:`Section`.

    Returns:
        The selected text ('' for empty input). Sections are joined with ``" . "`` so that cues never
        cross them.
    """
    section = Section(section)
    if not isinstance(text, str) or not text.strip():
        return ""
    if section is Section.RAW or ":" not in text:
        return text  # no header can be present without a colon
    from unicxr.data.reports import META_SECTIONS, split_sections

    sections = split_sections(text)
    if not sections:
        return ""
    if section is Section.IMPRESSION and sections.get("impression"):
        return sections["impression"]
    if section is Section.FINDINGS_IMPRESSION:
        parts = [sections.get("findings", ""), sections.get("impression", "")]
        if any(parts):
            return " . ".join(p for p in parts if p)
    content = [v for k, v in sections.items() if k not in META_SECTIONS and v]
    return " . ".join(content)


class Mention:
    """One mention found in a normalised text (for debugging and tests)."""

    __slots__ = ("finding", "start", "end", "kind", "value", "text")

    def __init__(self, finding: str, start: int, end: int, kind: str, value: float, text: str) -> None:
        self.finding, self.start, self.end, self.kind, self.value, self.text = finding, start, end, kind, value, text

    def __repr__(self) -> str:
        return f"Mention({self.finding!r}, {self.text!r}, kind={self.kind}, value={self.value:g})"


class RuleLabeler:
    """The rule-based labeler. Stateless after construction; safe to share between threads.

    Args:
        section: default section to label (:class:`Section`).
        max_chars: cap on the characters of one report that are processed.
        convention: output convention (:class:`unicxr.labels.LabelConvention`): ``chexpert``
            (default) or ``unicxr``.
    """

    def __init__(
        self, section: Section | str = Section.FULL, max_chars: int = MAX_CHARS,
        convention: LabelConvention | str = LabelConvention.CHEXPERT,
    ) -> None:
        self.section = Section(section)
        self.max_chars = int(max_chars)
        self.convention = LabelConvention(convention)
        self._patterns = compile_finding_patterns(clear_lungs=self.convention is LabelConvention.UNICXR)

    # ------------------------------------------------------------------ core
    def mentions(self, text: str, *, normalized: bool = False) -> list[Mention]:
        """All mentions in ``text`` (no section selection) with their values, in text order.

        Args:
            text: report text (raw, or already normalised with ``normalized=True``).

        Returns:
            Mentions sorted by start offset; weak mentions overridden by an ordinary mention of the
            same finding in the same sentence are left out.
        """
        t = text if normalized else normalize(text[: self.max_chars])
        if not t:
            return []
        raw: list[tuple[int, int, int, str, str]] = []  # start, end, finding, kind, text
        for fi, pat, keys, kinds in self._patterns:
            if not any(k in t for k in keys):
                continue
            for m in pat.finditer(t):
                raw.append((m.start() + 1, m.end(), fi, kinds[m.lastgroup or ""], m.group(0)[1:]))
        if not raw:
            return []
        raw.sort()
        scope = find_cues(t)
        starts = [r[0] for r in raw]
        # sentences that hold an ordinary mention of a finding (weak mentions defer to them)
        strong_sent = {(r[2], scope.sentence(r[0])) for r in raw if r[3] != "w"}
        out: list[Mention] = []
        for i, (s, e, fi, kind, txt) in enumerate(raw):
            if kind == "n":
                value = 0.0
            elif kind == "u":
                value = -1.0
            else:
                if kind == "w" and ((fi, scope.sentence(s)) in strong_sent or self._explained(scope, raw, i)):
                    continue
                nxt = next((starts[j] for j in range(i + 1, min(i + 9, len(raw))) if starts[j] >= e), None)
                value = mention_value(scope, s, e, fi == _SD, nxt)
                if value != value:  # NaN: history, not a finding of this study
                    continue
            out.append(Mention(FINDINGS[fi], s, e, kind, value, txt))
        return out

    @staticmethod
    def _explained(scope, raw: list[tuple[int, int, int, str, str]], i: int) -> bool:
        """Whether weak mention ``i`` is explained as another finding ("blunting ... likely reflects
        pleural thickening"): a hedge/etiology cue after it, then an ordinary mention in the same clause."""
        s, e = raw[i][0], raw[i][1]
        clause = scope.clause(s)
        cues = [c for c in scope.cues_near(s, e) if c.kind == "upre" and c.start >= e]
        if not cues:
            return False
        first = min(c.end for c in cues)
        for r in raw[i + 1 : i + 9]:  # the explaining mention follows closely
            if r[3] != "w" and r[0] >= first and scope.clause(r[0]) == clause:
                return True
        return False

    def label_text(self, text: str) -> np.ndarray:
        """Label already-selected text (no section handling).

        Returns:
            float32 array (14,) in :data:`unicxr.labels.FINDINGS` order (NaN = not mentioned).
        """
        out = np.full(NUM_FINDINGS, np.nan, dtype=np.float32)
        if not isinstance(text, str) or not text.strip():
            return out
        best = [0] * NUM_FINDINGS
        for m in self.mentions(text):
            fi = FINDINGS.index(m.finding)
            r = _RANK[m.value]
            if r > best[fi]:
                best[fi] = r
                out[fi] = m.value
        out[0] = no_finding_value(out, self.convention)
        return out

    def __call__(self, text: str, section: Section | str | None = None) -> np.ndarray:
        """Label one report (section selection, then :meth:`label_text`). Non-strings give all NaN."""
        if not isinstance(text, str):
            return np.full(NUM_FINDINGS, np.nan, dtype=np.float32)
        sel = select_section(text[: self.max_chars], self.section if section is None else section)
        return self.label_text(sel)

    def label_many(
        self, texts: Iterable[object], section: Section | str | None = None, progress: bool = False,
        total: int | None = None,
    ) -> np.ndarray:
        """Label many reports.

        Args:
            texts: iterable of report strings (non-strings and NaN give all-blank rows).
            section: overrides the labeler's default section.
            progress: show a tqdm progress bar.
            total: length hint for the progress bar.

        Returns:
            float32 array (N, 14).
        """
        it = texts
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(texts, total=total, desc="label", unit="report", mininterval=0.5)
        rows = [self(t if isinstance(t, str) else "", section) for t in it]
        if not rows:
            return np.zeros((0, NUM_FINDINGS), dtype=np.float32)
        return np.stack(rows).astype(np.float32)


_DEFAULT: dict[LabelConvention, RuleLabeler] = {}


def _default(convention: LabelConvention | str = LabelConvention.CHEXPERT) -> RuleLabeler:
    conv = LabelConvention(convention)
    lab = _DEFAULT.get(conv)
    if lab is None:
        lab = _DEFAULT[conv] = RuleLabeler(convention=conv)
    return lab


def label_report(
    text: str, section: Section | str = Section.FULL, convention: LabelConvention | str = LabelConvention.CHEXPERT
) -> np.ndarray:
    """Label one report with a default :class:`RuleLabeler` → float32 (14,)."""
    return _default(convention)(text, section)


def label_reports(
    texts: Sequence[object] | Iterable[object], section: Section | str = Section.FULL, progress: bool = False,
    convention: LabelConvention | str = LabelConvention.CHEXPERT,
) -> np.ndarray:
    """Label a list of reports → float32 array (N, 14) in ``FINDINGS`` order (NaN = blank)."""
    total = len(texts) if hasattr(texts, "__len__") else None  # type: ignore[arg-type]
    return _default(convention).label_many(texts, section, progress=progress, total=total)


def label_dataframe(
    df: pd.DataFrame, text_column: str, section: Section | str = Section.FULL, progress: bool = False,
    convention: LabelConvention | str = LabelConvention.CHEXPERT,
) -> pd.DataFrame:
    """Return a copy of ``df`` with the 14 label columns (float, NaN = blank) set from ``text_column``.

    Existing columns named like a finding are replaced (a warning-free overwrite: the labeler owns them).
    """
    from unicxr.utils import UnicxrError

    if text_column not in df.columns:
        raise UnicxrError(
            f"text column {text_column!r} not found; available columns: {', '.join(map(str, df.columns))}"
        )
    labels = label_reports(df[text_column].tolist(), section, progress=progress, convention=convention)
    out = df.copy()
    for i, name in enumerate(FINDINGS):
        out[name] = labels[:, i]
    return out


def label_csv(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    text_column: str,
    section: Section | str = Section.FULL,
    progress: bool = True,
    convention: LabelConvention | str = LabelConvention.CHEXPERT,
) -> int:
    """Read a CSV, label ``text_column``, write IN's columns + the 14 label columns atomically.

    Labels are written as ``1``, ``0``, ``-1`` or empty. Returns the number of rows.
    """
    import pandas as pd

    from unicxr.labels import format_label
    from unicxr.utils import UnicxrError, atomic_write

    try:
        df = pd.read_csv(in_path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise UnicxrError(f"{in_path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UnicxrError(f"{in_path}: cannot read CSV: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if text_column not in df.columns:
        raise UnicxrError(
            f"{in_path}: text column {text_column!r} not found; columns are: {', '.join(map(str, df.columns))}"
        )
    out = label_dataframe(df, text_column, section, progress=progress, convention=convention)
    for name in FINDINGS:
        out[name] = [format_label(float(v)) for v in out[name]]
    with atomic_write(out_path, "w", encoding="utf-8", newline="") as fh:
        out.to_csv(fh, index=False)
    return len(out)
