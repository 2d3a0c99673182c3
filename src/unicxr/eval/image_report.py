"""Plots and the markdown/HTML section of ``unicxr eval images`` (matplotlib, Agg backend)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["pyplot", "save_figure", "plot_pca", "plot_per_finding_fd", "plot_alignment", "render_markdown",
           "render_html"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` as PNG (tight bounding box) atomically and close it."""
    import io

    from unicxr.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    pyplot().close(fig)
    return path


def plot_pca(
    real: np.ndarray, fake: np.ndarray, path: Path, *, title: str = "", seed: int = 0, max_points: int = 2000
) -> Path:
    """Scatter of real (N, D) and fake (M, D) features on the first two principal components of both."""
    plt = pyplot()
    rng = np.random.default_rng(seed)
    r = real[rng.choice(len(real), min(len(real), max_points), replace=False)].astype(np.float64)
    f = fake[rng.choice(len(fake), min(len(fake), max_points), replace=False)].astype(np.float64)
    pooled = np.concatenate([r, f])
    mu = pooled.mean(0)
    _, s, vt = np.linalg.svd(pooled - mu, full_matrices=False)
    var = s**2 / max(1.0, float((s**2).sum()))
    pr, pf = (r - mu) @ vt[:2].T, (f - mu) @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.scatter(pr[:, 0], pr[:, 1], s=6, alpha=0.5, label=f"real (n={len(real)})", color="#1f77b4")
    ax.scatter(pf[:, 0], pf[:, 1], s=6, alpha=0.5, label=f"fake (n={len(fake)})", color="#ff7f0e")
    ax.set_xlabel(f"PC1 ({100 * var[0]:.1f}%)")
    ax.set_ylabel(f"PC2 ({100 * var[1]:.1f}%)" if len(var) > 1 else "PC2")
    ax.set_title(title or "features: PCA of real vs fake", fontsize=9)
    ax.legend(fontsize=8, markerscale=2)
    return save_figure(fig, path)


