"""Reconstruction quality of a latent autoencoder (``unicxr eval recon``).

On one split of an image cache: PSNR, SSIM and MS-SSIM of ``decode(encode(x))`` against ``x``; FD
between the features of originals and reconstructions in any ``--features`` space; per-finding AUROC
of the evaluation encoder on originals vs on reconstructions (do findings survive the round trip?), with
``n_boot`` a paired bootstrap CI of each change (``delta_ci``: both AUROCs on the same resamples);
encode/decode throughput; and the same image metrics for a bicubic down/up-sampling baseline that
keeps as many values as the latent (side ``round(sqrt(C·h·w))``). A VQ model stores one code index of
``log2(K)`` bits per latent position (N with N residual codebooks), far less than ``C`` floats; it is also
scored against a second baseline, ``bicubic_bits``, that keeps as many 8-bit pixels as its indices hold
bits (side ``round(sqrt(h·w·N·log2(K) / 8))``). Writes ``metrics.json``,
``report.md``, ``report.html`` and ``grid.png`` (rows: original | reconstruction | 4×|difference|).
With ``grid_findings`` it also writes ``grid_findings.png``: for each named finding, the positive images
whose finding probability the round trip lowered most (the first positives when no evaluation encoder
is given), so one can look at what a finding loses (device lines, a pneumothorax edge, a fracture).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unicxr.labels import FINDINGS, UncertainPolicy, apply_policy, finding_index
from unicxr.utils import UnicxrError

__all__ = ["evaluate_recon", "bicubic_baseline", "image_scores", "render_recon_markdown", "render_recon_html"]


def bicubic_baseline(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bicubic (antialiased) downsampling of (B, 1, S, S) to ``side`` and back to S, clamped to [0, 1]."""
    s = x.shape[-1]
    small = F.interpolate(x.float(), size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(small, size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)


def image_scores(recon: torch.Tensor, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image PSNR (dB), SSIM and MS-SSIM of reconstructions vs originals, both (B, 1, H, W) in [0, 1]."""
    from monai.metrics.regression import compute_ssim_and_cs

    from unicxr.eval.image_metrics import ms_ssim

    recon, x = recon.float(), x.float()
    mse = (recon - x).pow(2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
    ssim, _ = compute_ssim_and_cs(recon, x, spatial_dims=2, kernel_size=(11, 11), kernel_sigma=(1.5, 1.5),
                                  data_range=1.0, kernel_type="gaussian", k1=0.01, k2=0.03)
    ms = ms_ssim(recon, x)
    return {"psnr": psnr.numpy(), "ssim": ssim.flatten(1).mean(1).numpy(), "ms_ssim": ms.numpy()}


def _summary(scores: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
    out = {}
    for k, parts in scores.items():
        v = np.concatenate(parts).astype(np.float64)
        out[k] = {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
    return out


def evaluate_recon(
    model: str | Path,
    cache: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    features: str | None = None,
    batch_size: int = 16,
    max_images: int | None = None,
    n_grid: int = 8,
    min_count: int = 20,
    baseline: bool = True,
    n_boot: int = 0,
    grid_findings: str | list[str] | None = None,
    grid_per_finding: int = 2,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the reconstructions of autoencoder ``model`` on ``cache``/``split`` (see module doc).

    Returns the result dict written to ``OUT/metrics.json``.
    """
    from tqdm.auto import tqdm

    from unicxr.data.cache import CXRCache
    from unicxr.eval.image_metrics import bootstrap_fd, frechet_distance
    from unicxr.models.autoencoder import load_autoencoder
    from unicxr.utils.io import atomic_write_text
    from unicxr.utils.media import image_grid, save_png
    from unicxr.utils.metrics import auroc

    if isinstance(grid_findings, str):
        grid_findings = [t for t in grid_findings.split(",") if t.strip()]
    try:
        shown = [FINDINGS[finding_index(t)] for t in grid_findings or ()]
    except KeyError as e:
        raise UnicxrError(f"--grid-findings: {e.args[0]}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ae, model_dir = load_autoencoder(model, device=device)
    ds = CXRCache(cache, split=None if split == "all" else split)
    n = len(ds) if max_images is None else min(len(ds), int(max_images))
    size = ds.size
    latent_shape = tuple(ae.latent_shape(size))
    n_values = int(np.prod(latent_shape))
    side = max(1, int(round(math.sqrt(n_values))))
    # bicubic copies scored beside the autoencoder: name -> kept side. A VQ latent is stored as code
    # indices, so its equal-storage copy keeps as many 8-bit pixels as the indices hold bits.
    sides: dict[str, int] = {"bicubic": side} if baseline else {}
    code_bits = None
    if baseline and ae.model_type == "vqvae":
        code_bits = n_values / latent_shape[0] * ae.config.num_quantizers * math.log2(ae.config.num_embeddings)
        sides["bicubic_bits"] = max(1, int(round(math.sqrt(code_bits / 8))))
    extractor = None
    if features:
        from unicxr.eval.features import parse_features_spec

        extractor = parse_features_spec(features, device=device)

    scores: dict[str, list[np.ndarray]] = {k: [] for k in ("psnr", "ssim", "ms_ssim")}
    base_scores = {b: {k: [] for k in ("psnr", "ssim", "ms_ssim")} for b in sides}
    feats: dict[str, list[torch.Tensor]] = {"orig": [], "recon": [], **{b: [] for b in sides}}
    probs: dict[str, list[torch.Tensor]] = {"orig": [], "recon": []}
    t_enc = t_dec = 0.0
    grid_rows: list[torch.Tensor] = []
    with torch.no_grad(), tqdm(total=n, desc="reconstructing", unit="img", disable=not progress) as bar:
        for s in range(0, n, batch_size):
            idx = list(range(s, min(s + batch_size, n)))
            x = ds.batch(idx)["image"].to(device)
            t0 = time.perf_counter()
            z = ae.encode(x)
            t1 = time.perf_counter()
            recon = ae.decode(z).clamp(0, 1)
            t2 = time.perf_counter()
            t_enc += t1 - t0
            t_dec += t2 - t1
            for k, v in image_scores(recon.cpu(), x.cpu()).items():
                scores[k].append(v)
            bases = {b: bicubic_baseline(x, sd) for b, sd in sides.items()}
            for b, base in bases.items():
                for k, v in image_scores(base.cpu(), x.cpu()).items():
                    base_scores[b][k].append(v)
            if extractor is not None:
                for name, imgs in (("orig", x), ("recon", recon)):
                    f, p = extractor.features_and_probabilities(imgs)
                    feats[name].append(f)
                    if p is not None:
                        probs[name].append(p)
                for b, base in bases.items():
                    feats[b].append(extractor(base))
            if sum(len(r) for r in grid_rows) < n_grid:
                k = n_grid - sum(len(r) for r in grid_rows)
                grid_rows.append(_grid_tiles(x[:k], recon[:k]))
            bar.update(len(idx))

    result: dict[str, Any] = {
        "model": str(model_dir),
        "model_type": ae.model_type,
        "cache": str(Path(cache)),
        "split": split,
        "n": n,
        "image_size": size,
        "latent_shape": list(latent_shape),
        "scale_factor": ae.config.scale_factor,
        "compression": float(size * size / n_values),
        "recon": _summary(scores),
        "throughput": {
            "encode_img_s": n / t_enc if t_enc > 0 else None,
            "decode_img_s": n / t_dec if t_dec > 0 else None,
            "batch_size": batch_size,
            "threads": torch.get_num_threads(),
            "device": device,
        },
    }
    for b, sd in sides.items():
        result[b] = {"side": sd, "n_values": sd * sd, **_summary(base_scores[b])}
    if code_bits is not None:
        result["bicubic_bits"]["code_bits"] = float(code_bits)
    if extractor is not None:
        fo, fr = torch.cat(feats["orig"]).numpy(), torch.cat(feats["recon"]).numpy()
        result["features"] = extractor.describe()
        result["recon"]["fd"] = (bootstrap_fd(fo, fr, n_boot=n_boot) if n_boot else
                                 {"value": frechet_distance(fo, fr, warn=False)})
        for b in sides:
            result[b]["fd"] = {"value": frechet_distance(fo, torch.cat(feats[b]).numpy(), warn=False)}
        if probs["orig"]:
            po, pr = torch.cat(probs["orig"]).numpy(), torch.cat(probs["recon"]).numpy()
            target = apply_policy(ds.labels[:n], UncertainPolicy.IGNORE, blank_as_negative=True)
            per = {}
            for j, name in enumerate(FINDINGS):
                y = target[:, j]
                n_pos = int(np.nansum(y == 1))
                n_neg = int(np.nansum(y == 0))
                if n_pos == 0 or n_neg == 0 or np.isnan(po[:, j]).all():
                    continue
                a_o, a_r = auroc(y, po[:, j]), auroc(y, pr[:, j])
                per[name] = {"n_pos": n_pos, "n_neg": n_neg, "auroc_orig": a_o, "auroc_recon": a_r,
                             "delta": a_r - a_o, "counted": bool(n_pos >= min_count and n_neg >= min_count)}
            if n_boot and per:
                from unicxr.eval.image_metrics import percentile_ci
                from unicxr.utils.metrics import paired_auroc_deltas

                cols = [FINDINGS.index(name) for name in per]
                reps = paired_auroc_deltas(target[:, cols], po[:, cols], pr[:, cols], n_boot=n_boot)
                for k, name in enumerate(per):
                    per[name]["delta_ci"] = list(percentile_ci(reps[:, k]))
            counted = [v["delta"] for v in per.values() if v["counted"]]
            result["auroc"] = {
                "per_finding": per,
                "min_count": min_count,
                "max_abs_delta": float(max(abs(d) for d in counted)) if counted else None,
                "mean_delta": float(np.mean(counted)) if counted else None,
            }
    if shown:
        result["grid_findings"] = _findings_grid(
            ae, ds, n, shown, grid_per_finding, probs, out, model_dir, device=device)
    grid = image_grid(torch.cat(grid_rows), nrow=3) if grid_rows else None
    if grid is not None:
        save_png(out / "grid.png", grid, {"columns": "original | reconstruction | 4x|difference|"},
                 synthetic=True, source=f"reconstructions by {model_dir}")
        result["grid"] = "grid.png"
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=float) + "\n")
    atomic_write_text(out / "report.md", render_recon_markdown(result))
    atomic_write_text(out / "report.html", render_recon_html(result))
    return result


def _f(x: Any, d: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{d}f}"


def _table(result: dict[str, Any]) -> list[list[str]]:
    rows = [["", "PSNR (dB)", "SSIM", "MS-SSIM", "FD"]]
    for key, label in (("recon", f"autoencoder {tuple(result['latent_shape'])}"),
                       ("bicubic", f"bicubic {result.get('bicubic', {}).get('side', '')}px (as many values)"),
                       ("bicubic_bits", f"bicubic {result.get('bicubic_bits', {}).get('side', '')}px (as many bits, "
                                        "8-bit pixels)")):
        r = result.get(key)
        if r is None:
            continue
        fd = r.get("fd", {}).get("value")
        rows.append([label, _f(r["psnr"]["mean"], 2), _f(r["ssim"]["mean"]), _f(r["ms_ssim"]["mean"]), _f(fd, 3)])
    return rows


def _auroc_rows(result: dict[str, Any]) -> list[list[str]]:
    a = result.get("auroc")
    if not a:
        return []
    rows = [["finding", "pos", "AUROC orig", "AUROC recon", "Δ [95% CI]", f"≥{a['min_count']} pos"]]
    for name, v in a["per_finding"].items():
        ci = v.get("delta_ci")
        ci_s = f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci and all(map(math.isfinite, ci)) else ""  # NaN: no resample had both classes
        rows.append([name, str(v["n_pos"]), _f(v["auroc_orig"]), _f(v["auroc_recon"]), f"{v['delta']:+.4f}{ci_s}",
                     "yes" if v["counted"] else "no"])
    return rows


def _grid_tiles(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Grid tiles (3B, 1, H, W) on the CPU: original, reconstruction and 4×|difference| of each image."""
    diff = ((recon - x).abs() * 4).clamp(0, 1)
    return torch.stack([x, recon, diff], 1).reshape(-1, *x.shape[1:]).cpu()


def _findings_grid(
    ae: Any, ds: Any, n: int, shown: list[str], per: int, probs: dict[str, list[torch.Tensor]], out: Path,
    model_dir: Path, *, device: str,
) -> dict[str, Any]:
    """``grid_findings.png``: for each finding in ``shown``, up to ``per`` positive images (label 1 among
    the first ``n``) as original | reconstruction | 4×|difference| rows, those whose probability fell
    most first when the evaluation encoder's probabilities are in ``probs``. Returns the row list."""
    from unicxr.utils.media import image_grid, save_png

    po = torch.cat(probs["orig"]).numpy() if probs["orig"] else None
    pr = torch.cat(probs["recon"]).numpy() if probs["recon"] else None
    rows: list[dict[str, Any]] = []
    for name in shown:
        j = FINDINGS.index(name)
        pos = np.flatnonzero(ds.labels[:n, j] == 1)
        if po is not None:
            pos = pos[np.argsort(-(po[pos, j] - pr[pos, j]), kind="stable")]
        for i in pos[:per]:
            row = {"finding": name, "index": int(i), "path": ds.meta(int(i), "path")}
            if po is not None:
                row.update(p_orig=float(po[i, j]), p_recon=float(pr[i, j]))
            rows.append(row)
    if not rows:
        return {"file": None, "rows": []}
    tiles = []
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            x = ds.batch([r["index"] for r in rows[start:start + 16]])["image"].to(device)
            tiles.append(_grid_tiles(x, ae.decode(ae.encode(x)).clamp(0, 1)))
    caption = "; ".join(f"{r['finding']} #{r['index']}" + (f" p {r['p_orig']:.2f}->{r['p_recon']:.2f}" if "p_orig" in r
                                                           else "") for r in rows)
    save_png(out / "grid_findings.png", image_grid(torch.cat(tiles), nrow=3),
             {"columns": "original | reconstruction | 4x|difference|", "rows": caption},
             synthetic=True, source=f"reconstructions by {model_dir}")
    return {"file": "grid_findings.png", "rows": rows}


def _finding_grid_lines(result: dict[str, Any]) -> list[str]:
    g = result.get("grid_findings") or {}
    return [f"{k + 1}. {r['finding']}, image {r['index']}" + (
        f": probability {r['p_orig']:.3f} → {r['p_recon']:.3f}" if "p_orig" in r else "") for k, r in enumerate(g.get("rows", []))]


def render_recon_markdown(result: dict[str, Any]) -> str:
    """The report as Markdown."""
    def md(rows: list[list[str]]) -> str:
        if not rows:
            return ""
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines) + "\n"

    t = result["throughput"]
    parts = [
        f"# Reconstruction report: {result['model']}\n",
        f"{result['n']} images of `{result['cache']}` (split {result['split']}), {result['image_size']} px → "
        f"latent {tuple(result['latent_shape'])} ({result['compression']:.1f}× fewer values), scale factor "
        f"{_f(result['scale_factor'])}.\n",
        md(_table(result)),
        f"Encode {_f(t['encode_img_s'], 1)} img/s, decode {_f(t['decode_img_s'], 1)} img/s "
        f"(batch {t['batch_size']}, {t['threads']} threads, {t['device']}).\n",
    ]
    if result.get("auroc"):
        a = result["auroc"]
        parts += ["## Findings through the round trip (evaluation encoder)\n", md(_auroc_rows(result)),
                  f"Max |Δ AUROC| over findings with ≥ {a['min_count']} positives: {_f(a['max_abs_delta'])}.\n"]
    if result.get("grid"):
        parts += ["## Grid (original | reconstruction | 4×|difference|; synthetic)\n", f"![grid]({result['grid']})\n"]
    if (result.get("grid_findings") or {}).get("file"):
        parts += ["## Positives by finding (rows in order; the largest probability drop first)\n",
                  "\n".join(_finding_grid_lines(result)) + "\n", f"![findings]({result['grid_findings']['file']})\n"]
    return "\n".join(parts)


def render_recon_html(result: dict[str, Any]) -> str:
    """The report as a standalone HTML page (the grid is linked, not embedded)."""
    import html

    def table(rows: list[list[str]]) -> str:
        if not rows:
            return ""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    t = result["throughput"]
    body = [
        f"<h1>Reconstruction report</h1><p><code>{html.escape(result['model'])}</code> on "
        f"<code>{html.escape(result['cache'])}</code> (split {html.escape(str(result['split']))}, {result['n']} images, "
        f"{result['image_size']} px → latent {tuple(result['latent_shape'])}).</p>",
        table(_table(result)),
        f"<p>Encode {_f(t['encode_img_s'], 1)} img/s, decode {_f(t['decode_img_s'], 1)} img/s.</p>",
    ]
    if result.get("auroc"):
        body += ["<h2>Findings through the round trip</h2>", table(_auroc_rows(result))]
    if result.get("grid"):
        body += ["<h2>original | reconstruction | 4×|difference| (synthetic)</h2>",
                 f"<img src=\"{html.escape(result['grid'])}\" style=\"max-width:100%;image-rendering:pixelated\">"]
    if (result.get("grid_findings") or {}).get("file"):
        items = "".join(f"<li>{html.escape(line.split('. ', 1)[1])}</li>" for line in _finding_grid_lines(result))
        body += ["<h2>Positives by finding (largest probability drop first)</h2>", f"<ol>{items}</ol>",
                 f"<img src=\"{html.escape(result['grid_findings']['file'])}\" style=\"max-width:100%;image-rendering:pixelated\">"]
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    return f"<!doctype html><html><head><meta charset=\"utf-8\"><title>unicxr eval recon</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
