"""Does an image show a finding on the side its text says? (``unicxr eval laterality``)

A generator prompted with "left pleural effusion" should draw it on the patient's left, which is the
image's right. This check reads the side from the text (:mod:`unicxr.text.laterality`) and from the
image with the evaluation encoder (a ``cxr_classifier`` run):

* **Image side probe.** The encoder's last feature map (B, D, h, w) is averaged over the image's left
  and over its right half (L, R: (B, D) each); a logistic regression on the standardised
  ``[L − R, L + R]`` separates "left" from "right" for one finding. It is fitted on the real cache's
  ``fit_split`` (default train) images whose report puts the finding on one side, and never on the
  images it scores.
* **Its ceiling.** The probe's accuracy on the real ``split`` (default test) images with a one-sided
  report: how often the check itself is right on real images. A fake set cannot be expected to score
  above it.
* **The fakes.** The fraction of fake images whose prompt puts the finding on one side and whose probe
  decision agrees, with a bootstrap CI, and apart for left and for right prompts (``agree_by_side``: a
  generator that draws every finding on one side scores 1.0 on that side and 0.0 on the other).
  Bilateral and side-less prompts are left out.

Agreement on real phantom images is measured against sides parsed from reports that our own phantom
wrote, so it shows that the check is consistent on this data, not that it is accurate on real CXRs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_FINDINGS", "SideProbe", "half_features", "evaluate_laterality", "render_laterality"]

DEFAULT_FINDINGS = ("Pleural Effusion", "Pneumothorax")


@torch.no_grad()
def half_features(model: Any, ds: Any, indices: list[int], *, batch_size: int = 32, progress: bool = False,
                  desc: str = "features") -> torch.Tensor:
    """``[L − R, L + R]`` (N, 2D) of the encoder's last feature map averaged over the left and the right
    half of each image ``ds[i]["image"]`` (1, H, W) for ``i`` in ``indices``."""
    from tqdm.auto import tqdm

    out = []
    for s in tqdm(range(0, len(indices), batch_size), desc=desc, disable=not progress, leave=False):
        x = torch.stack([ds[i]["image"] for i in indices[s : s + batch_size]])
        fm = model.feature_map(x).float()
        w = fm.shape[-1]
        if w < 2:
            from unicxr.utils.errors import UnicxrError

            raise UnicxrError(f"encoder: its feature map is {w} px wide; the side probe needs two halves "
                              "(an encoder with a larger model.image_size)")
        left, right = fm[..., : w // 2].mean((2, 3)), fm[..., w - w // 2 :].mean((2, 3))
        out.append(torch.cat([left - right, left + right], 1))
    return torch.cat(out) if out else torch.zeros(0, 0)


class SideProbe:
    """L2-regularised logistic regression: features (N, F) → P(the patient's left) (N,)."""

    def __init__(self, l2: float = 1e-2) -> None:
        self.l2 = float(l2)
        self.mean = self.std = self.w = self.b = None

    def fit(self, x: torch.Tensor, left: np.ndarray) -> SideProbe:
        """Fit on features x (N, F) and targets ``left`` (N,) bool (True: left, False: right)."""
        x = x.double()
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        xn = (x - self.mean) / self.std
        y = torch.as_tensor(np.asarray(left), dtype=torch.float64)
        w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(xn @ w + b, y) + self.l2 * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.w, self.b = w.detach(), b.detach()
        return self

    def predict_left(self, x: torch.Tensor) -> np.ndarray:
        """True where the probe puts the finding on the patient's left."""
        return ((((x.double() - self.mean) / self.std) @ self.w + self.b) > 0).numpy()


def _texts(ds: Any, prefer: tuple[str, ...]) -> list[str]:
    """Report/prompt text of every item of an image set (cache or folder)."""
    from unicxr.utils.errors import UnicxrError

    for name in prefer:
        seq = getattr(ds, name, None)
        if isinstance(seq, list):
            return [str(t) for t in seq]
    if callable(getattr(ds, "report", None)):
        return [ds.report(i) for i in range(len(ds))]
    raise UnicxrError(f"{getattr(ds, 'root', ds)}: no report or prompt text to read sides from")


def _agreement(hits: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    from unicxr.eval.image_metrics import percentile_ci

    n = len(hits)
    if n == 0:
        return {"n": 0, "agree": None, "ci": [None, None]}
    rng = np.random.default_rng(seed)
    boots = [float(hits[rng.integers(0, n, n)].mean()) for _ in range(n_boot)]
    lo, hi = percentile_ci(boots) if n_boot else (None, None)
    return {"n": int(n), "agree": float(hits.mean()), "ci": [lo, hi]}


def evaluate_laterality(
    real: str | Path,
    fake: str | Path | None,
    encoder: str | Path,
    *,
    findings: tuple[str, ...] = DEFAULT_FINDINGS,
    fit_split: str = "train",
    split: str = "test",
    max_fit: int | None = 4000,
    n_boot: int = 200,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the side probe on ``real``'s ``fit_split``, measure it on ``real``'s ``split`` and score
    ``fake`` (a folder whose ``metadata.csv`` has a ``prompt`` or ``report`` column); see the module
    docstring. Returns the JSON result (also written to ``out`` as laterality.json/.md)."""
    from unicxr.data.image_sets import open_image_set
    from unicxr.labels import FINDINGS
    from unicxr.models import load_model, resolve_model_dir
    from unicxr.models.classifier import CXRClassifier
    from unicxr.text.laterality import report_sides
    from unicxr.utils.errors import UnicxrError

    for f in findings:
        if f not in FINDINGS:
            raise UnicxrError(f"--findings: unknown finding {f!r}")
    enc_path = str(encoder).removeprefix("own:")
    model = load_model(resolve_model_dir(enc_path))
    if not isinstance(model, CXRClassifier):
        raise UnicxrError(f"{enc_path}: the laterality check needs a cxr_classifier run (the evaluation encoder)")
    model.eval()
    fit_ds = open_image_set(real, split=fit_split)
    test_ds = open_image_set(real, split=split)
    fake_ds = open_image_set(fake, split=None) if fake is not None else None
    fit_texts, test_texts = _texts(fit_ds, ("reports",)), _texts(test_ds, ("reports",))
    fake_texts = _texts(fake_ds, ("prompts", "reports")) if fake_ds is not None else []
    rows: dict[str, Any] = {}
    for f in findings:
        fit_side = np.array(report_sides(fit_texts, f))
        idx = np.flatnonzero(np.isin(fit_side, ("left", "right")))
        if max_fit is not None and len(idx) > max_fit:
            idx = np.sort(np.random.default_rng(seed).choice(idx, max_fit, replace=False))
        n_left = int((fit_side[idx] == "left").sum())
        if n_left < 5 or len(idx) - n_left < 5:
            raise UnicxrError(f"{real} ({fit_split}): {f}: {n_left} left and {len(idx) - n_left} right reports; "
                              "the side probe needs at least 5 of each")
        probe = SideProbe().fit(half_features(model, fit_ds, idx.tolist(), progress=progress, desc=f"fit {f}"),
                                fit_side[idx] == "left")
        row: dict[str, Any] = {"fit": {"n": int(len(idx)), "left": n_left}}
        for name, ds, texts in (("real", test_ds, test_texts), ("fake", fake_ds, fake_texts)):
            if ds is None:
                continue
            side = np.array(report_sides(texts, f))
            sel = np.flatnonzero(np.isin(side, ("left", "right")))
            pred = probe.predict_left(half_features(model, ds, sel.tolist(), progress=progress, desc=f"{name} {f}")
                                      ) if len(sel) else np.zeros(0, bool)
            is_left = side[sel] == "left"
            hits = pred == is_left
            row[name] = {**_agreement(hits.astype(np.float64), n_boot, seed),
                         "left": int(is_left.sum()),
                         "bilateral_or_unsided": int(np.isin(side, ("bilateral",)).sum()),
                         "agree_by_side": {k: float(hits[m].mean()) if m.any() else None
                                           for k, m in (("left", is_left), ("right", ~is_left))}}
        rows[f] = row
    result = {"real": str(real), "fake": None if fake is None else str(fake), "encoder": enc_path,
              "fit_split": fit_split, "split": split, "n_boot": n_boot, "seed": seed, "findings": rows}
    if out is not None:
        from unicxr.eval.image_eval import json_safe
        from unicxr.utils.io import atomic_write_text

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result = json_safe(result)
        atomic_write_text(out / "laterality.json", json.dumps(result, indent=2) + "\n")
        atomic_write_text(out / "laterality.md", render_laterality(result))
    return result


def render_laterality(result: dict[str, Any]) -> str:
    """Markdown table: per finding, the probe's agreement on real images (its ceiling) and on fakes."""

    def cell(r: dict[str, Any] | None) -> str:
        if not r or not r.get("n"):
            return "–"
        lo, hi = r["ci"]
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
        by = r.get("agree_by_side") or {}
        sides = "; ".join(f"{k} {v:.2f}" for k, v in by.items() if v is not None)
        return f"{r['agree']:.3f}{ci} (n={r['n']}{'; ' + sides if sides else ''})"

    lines = [
        f"Side agreement (text vs image) with encoder `{result['encoder']}`; probe fitted on "
        f"`{result['real']}` ({result['fit_split']}), scored on its {result['split']} split"
        + (f" and on `{result['fake']}`." if result["fake"] else "."),
        "",
        "| finding | probe fitted on | real images: agreement [95% CI] | fake images: agreement [95% CI] |",
        "|---|---|---|---|",
    ]
    for f, r in result["findings"].items():
        lines.append(f"| {f} | {r['fit']['n']} ({r['fit']['left']} left) | {cell(r.get('real'))} | "
                     f"{cell(r.get('fake'))} |")
    return "\n".join(lines) + "\n"
