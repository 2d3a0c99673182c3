"""Which side a report puts a finding on: ``left``, ``right``, ``bilateral`` or ``""`` (not said).

The rule labeler finds the finding's positive and uncertain mentions; for each, the side word nearest
before it in the same sentence counts ("small *right* pleural effusion", "*bilateral* effusions"),
else the nearest one after it ("effusion on the *left*"). Mentions on different sides, or a
``bilateral``/``both`` word, give ``bilateral``. Negated mentions ("no left pneumothorax") say nothing.
Sides are the patient's (as reports write them), not the image's.
"""

from __future__ import annotations

import re

from unicxr.labels import FINDINGS

__all__ = ["SIDES", "report_side", "report_sides", "all_sides", "finding_qualifiers", "mirror_sides"]

SIDES = ("left", "right", "bilateral")
_SIDE_WORD = re.compile(r" (left|right|bilateral|bilaterally|both) ")
_CANON = {"left": "left", "right": "right", "bilateral": "bilateral", "bilaterally": "bilateral",
          "both": "bilateral"}


def report_side(text: str, finding: str) -> str:
    """Side of ``finding`` (a name in :data:`unicxr.labels.FINDINGS`) in report ``text``; see the
    module docstring."""
    return report_sides([text], finding)[0]


def report_sides(texts: list[str], finding: str) -> list[str]:
    """:func:`report_side` of many reports (one labeler for all)."""
    if finding not in FINDINGS:
        raise ValueError(f"unknown finding {finding!r}")
    return [all_sides(text).get(finding, "") for text in texts]


def all_sides(text: str) -> dict[str, str]:
    """The side of every finding that ``text`` mentions on a side, ``{finding: side}`` (one labeler
    pass for all findings; see the module docstring for the rules)."""
    out = {}
    for finding, sides in finding_qualifiers(text, _SIDE_WORD, _CANON).items():
        if "bilateral" in sides or {"left", "right"} <= sides:
            out[finding] = "bilateral"
        elif sides:
            out[finding] = next(iter(sides))
    return out


def finding_qualifiers(text: str, word: re.Pattern[str], canon: dict[str, str]) -> dict[str, set[str]]:
    """For each finding with a positive or uncertain mention in ``text``, the set of qualifier words
    (``word``'s group 1, mapped through ``canon``) that qualify its mentions: per mention the nearest
    match before it in the same sentence, else the nearest after it. Matches run on the labeler's
    normalized text (lower case, words padded by spaces). Findings whose mentions have no qualifier
    map to an empty set; negated mentions are not read. Shared by sides and sizes."""
    from unicxr.text.labeler import _default
    from unicxr.text.negation import find_cues, normalize

    labeler = _default()  # the shared default labeler (its patterns compiled once per process)
    t = normalize((text or "")[: labeler.max_chars])
    mentions = [m for m in labeler.mentions(t, normalized=True) if m.value != 0]
    if not mentions:
        return {}
    scope = find_cues(t)
    words = [(m.start() + 1, canon[m.group(1)]) for m in word.finditer(t)]
    found: dict[str, set[str]] = {}
    for m in mentions:
        sent = scope.sentence(m.start)
        same = [(p, s) for p, s in words if scope.sentence(p) == sent]
        before = [(p, s) for p, s in same if p < m.start]
        after = [(p, s) for p, s in same if p >= m.end]
        quals = found.setdefault(m.finding, set())
        if before:
            quals.add(before[-1][1])
        elif after:
            quals.add(after[0][1])
    return found


_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def mirror_sides(text: str) -> str:
    """``text`` with every whole word ``left`` and ``right`` swapped, case kept ("Left" → "Right",
    "LEFT" → "RIGHT"): the same report on the other side of the patient."""

    def swap(m: re.Match[str]) -> str:
        w = m.group(0)
        other = "right" if w.lower() == "left" else "left"
        return other.upper() if w.isupper() else other.capitalize() if w[0].isupper() else other

    return _LEFT_RIGHT.sub(swap, text or "")