def plot_per_finding_fd(
    per_finding: dict[str, dict[str, Any]], path: Path, *, title: str = ""
) -> Path | None:
    """Horizontal bars of per-finding FD with CI whiskers; None if no finding was scored."""
    rows = [(k, v) for k, v in per_finding.items() if "fd" in v]
    if not rows:
        return None
    plt = pyplot()
    vals = np.array([v["fd"] for _, v in rows])
    lo = np.array([v.get("ci_low", v["fd"]) for _, v in rows])
    hi = np.array([v.get("ci_high", v["fd"]) for _, v in rows])
    err = np.stack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
    fig, ax = plt.subplots(figsize=(6.0, 0.35 * len(rows) + 1.2))
    ax.barh(range(len(rows)), vals, xerr=err, color="#4c72b0", capsize=3)
    ax.set_yticks(range(len(rows)), [f"{n} ({v['n_real']}/{v['n_fake']})" for n, v in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("FD among images positive for the finding (real n / fake n)")
    ax.set_title(title or "per-finding FD", fontsize=9)
    return save_figure(fig, path)


def plot_alignment(alignment: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars: per-finding AUROC of the encoder on fake (prompted labels) vs real images."""
    rows = [(k, v) for k, v in alignment["per_finding"].items() if "skipped" not in v]
    if not rows:
        return None
    plt = pyplot()
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6.0, 0.35 * len(rows) + 1.2))
    ax.barh(
        y - 0.2, [v["auroc_real"] for _, v in rows], height=0.4, label="real (true labels)", color="#1f77b4"
    )
    ax.barh(y + 0.2, [v["auroc_fake"] for _, v in rows], height=0.4, label="fake (prompted)", color="#ff7f0e")
    ax.axvline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_yticks(y, [k for k, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AUROC of the evaluation encoder")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("prompt alignment", fontsize=9)
    return save_figure(fig, path)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return "–"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.3e}"
    return f"{x:.{digits}g}"


def _ci(lo: Any, hi: Any) -> str:
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return "–"
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def _rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    m = result["metrics"]
    rows = [
        ("FD", _fmt(m["fd"]["value"]), _ci(m["fd"]["ci_low"], m["fd"]["ci_high"])),
        ("KID (subset mean ± std)", f"{_fmt(m['kid']['mean'])} ± {_fmt(m['kid']['std'])}", "–"),
        ("KID (full sets)", _fmt(m["kid"]["full_set"]), _ci(m["kid"]["ci_low"], m["kid"]["ci_high"])),
        (
            f"MMD² (Gaussian, bw {_fmt(m['mmd']['bandwidth'], 3)})",
            _fmt(m["mmd"]["value"]),
            _ci(m["mmd"]["ci_low"], m["mmd"]["ci_high"]),
        ),
    ]
    if "prdc" in m:
        for key in ("precision", "recall", "density", "coverage"):
            v = m["prdc"][key]
            rows.append((f"{key} (k={m['prdc']['k']})", _fmt(v["value"]), _ci(v["ci_low"], v["ci_high"])))
    div = result.get("diversity")
    if div and div.get("ms_ssim") is not None:
        rows.append(
            (
                f"MS-SSIM among same-prompt fakes ({div['n_groups']} groups; lower = more diverse)",
                _fmt(div["ms_ssim"]),
                "–",
            )
        )
        if div.get("real_ms_ssim") is not None:
            rows.append(
                (
                    f"MS-SSIM among real images with the same positive findings ({div['n_groups_real']} groups; "
                    "fakes of those groups)",
                    f"{_fmt(div['real_ms_ssim'])} (fakes {_fmt(div['fake_ms_ssim_same_groups'])})",
                    "–",
                )
            )
    al = result.get("alignment")
    if al and al["findings_scored"]:
        ma = al["macro"]
        rows.append(
            (
                "alignment: macro AUROC fake / real",
                f"{_fmt(ma['auroc_fake'])} / {_fmt(ma['auroc_real'])}",
                "–",
            )
        )
        rows.append(("alignment: macro ratio", _fmt(ma["ratio"]), _ci(*(ma.get("ratio_ci") or (None, None)))))
    return rows


COOC_ROWS = 10  # co-occurrence rows shown in the reports (all are in metrics.json)


def _alignment_tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) of the per-finding alignment and of the largest co-occurrence drops."""
    al = result.get("alignment")
    if not al or not al.get("findings_scored"):
        return []
    rows = []
    for name in al["findings_scored"]:
        v = al["per_finding"][name]
        rows.append([
            name, f"{_fmt(v['auroc_fake'], 3)} {_ci(*(v.get('auroc_fake_ci') or (None, None)))}",
            _fmt(v["auroc_real"], 3), _fmt(v["ratio"], 3), f"{v['n_pos_fake']} / {v['n_neg_fake']}",
        ])
    tables = [(
        f"Prompt alignment per finding (encoder `{al.get('encoder', '?')}`; fake: prompted labels, real: true labels):",
        ["finding", "AUROC fake [95% CI]", "AUROC real", "ratio", "n pos / neg (fake)"], rows,
    )]
    co = [r for r in al.get("cooccurrence", []) if math.isfinite(r["drop_fake"])][:COOC_ROWS]
    if co:
        tables.append((
            "Largest alignment drops when another finding is prompted beside it (F-positives with vs without G, "
            "against all F-negatives; the real columns split the real images the same way, so a drop they share "
            "is the encoder's):",
            ["finding F", "beside G", "n with / without", "AUROC fake with / without", "drop [95% CI]",
             "AUROC real with / without"],
            [[r["finding"], r["with"], f"{r['n_with']} / {r['n_without']}",
              f"{_fmt(r['auroc_fake_with'], 3)} / {_fmt(r['auroc_fake_without'], 3)}",
              f"{_fmt(r['drop_fake'], 3)} {_ci(*(r.get('drop_fake_ci') or (None, None)))}",
              f"{_fmt(r['auroc_real_with'], 3)} / {_fmt(r['auroc_real_without'], 3)}"] for r in co],
        ))
    return tables


def render_markdown(result: dict[str, Any], plots: dict[str, str]) -> str:
    """Markdown section: sources, feature space, metric table with 95% CIs, per-finding FD, plots."""
    fe = result["features"]
    m = result["metrics"]
    lines = [
        "## Image metrics",
        "",
        f"- real: `{result['real']['path']}` ({result['real'].get('split') or 'all'}, n={m['n_real']})",
        f"- fake: `{result['fake']['path']}` ({result['fake'].get('split') or 'all'}, n={m['n_fake']})",
        f"- feature space: `{fe['name']}` ({fe['kind']}, D={fe['dim']}); preprocessing: "
        + ", ".join(f"{k}={v}" for k, v in fe["preprocessing"].items() if k not in ("model_dir", "file")),
        f"- statistics over the full sets; 95% bootstrap CIs (n_boot={result['n_boot']}, seed={result['seed']})",
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _rows(result)]
    pf = m.get("per_finding_fd")
    if pf:
        lines += [
            "",
            f"Per-finding FD (images positive for the finding; with N < 2D={2 * m['dim']} these are biased upward: "
            "compare them only between models evaluated on the same sets):",
            "",
            "| finding | FD | 95% CI | n real | n fake |",
            "|---|---|---|---|---|",
        ]
        for name, v in pf.items():
            if "fd" in v:
                lines.append(
                    f"| {name} | {_fmt(v['fd'])} | {_ci(v.get('ci_low'), v.get('ci_high'))} | "
                    f"{v['n_real']} | {v['n_fake']} |"
                )
    for caption, header, rows in _alignment_tables(result):
        lines += ["", caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    if m.get("warnings"):
        lines += ["", *[f"> warning: {w}" for w in m["warnings"]]]
    for name, fname in plots.items():
        lines += ["", f"![{name}]({fname})"]
    return "\n".join(lines) + "\n"


def render_html(
    result: dict[str, Any], plot_paths: dict[str, Path], *, title: str = "unicxr image metrics"
) -> str:
    """Self-contained HTML page (plots embedded as base64 PNG)."""
    esc = html.escape
    fe = result["features"]
    m = result["metrics"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
        "th{background:#f3f3f3}.warn{color:#a60}img{max-width:100%}</style></head><body>",
        f"<h2>{esc(title)}</h2>",
        "<ul>",
        f"<li>real: <code>{esc(result['real']['path'])}</code> ({esc(str(result['real'].get('split') or 'all'))}, "
        f"n={m['n_real']})</li>",
        f"<li>fake: <code>{esc(result['fake']['path'])}</code> ({esc(str(result['fake'].get('split') or 'all'))}, "
        f"n={m['n_fake']})</li>",
        f"<li>feature space: <code>{esc(fe['name'])}</code> ({esc(fe['kind'])}, D={fe['dim']})</li>",
        f"<li>preprocessing: <code>{esc(str(fe['preprocessing']))}</code></li>",
        f"<li>full-set statistics, 95% bootstrap CIs (n_boot={result['n_boot']}, seed={result['seed']})</li>",
        "</ul><table><tr><th>metric</th><th>value</th><th>95% CI</th></tr>",
    ]
    parts += [f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td></tr>" for a, b, c in _rows(result)]
    parts.append("</table>")
    pf = m.get("per_finding_fd")
    if pf and any("fd" in v for v in pf.values()):
        parts.append(
            "<table><tr><th>finding</th><th>FD</th><th>95% CI</th><th>n real</th><th>n fake</th></tr>"
        )
        for name, v in pf.items():
            if "fd" in v:
                parts.append(
                    f"<tr><td>{esc(name)}</td><td>{_fmt(v['fd'])}</td><td>{_ci(v.get('ci_low'), v.get('ci_high'))}"
                    f"</td><td>{v['n_real']}</td><td>{v['n_fake']}</td></tr>"
                )
        parts.append("</table>")
    for caption, header, rows in _alignment_tables(result):
        parts.append(f"<p>{esc(caption)}</p><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    for w in m.get("warnings", []):
        parts.append(f"<p class='warn'>warning: {esc(w)}</p>")
    for name, p in plot_paths.items():
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{data}'></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
