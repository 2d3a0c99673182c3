"""How large or severe a report says a finding is: a size in (0, 1], or nothing when not said.

Size words qualify a finding's positive or uncertain mentions by the rule that reads sides
(:func:`unicxr.text.laterality.finding_qualifiers`: the nearest word before the mention in the same
sentence, else the nearest after). Three grades, on the scale the phantom draws ("mild", "moderate",
"severe"): tiny / trace / minimal / small / mild / slight → 1/3; moderate / moderate-sized /
medium → 2/3; large / severe / marked / massive / extensive / tension → 1. Several mentions of one
finding take the largest. Negated mentions ("no large effusion") say nothing.
"""

from __future__ import annotations

import re

from unicxr.text.laterality import finding_qualifiers

__all__ = ["SEVERITY_GRADES", "all_severities"]

#: the value of each grade
SEVERITY_GRADES = {"mild": 1.0 / 3.0, "moderate": 2.0 / 3.0, "severe": 1.0}
_CANON = {
    **dict.fromkeys(("tiny", "trace", "minimal", "minimally", "small", "smaller", "mild", "mildly", "slight",
                     "slightly"), "mild"),
    **dict.fromkeys(("moderate", "moderately", "medium"), "moderate"),
    **dict.fromkeys(("large", "larger", "severe", "severely", "marked", "markedly", "massive", "extensive",
                     "tension"), "severe"),
}
_SIZE_WORD = re.compile(r" (" + "|".join(sorted(_CANON, key=len, reverse=True)) + r")(?=[ -])")


def all_severities(text: str) -> dict[str, float]:
    """``{finding: size}`` for every finding ``text`` qualifies with a size word (see the module
    docstring); findings mentioned without one are left out."""
    out = {}
    for finding, grades in finding_qualifiers(text, _SIZE_WORD, _CANON).items():
        if grades:
            out[finding] = max(SEVERITY_GRADES[g] for g in grades)
    return out
