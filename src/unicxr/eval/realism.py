"""Global image statistics of a fake image set against a real one (no trained network needed).

``unicxr eval realism --real R --fake F --out DIR`` computes, for every image (brought to one square
size), a set of simple statistics that separate real chest radiographs from simulated or generated
ones: intensity quantiles and bright/dark fractions, the slope of the radial power spectrum, edge
density, gradient and Laplacian energy, left/right symmetry, and regional contrasts measured in
fixed boxes (mediastinum vs lungs, abdomen vs lungs). For each statistic it reports the fraction of
fake images inside the real images' range and the distance of the fake median from the real mean in
real standard deviations, plus histograms, as JSON, Markdown and HTML.

Range: real sets are often small, so the range is the real minimum-maximum widened on both sides by
``tolerance`` times ``max(real max - real min, real std, floor)``, where ``floor`` is a fixed,
per-statistic scale of natural variation (listed in :data:`STATISTICS`). With two real images the
range is mostly set by the floors; with hundreds it is set by the data.

Regions (fractions of the image side, rows x columns), for roughly centred frontal views:
mediastinum rows 0.30-0.65 x columns 0.45-0.55; lungs rows 0.25-0.55 x columns 0.18-0.33 and
0.67-0.82; abdomen rows 0.85-0.97 x columns 0.30-0.70.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STATISTICS", "Statistic", "image_statistics", "statistics_of_set", "compare", "evaluate_realism",
           "render_markdown", "render_html"]


@dataclass(frozen=True)
class Statistic:
    """One global statistic: its key, a one-line description and its natural-variation floor."""

    key: str
    description: str
    floor: float


_Q = (1, 5, 25, 50, 75, 95, 99)
STATISTICS: tuple[Statistic, ...] = (
    *(Statistic(f"q{q:02d}", f"{q}th percentile of intensity", 0.05) for q in _Q),
    Statistic("mean", "mean intensity", 0.05),
    Statistic("std", "standard deviation of intensity", 0.03),
    Statistic("bright_frac", "fraction of pixels > 0.75 (bone, mediastinum, abdomen)", 0.05),
    Statistic("dark_frac", "fraction of pixels < 0.25 (air, lungs)", 0.05),
    Statistic("entropy", "intensity histogram entropy (bits, 64 bins)", 0.2),
    Statistic("psd_slope", "radial power spectrum slope, 4 to size/8 cycles/image (log-log)", 0.3),
    Statistic("psd_slope_high", "radial power spectrum slope, size/8 to size/2 cycles/image", 0.4),
    Statistic("hf_energy", "log10 fraction of spectral power above size/8 cycles/image", 0.3),
    Statistic("edge_density", "fraction of pixels with gradient > 0.04/px after a sigma=1 px blur", 0.03),
    Statistic("grad_mean", "mean gradient magnitude per pixel (sigma=1 px blur)", 0.003),
    Statistic("lap_energy", "log10 variance of the Laplacian (fine structure and noise)", 0.3),
    Statistic("symmetry", "correlation of the central 80% with its left/right mirror image", 0.05),
    Statistic("medi_lung", "median(mediastinum box) - median(lung boxes)", 0.05),
    Statistic("abdomen_lung", "median(abdomen box) - median(lung boxes)", 0.05),
    Statistic("lung_texture", "std of high-pass (sigma 2 px) intensity inside the lung boxes", 0.005),
    Statistic("top_bottom", "mean of the bottom third - mean of the top third", 0.05),
)
STAT_KEYS = tuple(s.key for s in STATISTICS)


def _box(img: np.ndarray, r0: float, r1: float, c0: float, c1: float) -> np.ndarray:
    n, m = img.shape
    return img[int(r0 * n) : max(int(r1 * n), int(r0 * n) + 1), int(c0 * m) : max(int(c1 * m), int(c0 * m) + 1)]


def _radial_psd(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum (Hann-windowed, mean removed): (frequencies in cycles/image, power)."""
    n = img.shape[0]
    w = np.hanning(n)
    x = (img - img.mean()) * np.outer(w, w)
    p = np.abs(np.fft.fftshift(np.fft.fft2(x))) ** 2
    yy, xx = np.indices(p.shape)
    r = np.hypot(yy - n // 2, xx - n // 2).astype(np.int64)
    cnt = np.bincount(r.ravel())
    tot = np.bincount(r.ravel(), weights=p.ravel())
    k = np.arange(1, n // 2)
    return k.astype(np.float64), tot[1 : n // 2] / np.maximum(cnt[1 : n // 2], 1)


def _slope(f: np.ndarray, p: np.ndarray, lo: float, hi: float) -> float:
    sel = (f >= lo) & (f <= hi) & (p > 0)
    if sel.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)[0])


def image_statistics(img: np.ndarray) -> dict[str, float]:
    """All statistics of one square image.

    Args:
        img: float (N, N) in [0, 1], bright = attenuating (as radiographs are displayed).

    Returns:
        ``{key: value}`` for every key of :data:`STATISTICS`.
    """
    from scipy import ndimage

    x = np.asarray(img, dtype=np.float64)
    n = x.shape[0]
    out: dict[str, float] = {}
    qs = np.percentile(x, _Q)
    out.update({f"q{q:02d}": float(v) for q, v in zip(_Q, qs, strict=True)})
    out["mean"] = float(x.mean())
    out["std"] = float(x.std())
    out["bright_frac"] = float(np.mean(x > 0.75))
    out["dark_frac"] = float(np.mean(x < 0.25))
    h, _ = np.histogram(x, bins=64, range=(0.0, 1.0))
    pr = h[h > 0] / h.sum()
    out["entropy"] = float(-(pr * np.log2(pr)).sum())
    f, p = _radial_psd(x)
    out["psd_slope"] = _slope(f, p, 4, n / 8)
    out["psd_slope_high"] = _slope(f, p, n / 8, n / 2)
    out["hf_energy"] = float(np.log10(max(p[f > n / 8].sum() / max(p.sum(), 1e-30), 1e-12)))
    # gradients are in intensity per pixel of a 256-px image whatever the size, so sets compare
    scale = n / 256.0
    xs = ndimage.gaussian_filter(x, 1.0 * scale)
    gy, gx = ndimage.sobel(xs, 0) / 8.0, ndimage.sobel(xs, 1) / 8.0
    g = np.hypot(gx, gy) * scale
    out["edge_density"] = float(np.mean(g > 0.04))
    out["grad_mean"] = float(g.mean())
    out["lap_energy"] = float(np.log10(max(float(ndimage.laplace(x).var()), 1e-12)))
    e = int(0.1 * n)
    c = x[e : n - e, e : n - e]  # symmetric about the centre column
    a, b = c - c.mean(), c[:, ::-1] - c.mean()
    out["symmetry"] = float((a * b).sum() / max(math.sqrt((a * a).sum() * (b * b).sum()), 1e-12))
    lungs = np.concatenate([_box(x, 0.25, 0.55, 0.18, 0.33).ravel(), _box(x, 0.25, 0.55, 0.67, 0.82).ravel()])
    lung = float(np.median(lungs))
    out["medi_lung"] = float(np.median(_box(x, 0.3, 0.65, 0.45, 0.55))) - lung
    out["abdomen_lung"] = float(np.median(_box(x, 0.85, 0.97, 0.3, 0.7))) - lung
    hp = x - ndimage.gaussian_filter(x, 2.0 * scale)
    out["lung_texture"] = float(np.concatenate([_box(hp, 0.25, 0.55, 0.18, 0.33).ravel(),
                                                _box(hp, 0.25, 0.55, 0.67, 0.82).ravel()]).std())
    out["top_bottom"] = float(x[2 * n // 3 :].mean() - x[: n // 3].mean())
    return out


def _images(path: Path, split: str | None, max_images: int | None, size: int, seed: int,
            progress: bool) -> Iterable[np.ndarray]:
    import torch

    from unicxr.data.image_sets import open_image_set

    ds = open_image_set(path, split=split, max_images=max_images, seed=seed)
    it: Iterable[int] = range(len(ds))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"statistics {path.name}", leave=False)
    for i in it:
        img = ds[i]["image"]
        if img.shape[-2:] != (size, size):
            img = torch.nn.functional.interpolate(img[None].float(), size=(size, size), mode="bilinear",
                                                  align_corners=False, antialias=True)[0]
        yield img[0].clamp(0, 1).numpy()


def statistics_of_set(
    path: str | Path, *, split: str | None = None, max_images: int | None = None, size: int = 256,
    seed: int = 0, progress: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Statistics of every image of a cache or folder.

    Returns:
        ``({key: (N,) values}, mean pixel histogram (64,))``.
    """
    rows: list[dict[str, float]] = []
    hist = np.zeros(64)
    for img in _images(Path(path), split, max_images, size, seed, progress):
        rows.append(image_statistics(img))
        hist += np.histogram(img, bins=64, range=(0.0, 1.0))[0] / img.size
    return {k: np.array([r[k] for r in rows]) for k in STAT_KEYS}, hist / max(len(rows), 1)


def compare(real: dict[str, np.ndarray], fake: dict[str, np.ndarray], tolerance: float = 0.5) -> dict[str, Any]:
    """Per statistic: real range (widened, see module docstring), fraction of fakes inside, z-distance.

    Returns:
        ``{key: {real_min, real_max, real_mean, real_std, lo, hi, fake_median, fake_p05, fake_p95,
        inside, z}}`` plus ``"_summary"`` with the mean fraction inside.
    """
    out: dict[str, Any] = {}
    for st in STATISTICS:
        r = real[st.key][np.isfinite(real[st.key])]
        f = fake[st.key][np.isfinite(fake[st.key])]
        if r.size == 0 or f.size == 0:
            out[st.key] = {"inside": float("nan"), "z": float("nan")}
            continue
        rmin, rmax, rmean, rstd = float(r.min()), float(r.max()), float(r.mean()), float(r.std())
        widen = tolerance * max(rmax - rmin, rstd, st.floor)
        lo, hi = rmin - widen, rmax + widen
        med = float(np.median(f))
        out[st.key] = {
            "real_min": rmin, "real_max": rmax, "real_mean": rmean, "real_std": rstd, "lo": lo, "hi": hi,
            "fake_median": med, "fake_p05": float(np.percentile(f, 5)), "fake_p95": float(np.percentile(f, 95)),
            "inside": float(np.mean((f >= lo) & (f <= hi))),
            "z": (med - rmean) / max(rstd, st.floor),
        }
    vals = [v["inside"] for k, v in out.items() if np.isfinite(v["inside"])]
    out["_summary"] = {"mean_inside": float(np.mean(vals)) if vals else float("nan"), "tolerance": tolerance}
    return out


def _plots(real: dict[str, np.ndarray], fake: dict[str, np.ndarray], cmp: dict[str, Any], hist_r: np.ndarray,
           hist_f: np.ndarray, out: Path) -> dict[str, Path]:
    from unicxr.eval.image_report import pyplot, save_figure

    plt = pyplot()

    def save(fig: Any, name: str) -> Path:
        return save_figure(fig, out / name, dpi=90)

    paths: dict[str, Path] = {}
    fig, ax = plt.subplots(figsize=(6, 3))
    x = (np.arange(64) + 0.5) / 64
    ax.plot(x, hist_r, label="real", color="#1f77b4")
    ax.plot(x, hist_f, label="fake", color="#ff7f0e")
    ax.set_xlabel("intensity")
    ax.set_ylabel("fraction of pixels")
    ax.set_title("mean pixel-intensity histogram", fontsize=9)
    ax.legend(fontsize=8)
    paths["intensity histogram"] = save(fig, "intensity_hist.png")
    cols = 5
    rows = math.ceil(len(STATISTICS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows))
    for ax, st in zip(axes.ravel(), STATISTICS, strict=False):
        f = fake[st.key][np.isfinite(fake[st.key])]
        r = real[st.key][np.isfinite(real[st.key])]
        c = cmp[st.key]
        if f.size:
            ax.hist(f, bins=25, color="#ff7f0e", alpha=0.7, label="fake")
        if "lo" in c:
            ax.axvspan(c["lo"], c["hi"], color="#1f77b4", alpha=0.12, label="real range")
        for v in r:
            ax.axvline(v, color="#1f77b4", lw=1.2)
        ax.set_title(f"{st.key} ({100 * c['inside']:.0f}% in)", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(STATISTICS) :]:
        ax.axis("off")
    fig.tight_layout()
    paths["per-statistic histograms"] = save(fig, "statistics_hist.png")
    return paths


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.4g}"


def _table_rows(cmp: dict[str, Any]) -> list[list[str]]:
    rows = []
    for st in STATISTICS:
        c = cmp[st.key]
        if "lo" not in c:
            rows.append([st.key, st.description, "", "", "", "nan", "nan"])
            continue
        rows.append([st.key, st.description, f"{_fmt(c['real_min'])} .. {_fmt(c['real_max'])}",
                     f"{_fmt(c['lo'])} .. {_fmt(c['hi'])}",
                     f"{_fmt(c['fake_median'])} [{_fmt(c['fake_p05'])}, {_fmt(c['fake_p95'])}]",
                     f"{100 * c['inside']:.0f}%", f"{c['z']:+.2f}"])
    return rows


_HEAD = ["statistic", "what", "real min..max", "accepted range", "fake median [p5, p95]", "fake inside", "z"]


def _notes(result: dict[str, Any]) -> list[str]:
    t = result["comparison"]["_summary"]["tolerance"]
    return [
        f"real: `{result['real']}` (n={result['n_real']}); fake: `{result['fake']}` (n={result['n_fake']}); "
        f"images resized to {result['size']} px.",
        f"accepted range = real min..max widened on each side by {t} x max(real max - real min, real std, floor);"
        " floors (natural variation per statistic) are listed in unicxr.eval.realism.STATISTICS. "
        "z = (fake median - real mean) / max(real std, floor).",
        "Region boxes (fractions of the side): mediastinum rows .30-.65 x cols .45-.55; lungs rows .25-.55 x "
        "cols .18-.33 and .67-.82; abdomen rows .85-.97 x cols .30-.70 (assumes centred frontal views).",
        f"mean fraction of fake images inside the accepted range over all statistics: "
        f"{100 * result['comparison']['_summary']['mean_inside']:.1f}%",
    ]


def render_markdown(result: dict[str, Any], plots: dict[str, Path]) -> str:
    """Markdown report: notes, the statistics table and links to the histogram plots."""
    lines = ["# Realism statistics (fake vs real)", "", *[f"- {s}" for s in _notes(result)], "",
             "| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in _table_rows(result["comparison"])]
    if result["n_real"] < 10:
        lines += ["", f"> warning: only {result['n_real']} real images; the accepted ranges are mostly set by "
                      "the floors, not by the real data."]
    lines += ["", *[f"![{k}]({p.name})" for k, p in plots.items()]]
    return "\n".join(lines) + "\n"


def render_html(result: dict[str, Any], plots: dict[str, Path]) -> str:
    """Self-contained HTML report (plots embedded)."""
    import base64

    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>unicxr realism</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;font-size:90%}"
             "th{background:#f3f3f3}.bad{color:#b00}img{max-width:100%}</style></head><body>",
             "<h2>Realism statistics (fake vs real)</h2><ul>"]
    parts += [f"<li>{esc(s.replace('`', ''))}</li>" for s in _notes(result)]
    parts.append("</ul><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _HEAD) + "</tr>")
    for r in _table_rows(result["comparison"]):
        bad = r[5].endswith("%") and float(r[5][:-1]) < 50
        parts.append("<tr>" + "".join(f"<td{' class=bad' if bad and i == 5 else ''}>{esc(c)}</td>"
                                      for i, c in enumerate(r)) + "</tr>")
    parts.append("</table>")
    for k, p in plots.items():
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{esc(k)}' src='data:image/png;base64,{data}'><figcaption>{esc(k)}"
                     "</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def evaluate_realism(
    real: str | Path, fake: str | Path, out: str | Path, *, real_split: str | None = None,
    fake_split: str | None = None, max_images: int | None = None, size: int = 256, tolerance: float = 0.5,
    seed: int = 0, progress: bool = False, plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compute both sets' statistics, compare them and write ``realism.json``, ``report.md``, ``report.html``.

    Returns:
        The result dict written to ``realism.json``.
    """
    from unicxr.utils.io import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rs, hr = statistics_of_set(real, split=real_split, max_images=max_images, size=size, seed=seed,
                               progress=progress)
    fs, hf = statistics_of_set(fake, split=fake_split, max_images=max_images, size=size, seed=seed,
                               progress=progress)
    cmp = compare(rs, fs, tolerance)
    result = {"real": str(real), "fake": str(fake), "n_real": len(rs["mean"]), "n_fake": len(fs["mean"]),
              "size": size, "comparison": cmp,
              "statistics": {st.key: {"description": st.description, "floor": st.floor} for st in STATISTICS},
              "real_values": {k: v.tolist() for k, v in rs.items()}}
    figs = _plots(rs, fs, cmp, hr, hf, out) if plots else {}
    atomic_write_text(out / "realism.json", json.dumps(result, indent=1, allow_nan=True))
    atomic_write_text(out / "report.md", render_markdown(result, figs))
    atomic_write_text(out / "report.html", render_html(result, figs))
    if log is not None:
        log(f"wrote {out / 'realism.json'}, {out / 'report.md'}, {out / 'report.html'}")
    return result
