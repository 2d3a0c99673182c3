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

__all__ = ["SIDES", "report_side", "report_sides"]

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
    from unicxr.text.labeler import _default
    from unicxr.text.negation import find_cues, normalize

    if finding not in FINDINGS:
        raise ValueError(f"unknown finding {finding!r}")
    labeler = _default()  # the shared default labeler (its patterns compiled once per process)
    out = []
    for text in texts:
        t = normalize((text or "")[: labeler.max_chars])
        sides: set[str] = set()
        mentions = [m for m in labeler.mentions(t, normalized=True) if m.finding == finding and m.value != 0]
        if mentions:
            scope = find_cues(t)
            words = [(m.start() + 1, _CANON[m.group(1)]) for m in _SIDE_WORD.finditer(t)]
            for m in mentions:
                sent = scope.sentence(m.start)
                same = [(p, s) for p, s in words if scope.sentence(p) == sent]
                before = [(p, s) for p, s in same if p < m.start]
                after = [(p, s) for p, s in same if p >= m.end]
                if before:
                    sides.add(before[-1][1])
                elif after:
                    sides.add(after[0][1])
        if "bilateral" in sides or {"left", "right"} <= sides:
            out.append("bilateral")
        else:
            out.append(next(iter(sides)) if sides else "")
    return out
