"""Report-generation metrics: BLEU-1..4, ROUGE-L, CIDEr-D (COCO definitions) and clinical efficacy (CE).

NLG metrics follow the COCO caption evaluation code (``pycocoevalcap``) exactly — corpus-level BLEU
with the "closest" reference length, ROUGE-L with beta 1.2 averaged over reports, CIDEr-D with
sigma 6, clipping and document frequencies over the evaluated set — but take our own tokenization
(:func:`tokenize`: lower case, punctuation split off) instead of the Java PTB tokenizer.

CE metrics compare 14 labels of generated and reference reports (both labelled by the same
labeler) as binary tasks: blank → negative, uncertain → negative (``uncertain_as_negative``) or
positive (``uncertain_as_positive``). Precision/recall/F1 are given micro (pooled counts) and
macro (mean over findings) over all 14 findings and over :data:`unicxr.labels.CE5`, with a
per-finding table; a zero denominator gives 0 (scikit-learn's ``zero_division=0``).

Bootstrap 95% CIs resample reports with replacement (seeded). They reuse per-report sufficient
statistics, so BLEU is recomputed exactly per resample, and CIDEr-D keeps the document frequencies
of the full set.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from unicxr.labels import CE5, FINDINGS, UncertainPolicy, apply_policy

__all__ = [
    "tokenize",
    "bleu_stats",
    "bleu_from_stats",
    "bleu",
    "rouge_l",
    "lcs_length",
    "cider_d",
    "nlg_metrics",
    "ce_counts",
    "ce_metrics",
    "bootstrap_ci",
    "evaluate_reports",
    "metrics_markdown",
    "POLICIES",
]

POLICIES = (UncertainPolicy.AS_NEGATIVE, UncertainPolicy.AS_POSITIVE)
_TOKEN = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*|[^\sa-z0-9]")
_TINY, _SMALL = 1e-15, 1e-9


def tokenize(text: object) -> str:
    """Lower-case, split punctuation into separate tokens, join with single spaces.

    ``"Small R effusion, 4.5 cm."`` → ``"small r effusion , 4.5 cm ."`` (decimals and apostrophes
    inside words are kept). Non-strings give ``""``.
    """
    if not isinstance(text, str):
        return ""
    return " ".join(_TOKEN.findall(text.lower()))


def _as_refs(refs: Sequence[str | Sequence[str]]) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in refs]


def _ngrams(words: list[str], n: int) -> Counter:
    c: Counter = Counter()
    for k in range(1, n + 1):
        c.update(tuple(words[i : i + k]) for i in range(len(words) - k + 1))
    return c


# ----------------------------------------------------------------------------- BLEU
def bleu_stats(hyps: Sequence[str], refs: Sequence[str | Sequence[str]], n: int = 4) -> np.ndarray:
    """Per-report BLEU sufficient statistics.

    Args:
        hyps: N tokenized hypotheses (space-separated tokens).
        refs: N references (a string or a list of strings each).
        n: maximum n-gram order.

    Returns:
        float64 (N, 2 + 2n): ``testlen, reflen (closest), guess_1..n, correct_1..n``.
    """
    out = np.zeros((len(hyps), 2 + 2 * n), dtype=np.float64)
    for i, (h, rs) in enumerate(zip(hyps, _as_refs(refs), strict=True)):
        hw = h.split()
        maxc: dict[tuple[str, ...], int] = {}
        lens = []
        for r in rs:
            rw = r.split()
            lens.append(len(rw))
            for g, c in _ngrams(rw, n).items():
                if c > maxc.get(g, 0):
                    maxc[g] = c
        tl = len(hw)
        out[i, 0] = tl
        out[i, 1] = min((abs(ln - tl), ln) for ln in lens)[1]
        for k in range(1, n + 1):
            out[i, 1 + k] = max(0, tl - k + 1)
        for g, c in _ngrams(hw, n).items():
            out[i, 1 + n + len(g)] += min(maxc.get(g, 0), c)
    return out


def bleu_from_stats(stats: np.ndarray, n: int = 4) -> np.ndarray:
    """Corpus BLEU-1..n from :func:`bleu_stats` output.

    Args:
        stats: per-report statistics (N, 2 + 2n) (summed here) or already summed (2 + 2n,).
        n: maximum n-gram order.

    Returns:
        float64 (n,).
    """
    s = np.asarray(stats, dtype=np.float64)
    if s.ndim == 2:
        s = s.sum(axis=0)
    return _bleu_from_sums(s[None, :], n)[0]


def _bleu_from_sums(s: np.ndarray, n: int) -> np.ndarray:
    """(B, 2 + 2n) summed stats → (B, n) BLEU scores (COCO's arithmetic, in the same order)."""
    testlen, reflen = s[:, 0], s[:, 1]
    guess, correct = s[:, 2 : 2 + n], s[:, 2 + n : 2 + 2 * n]
    out = np.empty((s.shape[0], n), dtype=np.float64)
    for b in range(s.shape[0]):
        val = 1.0
        for k in range(n):
            val *= float(correct[b, k] + _TINY) / (guess[b, k] + _SMALL)
            out[b, k] = val ** (1.0 / (k + 1))
        ratio = (testlen[b] + _TINY) / (reflen[b] + _SMALL)
        if ratio < 1:
            out[b] *= math.exp(1 - 1 / ratio)
    return out


def bleu(hyps: Sequence[str], refs: Sequence[str | Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n (COCO, "closest" reference length) of tokenized texts."""
    return [float(v) for v in bleu_from_stats(bleu_stats(hyps, refs, n), n)]


# ----------------------------------------------------------------------------- ROUGE-L
def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, O(len(a)·len(b)/64))."""
    if not a or not b:
        return 0
    m = len(b)
    masks: dict[str, int] = {}
    for j, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << j)
    full = (1 << m) - 1
    v = full
    for tok in a:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def rouge_l(hyps: Sequence[str], refs: Sequence[str | Sequence[str]], beta: float = 1.2) -> tuple[float, np.ndarray]:
    """ROUGE-L F-measure (COCO: max precision and max recall over references, beta 1.2).

    Returns:
        ``(mean over reports, per-report scores (N,))``.
    """
    scores = np.zeros(len(hyps), dtype=np.float64)
    for i, (h, rs) in enumerate(zip(hyps, _as_refs(refs), strict=True)):
        tc = h.split(" ")
        prec, rec = [], []
        for r in rs:
            tr = r.split(" ")
            lcs = lcs_length(tr, tc)
            prec.append(lcs / float(len(tc)))
            rec.append(lcs / float(len(tr)))
        pm, rm = max(prec), max(rec)
        scores[i] = ((1 + beta**2) * pm * rm) / float(rm + beta**2 * pm) if pm != 0 and rm != 0 else 0.0
    return (float(np.mean(scores)) if len(scores) else float("nan")), scores


# ----------------------------------------------------------------------------- CIDEr-D
def cider_d(
    hyps: Sequence[str], refs: Sequence[str | Sequence[str]], n: int = 4, sigma: float = 6.0
) -> tuple[float, np.ndarray]:
    """CIDEr-D (COCO ``Cider``): tf-idf n-gram cosine with clipping and a Gaussian length penalty, x10.

    Document frequencies are computed over the references of the evaluated set.

    Returns:
        ``(mean over reports, per-report scores (N,))``.
    """
    refs_l = _as_refs(refs)
    ref_counts = [[_ngrams(r.split(), n) for r in rs] for rs in refs_l]
    hyp_counts = [_ngrams(h.split(), n) for h in hyps]
    df: Counter = Counter()
    for rcs in ref_counts:
        df.update({g for rc in rcs for g in rc})
    ref_len = np.log(float(len(refs_l))) if refs_l else 0.0

    def vec(cnts: Counter) -> tuple[list[dict], list[float], int]:
        v: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in cnts.items():
            k = len(g) - 1
            w = float(tf) * (ref_len - np.log(max(1.0, df.get(g, 0))))
            v[k][g] = w
            norm[k] += w**2
            if k == 1:
                length += tf
        return v, [float(np.sqrt(x)) for x in norm], length

    scores = np.zeros(len(hyps), dtype=np.float64)
    for i, (hc, rcs) in enumerate(zip(hyp_counts, ref_counts, strict=True)):
        vh, nh, lh = vec(hc)
        total = np.zeros(n)
        for rc in rcs:
            vr, nr, lr = vec(rc)
            delta = float(lh - lr)
            val = np.zeros(n)
            for k in range(n):
                for g, w in vh[k].items():
                    wr = vr[k].get(g, 0.0)
                    val[k] += min(w, wr) * wr
                if nh[k] != 0 and nr[k] != 0:
                    val[k] /= nh[k] * nr[k]
                val[k] *= np.e ** (-(delta**2) / (2 * sigma**2))
            total += val
        scores[i] = np.mean(total) / len(rcs) * 10.0
    return (float(np.mean(scores)) if len(scores) else float("nan")), scores


def nlg_metrics(hyps: Sequence[str], refs: Sequence[str | Sequence[str]], tokenized: bool = False) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of hypotheses vs references (raw text unless ``tokenized``)."""
    if not tokenized:
        hyps = [tokenize(h) for h in hyps]
        refs = [[tokenize(r)] if isinstance(r, str) else [tokenize(x) for x in r] for r in refs]
    b = bleu(hyps, refs)
    return {
        "BLEU-1": b[0], "BLEU-2": b[1], "BLEU-3": b[2], "BLEU-4": b[3],
        "ROUGE-L": rouge_l(hyps, refs)[0], "CIDEr-D": cider_d(hyps, refs)[0],
    }


# ----------------------------------------------------------------------------- clinical efficacy
def ce_counts(pred: np.ndarray, ref: np.ndarray, policy: UncertainPolicy | str) -> np.ndarray:
    """Per-report binary outcomes under a policy: int8 (N, 14, 3) with TP, FP, FN indicators."""
    p = apply_policy(pred, policy) == 1.0
    r = apply_policy(ref, policy) == 1.0
    return np.stack([p & r, p & ~r, ~p & r], axis=-1).astype(np.int8)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        rec = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1e-300), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-300), 0.0)
    return prec, rec, f1


def _ce_summary(sums: np.ndarray, idx: list[int]) -> dict[str, np.ndarray]:
    """sums (..., 14, 3) summed counts → micro/macro P/R/F1 over the findings ``idx`` (arrays (...,))."""
    s = sums[..., idx, :]
    tp, fp, fn = s[..., 0], s[..., 1], s[..., 2]
    p, r, f = _prf(tp, fp, fn)
    mp, mr, mf = _prf(tp.sum(-1), fp.sum(-1), fn.sum(-1))
    return {
        "micro_precision": mp, "micro_recall": mr, "micro_f1": mf,
        "macro_precision": p.mean(-1), "macro_recall": r.mean(-1), "macro_f1": f.mean(-1),
    }


_SUBSETS = {"all14": list(range(len(FINDINGS))), "ce5": [FINDINGS.index(f) for f in CE5]}


def ce_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """CE metrics for both uncertainty policies.

    Args:
        pred: labels of generated reports (N, 14), values 1/0/-1/NaN.
        ref: labels of reference reports (N, 14).

    Returns:
        ``{policy: {"all14": {...}, "ce5": {...}, "per_finding": {finding: {precision, recall, f1,
        support, predicted}}}}`` with plain floats.
    """
    pred = np.asarray(pred, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    if pred.shape != ref.shape or pred.ndim != 2 or pred.shape[1] != len(FINDINGS):
        raise ValueError(f"pred and ref must both be (N, 14), got {pred.shape} and {ref.shape}")
    out: dict[str, Any] = {}
    for pol in POLICIES:
        sums = ce_counts(pred, ref, pol).sum(axis=0).astype(np.float64)  # (14, 3)
        entry: dict[str, Any] = {k: {m: float(v) for m, v in _ce_summary(sums, idx).items()} for k, idx in _SUBSETS.items()}
        p, r, f = _prf(sums[:, 0], sums[:, 1], sums[:, 2])
        entry["per_finding"] = {
            name: {
                "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                "support": int(sums[i, 0] + sums[i, 2]), "predicted": int(sums[i, 0] + sums[i, 1]),
            }
            for i, name in enumerate(FINDINGS)
        }
        out[pol.value] = entry
    return out


# ----------------------------------------------------------------------------- bootstrap
def bootstrap_ci(
    stats: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, chunk: int = 100
) -> dict[str, dict[str, list[float]]]:
    """Percentile bootstrap CIs over reports.

    Args:
        stats: per-report arrays with the same first dimension N: ``"bleu"`` (N, 10) BLEU statistics,
            ``"rouge"`` (N,), ``"cider"`` (N,), and ``"ce:<policy>"`` (N, 14, 3) CE indicators.
        n_boot: number of resamples.
        seed: RNG seed (same seed ⇒ same intervals).
        alpha: 1 - confidence level.
        chunk: resamples processed at once (memory: chunk × N floats).

    Returns:
        ``{metric name: [low, high]}`` grouped as ``{"nlg": {...}, "<policy>": {"all14/micro_f1": [...]}}``.
    """
    n = next(iter(stats.values())).shape[0]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {}

    def put(key: str, vals: np.ndarray) -> None:
        samples.setdefault(key, []).append(np.asarray(vals, dtype=np.float64))

    done = 0
    while done < n_boot and n > 0:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        w = np.zeros((b, n), dtype=np.float64)
        for j in range(b):
            w[j] = np.bincount(idx[j], minlength=n)
        if "bleu" in stats:
            bl = _bleu_from_sums(w @ stats["bleu"], 4)
            for k in range(4):
                put(f"nlg/BLEU-{k + 1}", bl[:, k])
        if "rouge" in stats:
            put("nlg/ROUGE-L", w @ stats["rouge"] / n)
        if "cider" in stats:
            put("nlg/CIDEr-D", w @ stats["cider"] / n)
        for key, arr in stats.items():
            if not key.startswith("ce:"):
                continue
            pol = key[3:]
            sums = np.einsum("bn,nfc->bfc", w, arr.astype(np.float64))
            for sub, idxs in _SUBSETS.items():
                for m, v in _ce_summary(sums, idxs).items():
                    put(f"{pol}/{sub}/{m}", v)
        done += b
    out: dict[str, dict[str, list[float]]] = {}
    for key, parts in samples.items():
        vals = np.concatenate(parts)
        group, name = key.split("/", 1)
        lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        out.setdefault(group, {})[name] = [float(lo), float(hi)]
    return out


# ----------------------------------------------------------------------------- everything
def evaluate_reports(
    pred_texts: Sequence[str],
    ref_texts: Sequence[str],
    pred_labels: np.ndarray | None = None,
    ref_labels: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    section: str = "full",
) -> dict[str, Any]:
    """All report metrics for aligned generated/reference reports.

    Args:
        pred_texts, ref_texts: N generated and N reference reports.
        pred_labels, ref_labels: (N, 14) labels; labelled with the rule labeler when omitted.
        n_boot: bootstrap resamples for 95% CIs (0 = none).
        seed: bootstrap seed.
        section: report section given to the labeler.

    Returns:
        JSON-ready dict: ``n``, ``nlg``, ``ce`` (per policy), ``ci`` (when ``n_boot > 0``), ``settings``.
    """
    if len(pred_texts) != len(ref_texts):
        raise ValueError(f"{len(pred_texts)} generated vs {len(ref_texts)} reference reports")
    from unicxr.text.labeler import label_reports

    hyps = [tokenize(t) for t in pred_texts]
    refs = [[tokenize(t)] for t in ref_texts]
    if pred_labels is None:
        pred_labels = label_reports(list(pred_texts), section=section)
    if ref_labels is None:
        ref_labels = label_reports(list(ref_texts), section=section)
    bstats = bleu_stats(hyps, refs)
    b = bleu_from_stats(bstats)
    r_mean, r_per = rouge_l(hyps, refs)
    c_mean, c_per = cider_d(hyps, refs)
    result: dict[str, Any] = {
        "n": len(hyps),
        "nlg": {"BLEU-1": float(b[0]), "BLEU-2": float(b[1]), "BLEU-3": float(b[2]), "BLEU-4": float(b[3]),
                "ROUGE-L": r_mean, "CIDEr-D": c_mean},
        "ce": ce_metrics(pred_labels, ref_labels),
        "settings": {"tokenizer": "lower-case, punctuation split", "bleu_reflen": "closest", "rouge_beta": 1.2,
                     "cider_sigma": 6.0, "ce_blank": "negative", "zero_division": 0, "bootstrap": n_boot,
                     "seed": seed, "section": section},
    }
    if n_boot > 0 and len(hyps) > 0:
        stats: dict[str, np.ndarray] = {"bleu": bstats, "rouge": r_per, "cider": c_per}
        for pol in POLICIES:
            stats[f"ce:{pol.value}"] = ce_counts(pred_labels, ref_labels, pol)
        result["ci"] = bootstrap_ci(stats, n_boot=n_boot, seed=seed)
    return result


def metrics_markdown(result: dict[str, Any]) -> str:
    """Markdown summary of :func:`evaluate_reports` output (tables with 95% CIs when present)."""
    ci = result.get("ci", {})

    def fmt(v: float, lohi: list[float] | None = None) -> str:
        s = f"{v:.4f}"
        return f"{s} [{lohi[0]:.4f}, {lohi[1]:.4f}]" if lohi else s

    lines = [f"# Report metrics ({result['n']} reports)", "", "## Language (NLG)", "", "| metric | value [95% CI] |",
             "|---|---|"]
    for k, v in result["nlg"].items():
        lines.append(f"| {k} | {fmt(v, ci.get('nlg', {}).get(k))} |")
    for pol, entry in result["ce"].items():
        lines += ["", f"## Clinical efficacy: {pol.replace('_', ' ')}", "",
                  "| subset | micro P | micro R | micro F1 | macro P | macro R | macro F1 |", "|---|---|---|---|---|---|---|"]
        for sub in ("all14", "ce5"):
            e = entry[sub]
            c = ci.get(pol, {})
            cells = [fmt(e[m], c.get(f"{sub}/{m}")) for m in
                     ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1")]
            lines.append(f"| {'14 findings' if sub == 'all14' else 'CE5'} | " + " | ".join(cells) + " |")
        lines += ["", "| finding | precision | recall | F1 | support | predicted |", "|---|---|---|---|---|---|"]
        for name, e in entry["per_finding"].items():
            lines.append(f"| {name} | {e['precision']:.4f} | {e['recall']:.4f} | {e['f1']:.4f} | {e['support']} | {e['predicted']} |")
    s = result.get("settings", {})
    lines += ["", f"Settings: {', '.join(f'{k}={v}' for k, v in s.items())}", ""]
    return "\n".join(lines)
