"""Negation and uncertainty cues with clause-bounded scope (NegEx-style, tuned for chest X-ray reports).

A mention's value is decided by the cues in its clause:

* *strong uncertainty* ("cannot be excluded", "not ruled out", "difficult to assess") → uncertain,
  even though these phrases contain a negation word (double negation);
* *negation* — before the mention ("no", "without", "free of", "negative for", "resolution of",
  "removal of") or after it ("is not seen", "has resolved", "has been removed") → negative;
* *uncertainty* — before ("possible", "likely", "concerning for", "may represent"), after ("is
  suspected", "is possible"), anywhere in the clause ("may", "could", "versus") or an adjacent
  "or" ("atelectasis or pneumonia") → uncertain;
* otherwise positive.

Scope: cues never cross a clause boundary (sentence end, ``;``, ``:``, "but", "however",
"although", "which", "except", "there is", ...). Directional cues also stop at a new predicate
("is", "are", "has", "seen", "and the ...") and after a fixed number of words. *Pseudo* cues ("no
change in", "not resolved", "partially resolved", "no increase in") consume the negation word so
"no change in the moderate effusion" stays positive.

All patterns are alternations of literal words (linear-time matching).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

__all__ = [
    "Cue",
    "Scope",
    "normalize",
    "find_cues",
    "mention_value",
    "NEG_WINDOW",
]

NEG_WINDOW = 12  # words a pre-negation cue reaches forward
_REACH = 400  # characters around a mention where its cues are looked for
_PRE_UNC_WINDOW = 8
_POST_WINDOW = 12
_BI_WINDOW = 12
_OR_WINDOW = 1
_CLAUSE_WINDOW = 25  # words a clause-wide hedge ("differential diagnosis includes") reaches forward
_HIST_WINDOW = 5

# ----------------------------------------------------------------------------- normalisation
# (trigger substring or None, pattern, replacement): a pattern runs only when its trigger is present
_REPL: tuple[tuple[str | None, re.Pattern[str], str], ...] = (
    ("/", re.compile(r"\b(?:w/o|r/o|s/p|and/or)\b"), ""),  # replaced through _SHORTHAND
    (None, re.compile(r"\s[-\u2010-\u2015]+\s"), " ; "),  # a dash between words separates clauses
    ("\n", re.compile(r"\n[ \t]*\n"), " . "),  # a blank line ends a sentence
    ("?", re.compile(r"\?+(?=\s|$)"), " ? . "),  # "pneumonia?" hedges and ends the sentence
    (None, re.compile(r"[-\u2010-\u2015/_]+"), " "),
    (None, re.compile(r"[.!](?=\s|$)|[,;:()\[\]\"?{}]"), r" \g<0> "),  # punctuation as separate tokens
    (None, re.compile(r"\s+"), " "),
)
_SHORTHAND = {"w/o": " without ", "r/o": " rule out ", "s/p": " status post ", "and/or": " and or "}


def normalize(text: str) -> str:
    """Lower-case, expand shorthand (w/o, r/o, s/p), hyphens/slashes → spaces, punctuation as tokens.

    The result has single spaces, a leading and a trailing space, and every punctuation mark
    (except decimal points) surrounded by spaces, so all patterns can start with a literal space.

    Args:
        text: raw report text (any length, any characters).

    Returns:
        Normalised text; offsets in it are what mentions and cues refer to.
    """
    t = text.lower()
    for trigger, pat, rep in _REPL:
        if trigger is not None and trigger not in t:
            continue
        t = pat.sub(rep or (lambda m: _SHORTHAND[m.group(0)]), t)
    t = t.strip()
    return f" {t} " if t else ""


# ----------------------------------------------------------------------------- boundaries
# Sentence ends (hard) and clause boundaries (soft); matched inside the one cue scan below.
_HARD = [r"[.!]", r"\d{1,2} \)"]
_SOFT = [
    r"[;:]",
    r"(?<=, )with",
    r"(?:but|however|although|though|whereas|except|aside from|apart from|other than|which|who|"
    r"nevertheless|nonetheless|while|with the exception of|in addition|additionally|otherwise noted|"
    r"status post|following|after|(?:and )?there (?:is|are|has been|have been|was|were|remains?))",
]
# A new predicate stops directional scope ("no pneumothorax is seen and the heart is enlarged").
_BLOCK = [
    r"(?:is|are|was|were|has|have|had|appears?|remains?|persists?|demonstrates?|shows?|"
    r"and (?:the|there|a|an|this|these|mild|moderate|severe|small|large|new))",
    r"(?<!previously )(?<!recently )(?<!formerly )(?<!earlier )(?<!initially )(?<! also )(?<! as )"
    r"(?:seen|noted|identified|present|visualized|demonstrated)",
]


# ----------------------------------------------------------------------------- cues
_EXCL = r"(?:exclude|excluded|rule out|ruled out|be excluded|be ruled out|be entirely excluded|be completely excluded)"
_STRONG = [
    r"(?:(?:is|are|was|were) )?(?:can ?not|could not|can't|cant|couldn't|may not|might not|not|difficult to|unable to|"
    r"impossible to|hard to) (?:be )?(?:entirely |completely |totally |definitely |definitively |fully |reliably |"
    r"confidently |necessarily |absolutely |firmly )?" + _EXCL,
    r"(?:can ?not|could not|can't|difficult to|unable to|not possible to|impossible to|hard to) (?:be )?"
    r"(?:clearly |well |reliably |adequately |fully )?(?:assess|assessed|evaluate|evaluated|distinguish|distinguished|"
    r"differentiate|differentiated|separate|separated|be assessed|be evaluated|be distinguished|be differentiated)",
    r"(?:not|poorly|less well|incompletely) (?:well |adequately |fully )?(?:assessed|evaluated)",
    r"(?:unclear|not clear|uncertain|not certain|indeterminate|difficult to say|difficult to determine) (?:whether|if)",
    r"whether or not",
    r"(?:no|without) (?:definite |convincing )?(?:change|interval change) (?:to|that) (?:exclude|rule out)",
]
_PSEUDO = [
    r"(?:no|without|not) (?:significant |appreciable |substantial |definite |marked |major |other |further |"
    r"obvious |apparent |detectable |relevant |interval |radiographic |new |acute )*"
    r"(?:interval |significant )?(?:change|changes|increase|increased|decrease|decreased|worsening|worsened|"
    r"improvement|improved|progression|progressed|enlargement in size|growth|difference|shift|alteration|"
    r"evolution|resolution yet)",
    r"(?:not|no|without) (?:been |significantly |substantially |appreciably |markedly |much |materially )*"
    r"(?:changed|worse|worsened|increased|decreased|improved|different|altered|progressed)",
    r"(?:has |have |had )?not (?:yet )?(?:completely |entirely |fully |totally |significantly )?"
    r"(?:resolved|cleared|been removed|removed)",
    r"(?:partial(?:ly)?|near(?:ly)?(?: complete(?:ly)?)?|almost(?: complete(?:ly)?)?|incomplete(?:ly)?|largely|mostly|"
    r"slowly|gradually|continued|continuing|still|not yet) (?:resol\w*|clear\w*|improv\w*)",
    r"resolving",
    r"not only",
    r"gram negative",
    r"no (?:longer )?(?:need|needed|indication)",
    r"(?:no|not) (?:significant |appreciable )?(?:interval )?(?:change|changed) in (?:position|appearance)",
]
_NEG_PRE = [
    r"(?:no|without)(?: (?:definite|definitive|convincing|radiographic|significant|appreciable|obvious|acute|"
    r"evident|visible|gross|discrete|clear|residual|other|further|new|recurrent|focal|frank|overt|large|"
    r"substantial|suspicious|current|interval|superimposed|remaining|persistent|visualized|visualised|identified|"
    r"demonstrated|detected|detectable|seen|appreciable|appreciated|displaced|acute appearing|significant))*"
    r"(?: (?:evidence|signs?|findings?|suggestion|indication|demonstration|radiographic evidence|x ray evidence) "
    r"(?:of|for|to suggest|suggesting|that))?",
    r"absence of",
    r"(?:negative|neg) (?:for|of)",
    r"free of",
    r"clear of",
    r"clear(?= (?:focal )?air ?space (?:disease|opacit))",
    r"never",
    r"neither",
    r"nor",
    r"rather than",
    r"instead of",
    r"(?:interval |complete |total )?(?:resolution|clearing|disappearance|removal|explantation) of",
    r"(?:interval |since )?(?:resolved|removed|discontinued|cleared)",
    r"status post (?:removal|extraction|withdrawal) of",
    r"no longer",
    r"none",
    r"lack of",
    r"(?:fails?|failed) to (?:show|demonstrate|reveal|identify)",
    r"(?:does|do|did) not (?:show|demonstrate|reveal|identify|see|appear to have)",
    r"(?:not|no) (?:seen|identified|visualized|appreciated|demonstrated|present|evident)",
]
_NEG_PRE_SHORT = [r"not(?: (?:a|an|any|the|of|for|to|consistent with|suggestive of))?"]
_NEG_POST = [
    r"(?:is |are |was |were |has been |have been |had been )?(?:not|no longer|nowhere) (?:been )?(?:clearly |definitely |"
    r"convincingly |definitively |currently |again |now |well |longer )*(?:seen|present|identified|visualized|visible|"
    r"appreciated|evident|demonstrated|noted|detected|apparent|observed|found|shown|there|delineated|depicted|"
    r"recognized|recognised|appreciable|identifiable|discernible)",
    r"(?:has |have |had )?(?:since |now |completely |entirely |fully |totally |subsequently |interval |essentially |"
    r"virtually )*(?:resolved|cleared|disappeared|gone|vanished)",
    r"(?:has |have |had |was |were |is |are )?(?:been |now |since |subsequently |interval |also )*"
    r"(?:removed|discontinued|explanted|taken out|extracted)",
    r"removal(?! of)",
    r"(?:is |are |was |were )?(?:now )?(?:absent|gone)",
    r"(?:is |are |was |were )negative",
    r"(?:has |have )?(?:been )?(?:ruled out|excluded)",
]
_TO_SUGGEST = [
    r"(?:(?:is|are|was|were) )?(?:seen |identified |present |noted |demonstrated |visualized )?"
    r"to (?:suggest|indicate|represent)",
]
_UNC_PRE = [
    r"(?:may|might|could|can|would|will|probably|likely|possibly|presumably) (?:also |possibly |potentially |"
    r"partially |in part |partly |simply |still |well |reasonably |alternatively |either )?"
    r"(?:represent|represents|reflect|reflects|indicate|be due to|be related to|relate to|be secondary to|"
    r"correspond to|be consistent with|be compatible with|be from|be caused by|account for|be a|be an|"
    r"be early|signify|suggest|be concerning for|be suspicious for|be atypical|be infectious|be accentuated by|"
    r"be exaggerated by|be attributed to|be attributable to|be artifactual|be in part due to|include|be seen with|"
    r"be seen in|mask|obscure|be superimposed|also be)",
    r"(?:most )?(?:possible|possibly|probable|probably|likely|presumed|presumably|presumptive|potential|potentially|"
    r"questionable|questionably|suspected|perhaps|maybe|borderline|equivocal|query|"
    r"conceivably|plausibly|developing|evolving|incipient|possibility of|apparent|apparently|"
    r"suspicion (?:for|of)|suspicious (?:for|of)|concerning (?:for|of)|concern for|worrisome for|worrying for|"
    r"suggestive of|suggesting|suggests?|suggestion of|question of|questioned|cannot differentiate|"
    r"differential (?:diagnosis )?(?:includes?|considerations? includes?|of)?|ddx|consider|considered|"
    r"consideration (?:of|for)|rule out|to exclude|exclude|to rule out|evaluate for|evaluation for|eval for|assess for|"
    r"to identify|to detect|to evaluate for|to assess for|to look for|"
    r"assessment for|raising (?:the )?(?:possibility|question|concern) (?:of|for)|(?:in|with) favor of|"
    r"favored|favoring|favor|hint of|unlikely|(?:clinical )?correlation (?:for|with)|correlate (?:clinically )?for|"
    r"(?<=favored )over|(?<=favoring )over|(?<=favor )over)",
]
_UNC_POST = [
    r"(?:is|are|was|were) (?:also |again |still )?(?:possible|suspected|questioned|questionable|probable|"
    r"in question|a (?:possibility|consideration|concern)|of concern(?! for)|concerning(?! for| of)|suggested|"
    r"considered|favored|thought likely|unlikely(?! to| that)|not excluded|not entirely excluded)",
    r"(?:not excluded|in question|of (?:uncertain|unclear|questionable) significance)",
    r"(?:would|could|might|may) (?:also )?be (?:a |another )?(?:consideration|possibility|concern|considered)",
    r"(?:is|are) (?:another|an additional|a further) (?:consideration|possibility)",
    r"(?:is |are )(?:most |more |less )?(?:likely|probably|possibly|presumably)(?: (?:present|seen|noted|there|"
    r"identified|developing|forming)|(?= [.,;:?!]| $))",
    r"(?:cannot|can not|can't) be (?:entirely |completely |totally |definitely )?(?:excluded|ruled out)",
]
_UNC_BI = [
    r"(?:may|might|could)(?: (?:also|possibly|potentially|still|well|either|actually))?(?: (?:be|have))?",
    r"equivocal",
    r"(?:would|could|can|may|might) be better (?:assessed|evaluated|seen|characterized|demonstrated)",
    r"uncertain",
    r"unclear",
    r"not (?:clearly |definitely |entirely )?(?:certain|sure|definite)",
    r"either",
    r"differential",
    r"if (?:any|present)",
]
_OR = [r"or", r"and or", r"versus", r"vs"]
# Hedges that cover the rest of their clause, across predicates ("differential diagnosis includes
# chronic interstitial disease, infection and atypical edema"; "in the appropriate clinical setting
# this appearance is compatible with pneumonia").
_UNC_CLAUSE = [
    r"differential (?:diagnosis |diagnostic |considerations? )?(?:includes?|including|would include|considerations? "
    r"includes?|is|are)",
    r"(?:in|given) the (?:appropriate|proper|correct|right) clinical (?:setting|context|scenario)",
    r"if (?:clinically )?(?:indicated|warranted|there is concern)",
]
# "history of X", "known X": the patient's history, not a finding of this study (mention dropped).
_HIST = [r"(?:known |prior |previous |past |remote )?(?:history|hx) of", r"h o"]


def _group(name: str, alts: list[str]) -> str:
    return f"(?P<{name}>" + "|".join(alts) + ")"


_CUE = re.compile(
    r" (?:"
    + "|".join(
        [
            _group("strong", _STRONG),
            _group("uclause", _UNC_CLAUSE),
            _group("pseudo", _PSEUDO),
            _group("upost", _UNC_POST),
            _group("npost", _NEG_POST),
            _group("tosug", _TO_SUGGEST),
            _group("upre", _UNC_PRE),
            _group("npre", _NEG_PRE),
            _group("nshort", _NEG_PRE_SHORT),
            _group("bi", _UNC_BI),
            _group("hist", _HIST),
            _group("or", _OR),
            r"(?P<q>\?)",
            _group("hard", _HARD),
            _group("soft", _SOFT),
            _group("block", _BLOCK),
        ]
    )
    + r")(?![a-z0-9])"
)


@dataclass(frozen=True)
class Cue:
    """A cue occurrence: kind (strong/upost/npost/upre/npre/nshort/bi/or/q/uclause/hist), span, clause id, text."""

    kind: str
    start: int
    end: int
    clause: int
    text: str


@dataclass
class Scope:
    """Pre-computed clause structure of one normalised text."""

    text: str
    bounds: list[int]
    hard: list[int]
    blocks: list[int]
    cues_by_clause: dict[int, list[Cue]]
    _starts: dict[int, list[int]] | None = None

    def cues_near(self, start: int, end: int, reach: int = _REACH) -> list[Cue]:
        """Cues of the clause of ``start`` that begin within ``reach`` characters of ``[start, end)``.

        Every cue's scope is at most a dozen words, so this bounds the work per mention even in a
        pathological clause with thousands of cues.
        """
        c = self.clause(start)
        cues = self.cues_by_clause.get(c)
        if not cues:
            return []
        if len(cues) <= 16:
            return cues
        if self._starts is None:
            self._starts = {}
        starts = self._starts.get(c)
        if starts is None:
            starts = self._starts[c] = [q.start for q in cues]
        return cues[bisect_left(starts, start - reach) : bisect_right(starts, end + reach)]

    def clause(self, pos: int) -> int:
        """Clause id of a character offset."""
        return bisect_right(self.bounds, pos)

    def sentence(self, pos: int) -> int:
        """Sentence id of a character offset."""
        return bisect_right(self.hard, pos)

    def blocked(self, a: int, b: int) -> bool:
        """Whether a predicate word starts in ``[a, b)``."""
        i = bisect_left(self.blocks, a)
        return i < len(self.blocks) and self.blocks[i] < b

    def words(self, a: int, b: int) -> int:
        """Number of whole words strictly between offsets ``a`` and ``b`` (a <= b)."""
        if b <= a:
            return 0
        return max(self.text.count(" ", a, b) - 1, 0)


def find_cues(t: str) -> Scope:
    """Find boundaries, predicate blockers and cues of a normalised text.

    Args:
        t: normalised text (:func:`normalize`).

    Returns:
        The :class:`Scope` with cues grouped by clause id (pseudo cues dropped: they only consume
        the negation words they contain).
    """
    bounds: list[int] = []
    hard: list[int] = []
    blocks: list[int] = []
    found: list[tuple[str, int, int, str]] = []
    for m in _CUE.finditer(t):
        kind = m.lastgroup or ""
        s = m.start() + 1  # skip the leading space
        if kind == "hard":
            hard.append(s)
            bounds.append(s)
        elif kind == "soft":
            bounds.append(s)
        elif kind == "block":
            blocks.append(s)
        elif kind != "pseudo":
            found.append((kind, s, m.end(), m.group(0)[1:]))
    by_clause: dict[int, list[Cue]] = {}
    for kind, s, e, txt in found:
        c = bisect_right(bounds, s)
        by_clause.setdefault(c, []).append(Cue(kind, s, e, c, txt))
    return Scope(t, bounds, hard, blocks, by_clause)


_BARE_PARTICIPLES = frozenset({"resolved", "removed", "cleared", "discontinued", "explanted", "extracted"})
_BE_CUE = re.compile(r"(?:may|might|could)(?: (?:also|possibly|potentially|still|well|either|actually))? be$")


def mention_value(scope: Scope, start: int, end: int, is_device: bool, next_mention_start: int | None) -> float:
    """Value (1, 0 or -1) of a cue-driven mention spanning ``[start, end)``.

    Args:
        scope: output of :func:`find_cues` for the text.
        start, end: mention span.
        is_device: Support Devices mentions ignore "or" lists ("lines or tubes").
        next_mention_start: start of the next mention of any finding (for "may be <finding>").

    Returns:
        ``1.0``, ``0.0`` or ``-1.0``; NaN when the mention is the patient's history ("history of
        lung cancer"), which labels nothing.
    """
    cues = scope.cues_near(start, end)
    if not cues:
        return 1.0
    neg = unc = strong = False
    for cue in cues:
        if cue.kind == "hist" and cue.end <= start and scope.words(cue.end, start) <= _HIST_WINDOW and not scope.blocked(
            cue.end, start
        ):
            return math.nan
        k = cue.kind
        inside = cue.start >= start and cue.end <= end
        before = cue.end <= start
        after = cue.start >= end
        if k == "strong":
            if inside or (before and scope.words(cue.end, start) <= _BI_WINDOW and not scope.blocked(cue.end, start)) or (
                after and scope.words(end, cue.start) <= _BI_WINDOW and not scope.blocked(end, cue.start)
            ):
                strong = True
        elif k in ("npre", "nshort"):
            win = NEG_WINDOW if k == "npre" else 2
            if inside or (before and scope.words(cue.end, start) <= win and not scope.blocked(cue.end, start)):
                neg = True
        elif k == "npost":
            if inside or (after and scope.words(end, cue.start) <= _POST_WINDOW and not scope.blocked(end, cue.start)):
                if cue.text != "removal" or scope.words(end, cue.start) == 0:
                    neg = True
            elif before and cue.text in _BARE_PARTICIPLES and scope.words(cue.end, start) <= 3 and not scope.blocked(
                cue.end, start
            ):
                neg = True  # "resolved interstitial edema", "removed right IJ line"
        elif k == "tosug":
            if inside or (before and scope.words(cue.end, start) <= _PRE_UNC_WINDOW and not scope.blocked(cue.end, start)):
                if any(c.kind in ("npre", "nshort") and c.end <= cue.start for c in cues):
                    neg = True
                else:
                    unc = True
        elif k == "upre":
            if inside or (before and scope.words(cue.end, start) <= _PRE_UNC_WINDOW and not scope.blocked(cue.end, start)):
                unc = True
        elif k == "uclause":
            if inside or (before and scope.words(cue.end, start) <= _CLAUSE_WINDOW):
                unc = True
        elif k == "upost":
            if inside or (after and scope.words(end, cue.start) <= _POST_WINDOW and not scope.blocked(end, cue.start)):
                unc = True
        elif k == "bi":
            if is_device:
                continue  # "the tube could be withdrawn" hedges the position, not the device
            if _BE_CUE.search(cue.text) and not inside and cue.end <= start:
                # "may be pneumonia": forward only when a finding follows closely
                if scope.words(cue.end, start) <= _BI_WINDOW:
                    unc = True
                continue
            if _BE_CUE.search(cue.text) and after and next_mention_start is not None and (
                next_mention_start >= cue.end and scope.words(cue.end, next_mention_start) <= 2
            ):
                continue
            if inside or (before and scope.words(cue.end, start) <= _BI_WINDOW) or (
                after and scope.words(end, cue.start) <= _BI_WINDOW
            ):
                unc = True
        elif k == "or":
            if is_device:
                continue
            if (before and scope.words(cue.end, start) <= _OR_WINDOW) or (
                after and scope.words(end, cue.start) <= _OR_WINDOW
            ):
                unc = True
        elif k == "q":
            # "infiltrate in the right lower lobe?" hedges its clause; "? pneumonia" the next word
            if (before and scope.words(cue.end, start) <= 1) or (after and scope.words(end, cue.start) <= _BI_WINDOW):
                unc = True
    if strong:
        return -1.0
    if neg:
        return 0.0
    if unc:
        return -1.0
    return 1.0
