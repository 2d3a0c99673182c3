"""Mention lexicon of the rule-based labeler: how each of the 14 findings is written in reports.

Patterns work on *normalised* text (see :func:`unicxr.text.negation.normalize`): lower case, hyphens
and slashes turned into spaces, single spaces. Every pattern is a plain alternation of words with
bounded gaps (``{0,k}`` words), so matching is linear in the text length (no nested unbounded
quantifiers, no catastrophic backtracking).

Each entry has a *kind*:

* ``p`` — a mention whose value is decided by the negation/uncertainty cues around it
  ("cardiomegaly", "the heart is enlarged", "PICC line");
* ``w`` — a weak mention (a sign rather than the finding, e.g. "blunting of the costophrenic
  angle"): used only when the same sentence has no ordinary mention of the finding, so that
  "blunting ... may reflect a small effusion" is read through the effusion mention;
* ``n`` — a normal statement with a fixed negative value ("heart size is normal", "lungs are
  clear", "the patient has been extubated");
* ``u`` — a statement with a fixed uncertain value ("heart size is borderline").

One entry may label several findings ("cardiomediastinal silhouette is normal" gives Cardiomegaly
and Enlarged Cardiomediastinum 0; "the lungs are clear" gives the opacity family 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unicxr.labels import FINDINGS

__all__ = ["Entry", "ENTRIES", "CLEAR_LUNG_FINDINGS", "KEYWORDS", "compile_finding_patterns"]

# Findings set to 0 by "the lungs are clear" (opacity family: no airspace process).
CLEAR_LUNG_FINDINGS: tuple[str, ...] = ("Lung Opacity", "Consolidation", "Pneumonia")

_STOP = (
    r"but|however|although|though|which|and|or|no|not|without|with|nor|except|than|normal|enlarged|enlargement|"
    r"widened|large|prominent|unremarkable|clear|borderline"
)


def gap(k: int) -> str:
    """Up to ``k`` intervening words (lazy), none of them a clause/negation word."""
    return rf"(?: (?!(?:{_STOP})\b)[a-z0-9']+){{0,{k}}}?"


def _alt(*parts: str) -> str:
    return "(?:" + "|".join(parts) + ")"


@dataclass(frozen=True)
class Entry:
    """One lexicon pattern: the findings it labels, its kind (p/w/n/u) and its regex source."""

    findings: tuple[str, ...]
    kind: str
    pattern: str


# --------------------------------------------------------------------------- shared pieces
_DEG = r"(?:(?:very |quite )?(?:mild(?:ly)?|minimal(?:ly)?|slight(?:ly)?|moderate(?:ly)?|severe(?:ly)?|marked(?:ly)?|massive(?:ly)?|significant(?:ly)?|substantial(?:ly)?|small|large|extensive|gross(?:ly)?|borderline|stable|persistent(?:ly)?|new|increasing(?:ly)?|again) )"
_HEART = _alt(
    r"heart(?: size| shadow| silhouette| contours?)?",
    r"cardiac (?:silhouette|size|contours?|shadow|diameter|borders?|outline|dimensions?)",
    r"size of the (?:heart|cardiac silhouette)",
)
_CARDIOMED = _alt(
    r"cardio ?mediastinal (?:silhouettes?|contours?|size|shadow|width|outlines?|structures?)",
    r"cardio ?mediastinum",
    r"heart and (?:the )?mediastinum",
    r"(?:cardiac|heart) and mediastinal (?:silhouettes?|contours?|structures?|outlines?|size)",
    r"heart size and (?:the )?mediastinal (?:contours?|silhouette|width|structures?)",
    r"mediastinal (?:and|and hilar|and cardiac) (?:contours?|silhouettes?) and heart size",
    r"heart (?:, )?mediastinum (?:, )?and hila",
    r"heart size (?:, )?mediastinal and hilar contours",
    r"heart and mediastinal and hilar contours",
)
_MEDIAST = _alt(
    r"(?:superior )?mediastinum",
    r"(?:superior )?mediastinal (?:contours?|silhouette|width|shadow|outlines?|borders?|structures?|size)",
    r"(?:hilar and mediastinal|mediastinal and hilar) (?:contours?|silhouettes?|structures?)",
)
# "... and hilar contours", "... and pulmonary vascularity": a second subject sharing the predicate
_AND_X = (
    r"(?: and (?:the )?(?:hilar|hila|hilum|pulmonary vascularity|pulmonary vasculature|pulmonary vessels|mediastinal|"
    r"(?:pulmonary |central )?vascular (?:engorgement|congestion|prominence)|"
    r"mediastinum|cardiac|heart)(?: (?:contours?|structures?|silhouettes?|size))?)?"
)
_ENL = r"(?:enlarged|enlargement|large|prominent|increased|widened|wide|big|dilated)"
_WIDE = r"(?:widened|widening|wide|enlarged|enlargement|prominent|increased|large|abnormal)"
_NORM = _alt(
    r"normal",
    r"within (?:the )?normal (?:limits|range)",
    r"within (?:the )?limits of normal",
    r"unremarkable",
    r"not (?:significantly |appreciably )?(?:enlarged|widened|increased|large|prominent)",
    r"no longer (?:enlarged|widened|prominent)",
    r"(?:at )?(?:the )?(?:top|upper|high) (?:limits? |range |end )?(?:of )?normal",
    r"preserved",
)
_UNC = _alt(
    r"borderline(?: (?:enlarged|large|in size|normal|prominent|widened))?",
    r"(?:at )?(?:the )?(?:top|upper|high) (?:limits? |range |end )?(?:of )?normal (?:to|or|versus|vs) (?:slightly |mildly |minimally )?(?:enlarged|large|prominent|widened)",
    r"normal (?:to|or|versus|vs) (?:slightly |mildly |minimally )?(?:enlarged|large|prominent|widened)",
    r"(?:possibly|questionably|perhaps|probably|likely) (?:slightly |mildly |minimally )?(?:enlarged|widened)",
)
_SIDE = r"(?:(?:right|left|bilateral|bibasilar|basilar|apical|both|unilateral|small|large|tiny|trace|moderate|minimal|mild|residual|loculated|layering|subpulmonic|persistent|new|stable|known|chronic|increasing|decreasing|) ?)"

_CP = r"(?:costo ?phrenic|cp|costodiaphragmatic) (?:angles?|sulci|sulcus|recess(?:es)?|regions?)"

ENTRIES: tuple[Entry, ...] = (
    # ------------------------------------------------------------------ Enlarged Cardiomediastinum
    Entry(("Enlarged Cardiomediastinum",), "p", _alt(
        r"(?:widened|widening of the|wide|enlarged|enlargement of the|prominent|prominence of the) "
        r"(?:superior )?(?:cardio ?)?mediastin(?:um|al (?:silhouette|contours?|shadow|width|outlines?))",
        r"(?:superior )?mediastinal (?:widening|enlargement|prominence)",
        r"cardio ?mediastinal (?:widening|enlargement|prominence)",
    )),
    Entry(("Enlarged Cardiomediastinum",), "u", _MEDIAST + gap(4) + " " + _UNC),
    Entry(("Enlarged Cardiomediastinum", "Cardiomegaly"), "u", _CARDIOMED + gap(4) + " " + _UNC),
    Entry(("Enlarged Cardiomediastinum",), "n", _MEDIAST + _AND_X + gap(4) + " " + _NORM),
    Entry(("Enlarged Cardiomediastinum", "Cardiomegaly"), "n", _CARDIOMED + _AND_X + gap(4) + " " + _NORM),
    Entry(("Enlarged Cardiomediastinum", "Cardiomegaly"), "n", r"(?:normal|unremarkable) (?:size )?" + _CARDIOMED),
    Entry(("Enlarged Cardiomediastinum",), "n", r"(?:normal|unremarkable) (?:size )?" + _MEDIAST),
    Entry(("Enlarged Cardiomediastinum",), "p", _alt(_MEDIAST, r"cardio ?mediastinal (?:silhouette|contours?)")
          + gap(4) + " " + _WIDE),
    # ------------------------------------------------------------------ Cardiomegaly
    Entry(("Cardiomegaly",), "p", _alt(
        r"cardiomegaly",
        r"cardiac (?:enlargement|prominence|hypertrophy)",
        r"(?:enlarged|enlargement of the|large|prominent|increased) (?:heart|cardiac (?:silhouette|size|shadow|contours?))",
        r"enlargement of the (?:heart|cardiac silhouette)",
        r"(?:heart|cardiac silhouette) enlargement",
        r"(?:ventricular|atrial|biventricular|left ventricular|right ventricular|chamber) enlargement",
        r"(?:ventricular|atrial) (?:hypertrophy|dilatation)",
    )),
    Entry(("Cardiomegaly",), "u", _HEART + gap(5) + " " + _UNC),
    Entry(("Cardiomegaly",), "u", r"borderline (?:(?:enlarged|large|prominent) )?(?:heart size|heart|cardiac (?:size|silhouette))"),
    Entry(("Cardiomegaly",), "n", _HEART + _AND_X + gap(5) + " " + _NORM),
    Entry(("Cardiomegaly",), "u", _HEART + gap(2) + " " + _alt(
        r"(?:is |are )?(?:difficult|hard|impossible) to (?:assess|evaluate|determine)",
        r"(?:can ?not|could not) be (?:\w+ )?(?:assessed|evaluated|determined)",
        r"(?:is |are )?(?:not (?:well |adequately )?|poorly )(?:assessed|evaluated)",
        r"(?:is |are )?(?:partially )?obscured",
    )),
    Entry(("Cardiomegaly",), "n", _alt(
        r"(?:(?:top|upper|high) (?:limits? |range )?(?:of )?)?normal (?:sized? |appearing )?(?:heart|cardiac (?:silhouette|size|contours?|shadow))",
        r"heart (?:is )?(?:of )?normal (?:in )?size",
    )),
    Entry(("Cardiomegaly", "Enlarged Cardiomediastinum"), "n",
          r"(?:normal|unremarkable) (?:heart size|heart|cardiac silhouette|cardiac size) and (?:the )?(?:mediastinal|hilar|"
          r"mediastinal and hilar|hilar and mediastinal) (?:contours?|silhouettes?|structures?)"),
    Entry(("Cardiomegaly",), "p", _HEART + gap(5) + " " + _ENL),
    # ------------------------------------------------------------------ Lung Opacity
    Entry(("Lung Opacity",), "p", _alt(
        r"opaci(?:ty|ties|fication|fications|fied)",
        r"infiltrat(?:e|es|ive|ion|ions)",
        r"air ?space (?:disease|process|opacit(?:y|ies)|filling|changes?|pathology)",
        r"ground glass",
        r"hazy",
        r"haziness",
        r"(?:increased|patchy|hazy|ill defined|focal|bibasilar|basilar|perihilar|parenchymal|streaky|linear|"
        r"retrocardiac|airspace|confluent|rounded|new)(?: (?:retrocardiac|basilar|perihilar|parenchymal|airspace|"
        r"opacity|lung|lobe|basal|apical))? densit(?:y|ies)",
        r"reticul(?:ar|ation|onodular)(?: (?:opacit(?:y|ies)|pattern|changes))?",
        r"interstitial (?:abnormalit(?:y|ies)|process|pattern|thickening)",
    )),
    # Increased/prominent interstitial or lung markings are a finding of their own (not an opacity):
    # the IU-Xray indexers code them "Markings", and CheXpert counts them only against No Finding.
    Entry(CLEAR_LUNG_FINDINGS, "n", _alt(
        r"lungs? (?:fields? |parenchyma |bases )?(?:(?!(?:no|not|without|never|nor)\b)[a-z]+ (?:, )?){0,5}clear",
        r"clear lungs?",
        r"lungs? (?:are|is) (?:otherwise )?(?:grossly )?(?:normal|unremarkable)",
    )),
    # ------------------------------------------------------------------ Lung Lesion
    Entry(("Lung Lesion",), "p", _alt(
        r"(?<!calcified )(?<!granulomatous )(?<!nipple )nodul(?:e|es|ar lesions?)",
        r"mass ?like (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?|consolidation)",
        r"(?<!calcified )micronodul(?:e|es)",
        r"mass(?:es)?(?! effect)(?! like)",
        r"(?:lung|pulmonary|parenchymal|cavitary|cavitating|spiculated|apical|hilar|lobe|lobar|pleural based|suspicious) lesions?",
        r"tumou?rs?",
        r"neoplasms?",
        r"(?:lung|pulmonary|bronchogenic) (?:carcinoma|cancer|malignancy)",
        r"carcinoma",
        r"malignan(?:cy|cies|t (?:lesions?|nodules?|mass(?:es)?|process|neoplasm))",
        r"(?:pulmonary |lung )?metasta(?:sis|ses|tic disease)",
        r"cavitary",
        r"cavitation",
    )),
    # ------------------------------------------------------------------ Edema
    Entry(("Edema",), "p", _alt(
        r"(?<!soft tissue )(?<!subcutaneous )(?<!wall )(?<!extremity )(?<!scrotal )(?<!laryngeal )(?<!airway )edema(?!tous soft)",
        r"edematous",
        r"(?:pulmonary |vascular |venous |interstitial |central |perihilar |hilar )+(?:vascular )?(?:congestion|engorgement|plethora|redistribution)",
        r"congestive (?:heart )?failure",
        r"(?:congestive )?heart failure",
        r"chf",
        r"(?:fluid|volume) overload",
        r"cephali[sz]ation",
        r"kerley (?:b )?lines",
        r"(?:indistinct(?:ness)?|blurring|haziness|prominen(?:ce|t)|engorged|engorgement|fullness|cephalized) (?:of (?:the )?)?(?:pulmonary )?(?:vascular|vasculature|vessels|vascular markings)",
        r"(?:pulmonary )?vascular (?:indistinctness|prominence|blurring|fullness)",
        r"(?:pulmonary )?(?:vasculature|vascular markings|vessels|vascularity) (?:is |are )?(?:indistinct|engorged|prominent|congested|cephalized)",
        r"(?:increased|prominent|engorged) (?:lung |pulmonary |central )?(?:vascularity|vasculature)",
        r"prominence of the (?:central )?(?:pulmonary )?(?:vascularity|vasculature)",
    )),
    Entry(("Edema",), "n", r"(?:pulmonary )?(?:vasculature|vascularity|vascular markings|pulmonary vessels)"
          + gap(3) + " " + _alt(r"normal", r"within normal limits", r"unremarkable", r"not (?:engorged|congested)")),
    Entry(("Edema",), "n", r"normal (?:pulmonary )?(?:vasculature|vascularity|vascular markings)"),
    Entry(("Edema",), "n", r"(?:pulmonary |central )?vascular (?:engorgement|congestion|prominence)" + gap(2)
          + r" (?:appears? |is |are )?(?:within (?:the )?(?:limits of normal|normal limits)|normal)"),
    # ------------------------------------------------------------------ Consolidation
    Entry(("Consolidation",), "p", _alt(r"consolidat(?:ion|ions|ive|ed|ing)", r"air bronchograms?")),
    # ------------------------------------------------------------------ Pneumonia
    Entry(("Pneumonia",), "p", _alt(
        r"(?<!tuberculosis )(?<!tuberculous )(?<!prior )(?<!previous )(?<!old )(?<!remote )(?:broncho)?pneumoni(?:a|as|c)",
        r"pneumonitis",
        r"(?<!granulomatous )(?<!tuberculous )(?<!tuberculosis )(?<!fungal )(?<!symptoms of )(?<!signs of )"
        r"(?<!prior )(?<!previous )(?<!old )(?<!remote )(?<!healed )"
        r"(?:lower respiratory |chest |pulmonary |lung |superimposed |underlying )?infections?",
        r"infectious(?: process| etiology| cause)?",
        r"infected",
        r"aspiration",
    )),
    # ------------------------------------------------------------------ Atelectasis
    Entry(("Atelectasis",), "p", _alt(
        r"atelecta(?:sis|ses|tic)",
        r"(?<!vertebral )(?<!vertebral body )(?<!compression )(?<!height )collapse(?:d)?(?! of (?:the )?(?:vertebra|[tl]\d))",
        r"(?:lobar|segmental|lobe|lung|basilar) volume loss",
        r"volume loss",
    )),
    # ------------------------------------------------------------------ Pneumothorax
    Entry(("Pneumothorax",), "p", _alt(
        r"(?:hydro ?|hemo ?)?pneumothora(?:x|xes|ces)",
        r"ptx",
        r"pneumo thorax",
    )),
    # ------------------------------------------------------------------ Pleural Effusion
    Entry(("Pleural Effusion",), "p", _alt(
        r"(?<!pericardial )(?<!joint )(?<!pericardial and )effusions?",
        r"pleural (?:fluid|collections?)",
        r"(?:fissural|layering|loculated) fluid",
        r"fluid (?:in|within|tracking|tracks|tracked|extending|extends) (?:into |along |within )?the "
        r"(?:right |left |minor |major |horizontal |oblique )*(?:fissures?|pleural spaces?)",
        r"(?:hydro|hemo|chylo)thora(?:x|ces)",
        r"hydro ?pneumothora(?:x|ces)",
        r"empyemas?",
    )),
    Entry(("Pleural Effusion",), "w", _alt(
        r"(?:blunting|blunted|obliteration|effacement|opacification) (?:of )?(?:the )?(?:right |left |bilateral |both |posterior |lateral )*" + _CP,
        r"(?:right |left |bilateral |both |posterior |lateral )*" + _CP + gap(3) + r" (?:blunted|blunting|obliterated|effaced|not (?:sharp|clear))",
        r"meniscus sign",
    )),
    Entry(("Pleural Effusion",), "n", _alt(
        r"(?:right |left |bilateral |both |posterior |lateral )*" + _CP + gap(3)
        + r" (?:are |is )?(?:sharp|sharply (?:defined|marginated)|clear|preserved|normal|well defined|free)",
        r"(?:sharp|clear|preserved|normal) (?:right |left |bilateral |both |posterior |lateral )*" + _CP,
    )),
    # ------------------------------------------------------------------ Pleural Other
    Entry(("Pleural Other",), "p", _alt(
        r"pleural (?:thickening|plaques?|calcifications?|scar(?:s|ring)?|fibrosis|reaction|irregularity|disease|abnormalit(?:y|ies))",
        r"(?:pleuro ?parenchymal|pleural parenchymal|pleural and parenchymal) (?:scar(?:s|ring)?|thickening|changes?|opacit(?:y|ies)|densit(?:y|ies)|fibrosis)",
        r"(?:calcified|pleural based) plaques?",
        r"(?:apical )?pleural cap(?:s|ping)?",
        r"apical (?:capping|caps?|thickening)",
        r"thickening of the (?:right |left |bilateral )?pleura",
        r"thickened pleura",
        r"fibrothorax",
        r"(?:pulmonary |lung |interstitial |apical |parenchymal )?fibro(?:sis|tic (?:changes?|scarring))",
    )),
    # ------------------------------------------------------------------ Fracture
    Entry(("Fracture",), "p", _alt(
        r"fractur(?:e|es|ed|ing)",
        r"fx",
        r"(?:vertebral |wedge |burst )?compression (?:deformit(?:y|ies)|fractures?)",
        r"(?:vertebral|wedge) deformit(?:y|ies)",
        r"callus(?: formation)?",
        r"broken (?:ribs?|clavicle|bones?)",
    )),
    # ------------------------------------------------------------------ Support Devices
    Entry(("Support Devices",), "p", _alt(
        r"(?:endotracheal|et|tracheostomy|trach|nasogastric|ng|orogastric|og|enteric|feeding|dobhoff|dobbhoff|chest|"
        r"pleural|mediastinal|gastrostomy|jejunostomy|g|j|peg|nasoduodenal|nasojejunal|drainage|thoracostomy|"
        r"pigtail|gastric|nasoenteric|esophageal|rectal) (?:tubes?|catheters?|drains?)",
        r"ett",
        r"tracheostomy",
        r"(?:central venous|central|venous|ij|internal jugular|jugular|subclavian|picc|swan ganz|pulmonary artery|pa|"
        r"arterial|dialysis|hemodialysis|tunneled|tunnelled|port|pleural|pigtail|triple lumen|double lumen|"
        r"femoral|introducer|cordis|infusion|intra aortic|support|monitoring|vascular|iv) (?:lines?|catheters?|sheaths?)",
        r"lines (?:and|or) tubes",
        r"tubes (?:and|or) lines",
        r"picc",
        r"catheters?",
        r"(?:support|monitoring|medical|cardiac|implanted|implantable|electronic) devices?",
        r"pace ?makers?",
        r"pacers?",
        r"a?icds?",
        r"(?:cardiac )?defibrillators?",
        r"(?:pacer|pacemaker|pacing|icd|aicd|defibrillator|transvenous|epicardial|cardiac|ekg|ecg|monitoring|telemetry) (?:leads?|wires?|generators?|devices?)",
        r"loop recorder",
        r"port ?a ?caths?",
        r"mediports?",
        r"(?:chest|chest wall|subcutaneous|infusion|power) ports?",
        r"stents?",
        r"(?:prosthetic|mechanical|bioprosthetic|replaced|artificial) (?:aortic |mitral |tricuspid |pulmonic |heart )?valves?",
        r"(?:aortic|mitral|tricuspid) valve (?:replacement|prosthesis|repair|ring)",
        r"(?:tavr|tavi|avr|mvr)",
        r"(?:mitral |annuloplasty )ring",
        r"(?:sternotomy|sternal|cerclage|surgical) wires?",
        r"(?:median )?sternotomy",
        r"(?:surgical|vascular|embolization|aneurysm) (?:clips?|coils?)",
        r"(?:orthopedic|surgical|fixation|spinal|spine|cervical|thoracic|internal fixation) (?:hardware|rods?|plates?|screws?|fusion)",
        r"hardware",
        r"(?:intra ?aortic )?balloon pump",
        r"iabp",
        r"impella",
        r"l ?vad",
        r"ecmo(?: cannulas?)?",
        r"cannulas?",
        r"drains?",
        r"(?:ventriculoperitoneal|vp) shunt(?: (?:tubing|catheter))?",
        r"shunt (?:tubing|catheter)",
        r"electrodes?",
        r"(?:transvenous|pacing|pacer|pacemaker) leads?",
        r"leads? (?:terminat|project|overl|in the right|extend)\w*",
        r"(?:nerve|vagal|spinal cord) stimulator",
    )),
    Entry(("Support Devices",), "n", _alt(
        r"extubat(?:ed|ion)",
        r"decannulat(?:ed|ion)",
    )),
)

# Cheap substring prefilter per finding: a finding's regex runs only on text containing one of these.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("mediastin",),
    "Cardiomegaly": ("cardi", "heart", "ventric", "atri"),
    "Lung Opacity": ("opaci", "infiltrat", "air", "ground", "haz", "densit", "marking", "reticul", "interstitial",
                     "clear", "lung"),
    "Lung Lesion": ("nodul", "mass", "lesion", "tumo", "neoplas", "carcino", "cancer", "malig", "metasta", "cavit"),
    "Edema": ("edema", "congest", "failure", "chf", "overload", "engorge", "cephali", "kerley", "vascul",
              "vessel", "plethora", "redistrib"),
    "Consolidation": ("consolidat", "bronchogram", "clear", "lung"),
    "Pneumonia": ("pneumoni", "infect", "aspiration", "clear", "lung"),
    "Atelectasis": ("atelecta", "collapse", "volume loss"),
    "Pneumothorax": ("pneumo", "ptx", "thora"),
    "Pleural Effusion": ("effusion", "fluid", "thora", "empyema", "phrenic", "cp ", "sulc", "recess", "meniscus",
                         "diaphragmatic"),
    "Pleural Other": ("pleura", "plaque", "cap", "fibro", "thicken"),
    "Fracture": ("fractur", "fx", "compression", "deformit", "callus", "broken"),
    "Support Devices": ("tube", "cath", "line", "ett", "trach", "picc", "device", "pace", "icd", "defib", "lead",
                        "port", "stent", "valve", "wire", "sternotomy", "clip", "coil", "hardware", "rod", "plate",
                        "screw", "fusion", "pump", "iabp", "impella", "vad", "ecmo", "cannul", "drain", "shunt",
                        "electrode", "stimulator", "recorder", "extubat", "sheath", "tavr", "tavi", "avr", "mvr",
                        "ring"),
}


def compile_finding_patterns(
    clear_lungs: bool = False,
) -> list[tuple[int, re.Pattern[str], tuple[str, ...], dict[str, str]]]:
    """Compile one regex per finding (No Finding excluded).

    Args:
        clear_lungs: include the "the lungs are clear" statement as a negative mention of
            :data:`CLEAR_LUNG_FINDINGS` (``unicxr`` convention); the CheXpert convention leaves them
            unmentioned.

    Returns:
        A list of ``(finding index, compiled pattern, prefilter keywords, group name -> kind)``. Each
        entry's alternative is a named group ``g<k>``; ``kinds[name]`` is its kind (p/w/n/u).
    """
    out = []
    for fi, name in enumerate(FINDINGS):
        if name == "No Finding":
            continue
        parts: list[str] = []
        kinds: dict[str, str] = {}
        # fixed-value statements first so that e.g. "heart size is normal" is not read as a mention
        order = {"u": 0, "n": 1, "w": 2, "p": 3}
        entries = sorted(
            (e for e in ENTRIES if name in e.findings and (clear_lungs or e.findings != CLEAR_LUNG_FINDINGS)),
            key=lambda e: order[e.kind],
        )
        for k, e in enumerate(entries):
            gname = f"g{k}"
            kinds[gname] = e.kind
            parts.append(f"(?P<{gname}>{e.pattern})")
        pattern = re.compile(r" (?:" + "|".join(parts) + r")(?![a-z0-9])")
        out.append((fi, pattern, KEYWORDS[name], kinds))
    return out
