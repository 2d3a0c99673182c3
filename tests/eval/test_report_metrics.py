"""Report metrics: NLG equal to pycocoevalcap to 1e-6; CE metrics checked by hand; bootstrap; CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from unicxr.eval.report_metrics import (
    bleu,
    bootstrap_ci,
    ce_counts,
    ce_metrics,
    cider_d,
    evaluate_reports,
    lcs_length,
    metrics_markdown,
    rouge_l,
    tokenize,
)
from unicxr.labels import FINDINGS

SENTS = [
    "FINDINGS: The lungs are clear. Heart size is normal. No pleural effusion or pneumothorax.",
    "Moderate right pleural effusion with adjacent atelectasis, 4.5 cm. Stable cardiomegaly.",
    "Endotracheal tube terminates 4 cm above the carina; nasogastric tube in the stomach.",
    "Mild pulmonary edema. Small bilateral pleural effusions. No focal consolidation.",
    "Patchy opacity in the left lower lobe could represent pneumonia or atelectasis.",
    "No acute cardiopulmonary process.",
    "The heart is mildly enlarged. The lungs are clear. No pneumothorax.",
    "Right PICC line terminates in the mid SVC. No pneumothorax.",
]


def _test_set(n: int = 60, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Hypotheses and 1-3 references per item built by shuffling/cropping sentences (deterministic)."""
    rng = np.random.default_rng(seed)
    hyps, refs = [], []
    for _ in range(n):
        toks = [tokenize(SENTS[j]) for j in rng.integers(0, len(SENTS), size=rng.integers(1, 4))]
        h = " ".join(toks).split()
        cut = int(rng.integers(0, max(len(h) // 3, 1)))
        hyps.append(" ".join(h[cut:]))
        refs.append([tokenize(" ".join(SENTS[j] for j in rng.integers(0, len(SENTS), size=2)))
                     for _ in range(int(rng.integers(1, 4)))])
    hyps[0] = ""  # an empty hypothesis
    hyps[1] = "the"  # a one-token hypothesis
    refs[2] = [hyps[2]]  # an exact match
    return hyps, refs


def test_tokenize():
    assert tokenize("Small R effusion, 4.5 cm. Patient's ET-tube") == "small r effusion , 4.5 cm . patient's et - tube"
    assert tokenize(None) == "" and tokenize("") == ""


@pytest.mark.parametrize("seed", [0, 1])
def test_nlg_equals_pycocoevalcap(seed):
    coco_bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = _test_set(seed=seed)
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    ref_bleu, _ = coco_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    ref_rouge, ref_rouge_per = Rouge().compute_score(gts, res)
    ref_cider, ref_cider_per = Cider().compute_score(gts, res)
    np.testing.assert_allclose(bleu(hyps, refs), ref_bleu, rtol=0, atol=1e-6)
    r, r_per = rouge_l(hyps, refs)
    c, c_per = cider_d(hyps, refs)
    assert abs(r - ref_rouge) < 1e-6 and abs(c - ref_cider) < 1e-6
    np.testing.assert_allclose(r_per, ref_rouge_per, atol=1e-6)
    np.testing.assert_allclose(c_per, ref_cider_per, atol=1e-6)


def test_lcs_matches_dynamic_programming():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = list(rng.integers(0, 5, size=rng.integers(0, 30)).astype(str))
        b = list(rng.integers(0, 5, size=rng.integers(0, 30)).astype(str))
        dp = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                dp[i, j] = dp[i - 1, j - 1] + 1 if a[i - 1] == b[j - 1] else max(dp[i - 1, j], dp[i, j - 1])
        assert lcs_length(a, b) == dp[-1, -1]


def _labels(rows: list[dict[str, float]]) -> np.ndarray:
    out = np.full((len(rows), 14), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        for k, v in r.items():
            out[i, FINDINGS.index(k)] = v
    return out


def test_ce_metrics_by_hand_both_policies():
    # 3 reports. Only Cardiomegaly (CE5), Edema (CE5) and Fracture (not CE5) are mentioned.
    pred = _labels([{"Cardiomegaly": 1, "Edema": -1}, {"Cardiomegaly": 0, "Fracture": 1}, {"Edema": 1}])
    ref = _labels([{"Cardiomegaly": 1, "Edema": 1}, {"Cardiomegaly": -1}, {"Edema": 0, "Fracture": 1}])
    # No Finding is blank in both -> negative everywhere.
    m = ce_metrics(pred, ref)
    # uncertain as negative: pred Cm [1,0,0] ref [1,0,0]; Ed pred [0,0,1] ref [1,0,0]; Fx pred [0,1,0] ref [0,0,1]
    neg = m["uncertain_as_negative"]
    pf = neg["per_finding"]
    assert (pf["Cardiomegaly"]["precision"], pf["Cardiomegaly"]["recall"], pf["Cardiomegaly"]["f1"]) == (1, 1, 1)
    assert (pf["Edema"]["precision"], pf["Edema"]["recall"], pf["Edema"]["f1"]) == (0, 0, 0)
    assert pf["Fracture"]["support"] == 1 and pf["Fracture"]["predicted"] == 1 and pf["Fracture"]["f1"] == 0
    # micro over 14: TP=1 (Cm), FP=2 (Ed r3, Fx r2), FN=2 (Ed r1, Fx r3)
    assert neg["all14"]["micro_precision"] == pytest.approx(1 / 3)
    assert neg["all14"]["micro_recall"] == pytest.approx(1 / 3)
    assert neg["all14"]["micro_f1"] == pytest.approx(1 / 3)
    # macro over 14: only Cardiomegaly has F1 1 -> 1/14
    assert neg["all14"]["macro_f1"] == pytest.approx(1 / 14)
    # CE5 (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion): TP=1, FP=1, FN=1
    assert neg["ce5"]["micro_f1"] == pytest.approx(0.5)
    assert neg["ce5"]["macro_f1"] == pytest.approx(1 / 5)
    # uncertain as positive: Cm pred [1,0,0] ref [1,1,0]; Ed pred [1,0,1] ref [1,0,0]; Fx unchanged
    pos = m["uncertain_as_positive"]
    pf = pos["per_finding"]
    assert pf["Cardiomegaly"]["precision"] == 1 and pf["Cardiomegaly"]["recall"] == 0.5
    assert pf["Cardiomegaly"]["f1"] == pytest.approx(2 / 3)
    assert pf["Edema"]["precision"] == 0.5 and pf["Edema"]["recall"] == 1 and pf["Edema"]["f1"] == pytest.approx(2 / 3)
    # micro 14: TP=2 (Cm r1, Ed r1), FP=2 (Ed r3, Fx r2), FN=2 (Cm r2, Fx r3)
    assert pos["all14"]["micro_f1"] == pytest.approx(0.5)
    # CE5: TP=2, FP=1, FN=1 -> P=R=F1=2/3 ; macro = (2/3 + 2/3) / 5
    assert pos["ce5"]["micro_precision"] == pytest.approx(2 / 3)
    assert pos["ce5"]["micro_recall"] == pytest.approx(2 / 3)
    assert pos["ce5"]["macro_f1"] == pytest.approx((4 / 3) / 5)
    assert pos["ce5"]["macro_precision"] == pytest.approx((1 + 0.5) / 5)


def test_ce_counts_shape_and_errors():
    a = _labels([{"Edema": 1}])
    assert ce_counts(a, a, "uncertain_as_negative").shape == (1, 14, 3)
    with pytest.raises(ValueError):
        ce_metrics(a, np.zeros((2, 14)))


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    hyps, refs = _test_set(n=40)
    texts = [h or "no acute process" for h in hyps]
    reft = [r[0] for r in refs]
    r1 = evaluate_reports(texts, reft, n_boot=200, seed=5)
    r2 = evaluate_reports(texts, reft, n_boot=200, seed=5)
    r3 = evaluate_reports(texts, reft, n_boot=200, seed=6)
    assert r1["ci"] == r2["ci"] and r1["ci"] != r3["ci"]
    for k, v in r1["nlg"].items():
        lo, hi = r1["ci"]["nlg"][k]
        assert lo <= hi and lo - 0.05 <= v <= hi + 0.05, k
    lo, hi = r1["ci"]["uncertain_as_negative"]["ce5/micro_f1"]
    assert 0 <= lo <= hi <= 1


def test_bootstrap_ci_identity_resample():
    # with one report, every resample equals the data: the interval collapses on the estimate
    stats = {"rouge": np.array([0.25]), "cider": np.array([1.5])}
    ci = bootstrap_ci(stats, n_boot=20, seed=0)
    assert ci["nlg"]["ROUGE-L"] == [0.25, 0.25] and ci["nlg"]["CIDEr-D"] == [1.5, 1.5]


def test_evaluate_identical_reports_is_perfect():
    texts = SENTS
    r = evaluate_reports(texts, texts, n_boot=0)
    assert r["nlg"]["BLEU-1"] == pytest.approx(1.0) and r["nlg"]["ROUGE-L"] == pytest.approx(1.0)
    for pol in ("uncertain_as_negative", "uncertain_as_positive"):
        assert r["ce"][pol]["all14"]["micro_f1"] == pytest.approx(1.0)
    md = metrics_markdown(r)
    assert "BLEU-4" in md and "CE5" in md and "Support Devices" in md


def test_eval_reports_cli(tmp_path, cli):
    ref = pd.DataFrame({"study_id": [f"s{i}" for i in range(8)], "report": SENTS})
    pred = ref.sample(frac=1.0, random_state=0).reset_index(drop=True)
    pred["report"] = list(reversed(SENTS))
    ref.to_csv(tmp_path / "ref.csv", index=False)
    pred.to_csv(tmp_path / "pred.csv", index=False)
    res = cli("eval", "reports", "--pred", str(tmp_path / "pred.csv"), "--ref", str(tmp_path / "ref.csv"),
              "--out", str(tmp_path / "out"), "--bootstrap", "50")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["n"] == 8 and set(m["ce"]) == {"uncertain_as_negative", "uncertain_as_positive"}
    # joined on study_id, not on row order
    hyp = dict(zip(pred.study_id, pred.report, strict=True))
    want = evaluate_reports([hyp[s] for s in ref.study_id], SENTS, n_boot=0)
    assert math.isclose(m["nlg"]["BLEU-4"], want["nlg"]["BLEU-4"], abs_tol=1e-12)
    assert (tmp_path / "out" / "metrics.md").read_text().startswith("# Report metrics (8 reports)")
    bad = cli("eval", "reports", "--pred", str(tmp_path / "pred.csv"), "--ref", str(tmp_path / "nope.csv"))
    assert bad.returncode == 2 and "nope.csv" in bad.stderr
