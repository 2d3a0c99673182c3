"""Radiology report text: section extraction, de-identification cleanup, training text.

Handles the report styles found in the public chest X-ray data sets:

* MIMIC-CXR free text: a ``FINAL REPORT`` banner, upper-case headers with colons (``EXAMINATION:``,
  ``INDICATION:``, ``FINDINGS:``, ``IMPRESSION:``, odd ones such as ``PA AND LATERAL VIEWS OF THE
  CHEST:``), lines wrapped at ~70 characters with leading spaces, ``___`` de-identification markers.
* IU-Xray / Open-i: ``Findings: ...`` / ``Impression: ...`` in mixed case, ``XXXX`` markers.
* Header-less text (PadChest, user CSVs): returned as the ``body`` section.

All functions are pure string functions (no I/O) and never raise on odd input.
"""

from __future__ import annotations

import re

__all__ = [
    "CANONICAL_HEADERS",
    "META_SECTIONS",
    "canonical_header",
    "split_sections",
    "clean_report",
    "clean_whitespace",
    "findings_impression",
]

# alias (lower case, single spaces) -> canonical section name
CANONICAL_HEADERS: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findings and impression": "findings",
    "report": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "opinion": "impression",
    "indication": "indication",
    "indications": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "clinical indication": "indication",
    "history": "history",
    "clinical history": "history",
    "clinical information": "history",
    "clinical info": "history",
    "clinical data": "history",
    "clinical details": "history",
    "technique": "technique",
    "techniques": "technique",
    "procedure": "technique",
    "comparison": "comparison",
    "comparisons": "comparison",
    "comparison study": "comparison",
    "comparison studies": "comparison",
    "examination": "examination",
    "exam": "examination",
    "type of examination": "examination",
    "recommendation": "recommendation(s)",
    "recommendations": "recommendation(s)",
    "recommendation(s)": "recommendation(s)",
    "wet read": "wet read",
    "notification": "notification",
    "addendum": "addendum",
    "final report": "final report",
}

# Sections that describe the request or the acquisition, not the image content.
META_SECTIONS: frozenset[str] = frozenset(
    {
        "indication",
        "history",
        "technique",
        "comparison",
        "examination",
        "recommendation(s)",
        "wet read",
        "notification",
        "addendum",
        "final report",
    }
)

# Banner lines such as "FINAL REPORT" / "PRELIMINARY REPORT" that carry no content.
_BANNER = re.compile(r"^\s*(?:final|preliminary|amended|corrected)\s+report\s*$", re.IGNORECASE | re.MULTILINE)

# Known headers: any case, at the start of a line or after the end of a sentence.
_KNOWN_ALT = "|".join(
    sorted((re.escape(a).replace(r"\ ", r"\s+") for a in CANONICAL_HEADERS), key=len, reverse=True)
)
_KNOWN = re.compile(rf"\b(?P<name>{_KNOWN_ALT})[ \t]*:(?!\d)", re.IGNORECASE)
# Unknown headers: upper case words at the start of a line, ending with a colon
# (e.g. "PA AND LATERAL VIEWS OF THE CHEST:", "CHEST RADIOGRAPH:", "AP UPRIGHT PORTABLE CHEST:").
_UPPER = re.compile(r"(?m)^[ \t]*(?P<name>[A-Z][A-Z0-9 ,/&()'\-]{1,70}?[A-Z)])[ \t]*:(?!\d)")

_DEID_UNDERSCORE = re.compile(r"_{2,}")
_DEID_X = re.compile(r"\bX{2,}\b")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")
_REPEATED_PUNCT = re.compile(r"([.,;:])(?:\s*[.,;:])+")
_WS = re.compile(r"\s+")


def canonical_header(name: str) -> str:
    """Canonical lower-case section name for a header (``"IMPRESSIONS"`` -> ``"impression"``).

    Unknown headers come back lower-cased with single spaces (``"pa and lateral views of the chest"``).
    """
    key = _WS.sub(" ", name.strip().lower())
    return CANONICAL_HEADERS.get(key, key)


def clean_whitespace(text: str) -> str:
    """Collapse all runs of whitespace (newlines included) into single spaces and strip."""
    return _WS.sub(" ", text).strip()


def _is_upper_header(name: str) -> bool:
    letters = [c for c in name if c.isalpha()]
    # at least 3 letters, all upper case, and not a bare "AP"/"PA"-like token after "NOTE:" style noise
    return len(letters) >= 3 and all(c.isupper() for c in letters)


def _find_headers(text: str) -> list[tuple[int, int, str]]:
    """(start, end, canonical name) of every header in ``text``, in order, non-overlapping."""
    found: list[tuple[int, int, str]] = []
    for m in _KNOWN.finditer(text):
        raw = m.group("name")
        # mixed/lower case known headers only at the start of a line or of a sentence
        start = m.start("name")
        before = text[:start].rstrip(" \t")
        at_boundary = before == "" or before.endswith(("\n", ".", "!", "?", ";"))
        if raw.isupper() or at_boundary:
            found.append((start, m.end(), canonical_header(raw)))
    for m in _UPPER.finditer(text):
        raw = m.group("name")
        if not _is_upper_header(raw):
            continue
        start = m.start("name")
        if any(s <= start < e for s, e, _ in found):
            continue
        found.append((start, m.end(), canonical_header(raw)))
    found.sort()
    out: list[tuple[int, int, str]] = []
    last_end = -1
    for s, e, name in found:
        if s >= last_end:
            out.append((s, e, name))
            last_end = e
    return out


def split_sections(text: str) -> dict[str, str]:
    """Split a report into sections keyed by canonical lower-case header name.

    Keys are canonical names (``findings``, ``impression``, ``indication``, ``history``,
    ``technique``, ``comparison``, ``examination``, ``recommendation(s)``, ``wet read``,
    ``notification``, ``addendum``) or the lower-cased text of an unrecognised upper-case header
    (``"pa and lateral views of the chest"``). Text before the first header (or the whole text when
    there are no headers) is ``body``. ``FINAL REPORT`` banners are dropped. Values have their
    whitespace collapsed; a header repeated in the report has its texts joined with a space. Empty
    sections are kept with an empty string (a header was present).

    Args:
        text: raw report text (any case, wrapped lines, ``\\r\\n`` line ends).

    Returns:
        Ordered mapping section name -> whitespace-cleaned text.
    """
    if not isinstance(text, str) or not text.strip():
        return {}
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _BANNER.sub("", text)
    headers = [h for h in _find_headers(text) if h[2] != "final report"]
    sections: dict[str, str] = {}

    def add(name: str, value: str) -> None:
        value = clean_whitespace(value)
        if name in sections:
            if value:
                sections[name] = f"{sections[name]} {value}".strip()
        else:
            sections[name] = value

    head = text[: headers[0][0]] if headers else text
    if clean_whitespace(head):
        add("body", head)
    for i, (_, end, name) in enumerate(headers):
        stop = headers[i + 1][0] if i + 1 < len(headers) else len(text)
        add(name, text[end:stop])
    return sections


def clean_report(text: str, *, deid_token: str = "") -> str:
    """Clean a report for training: de-identification markers removed, whitespace normalised.

    ``___`` (MIMIC) and ``XXXX`` (IU-Xray) runs are replaced by ``deid_token`` (default: removed);
    spaces before punctuation and repeated punctuation left behind are tidied; all whitespace
    becomes single spaces. Headers are kept as they are.

    Args:
        text: raw report text.
        deid_token: replacement for each de-identification marker (e.g. ``"[DEID]"``).

    Returns:
        The cleaned single-line text ("" for empty or non-string input).
    """
    if not isinstance(text, str):
        return ""
    text = _BANNER.sub(" ", text.replace("\r", "\n"))
    text = _DEID_UNDERSCORE.sub(f" {deid_token} " if deid_token else " ", text)
    text = _DEID_X.sub(deid_token, text)
    text = clean_whitespace(text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_PUNCT.sub(lambda m: m.group(0)[0] if m.group(0)[0] != ":" else ":", text)
    # a marker removed at the start of a sentence may leave a leading punctuation mark
    text = re.sub(r"^[.,;:]\s*", "", text)
    return clean_whitespace(text)


def findings_impression(text: str, *, deid_token: str = "") -> str:
    """The ``"FINDINGS: ... IMPRESSION: ..."`` text used for training.

    Findings come from the ``findings`` section plus any unrecognised sub-headers after it
    (``LUNGS: ...`` kept as ``Lungs: ...``); without a ``findings`` section, from the unrecognised
    content headers (``PA AND LATERAL VIEWS OF THE CHEST:``), else from the header-less ``body``. The
    impression comes from ``impression``. With only one of them, only that part is returned (with
    its header); with no recognisable content section the cleaned whole text is returned without
    a header. Meta sections (indication, history, technique, comparison, ...) are never included.

    Args:
        text: raw report text.
        deid_token: see :func:`clean_report`.

    Returns:
        Cleaned training text, possibly ``""``.
    """
    sections = split_sections(text)
    if not sections:
        return ""
    impression = sections.get("impression", "")
    keys = list(sections)
    content = [k for k in keys if k not in META_SECTIONS and k not in ("impression", "body")]
    if "findings" in sections:
        # sub-headers after FINDINGS ("LUNGS:", "LINES/TUBES:") belong to the findings; keep their names
        start = keys.index("findings")
        parts = [sections["findings"]]
        for k in content:
            if k != "findings" and keys.index(k) > start and sections[k]:
                parts.append(f"{k[:1].upper()}{k[1:]}: {sections[k]}")
        findings = " ".join(p for p in parts if p)
    else:
        # no FINDINGS header: unrecognised content headers ("PA AND LATERAL VIEWS OF THE CHEST:") hold them
        findings = " ".join(sections[k] for k in content if sections[k])
    if not findings:
        findings = sections.get("body", "")
    findings = clean_report(findings, deid_token=deid_token)
    impression = clean_report(impression, deid_token=deid_token)
    if findings and impression:
        return f"FINDINGS: {findings} IMPRESSION: {impression}"
    if impression:
        return f"IMPRESSION: {impression}"
    if findings:
        if set(sections) == {"body"}:
            return findings  # no headers at all: do not pretend to know what it is
        return f"FINDINGS: {findings}"
    return ""
