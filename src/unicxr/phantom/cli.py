"""``unicxr phantom``: write a simulated chest X-ray data set with labels, reports and masks."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "phantom"]


def phantom(
    n: int = typer.Option(100, "--n", help="Number of images to simulate."),
    size: int = typer.Option(256, "--size", help="Image side in pixels (square images)."),
    seed: int = typer.Option(0, "--seed", help="Master seed; same arguments and seed give byte-identical files."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    layout: str = typer.Option(
        "unicxr", "--layout", help="Folder/CSV layout: unicxr (metadata.csv + images/), mimic-cxr-jpg or chexpert."
    ),
    masks: bool = typer.Option(False, "--masks", help="Also write anatomy/finding masks (unicxr layout)."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="8 or 16 (16-bit PNG, unicxr layout only)."),
    workers: int = typer.Option(2, "--workers", help="Worker processes (output does not depend on it)."),
    preview: Path | None = typer.Option(None, "--preview", help="Write a labelled contact sheet of the first 16 cases here (PNG)."),
    prevalence: list[str] | None = typer.Option(
        None, "--prevalence", help="Override a finding's base rate, e.g. --prevalence Cardiomegaly=0.3 (repeatable)."
    ),
) -> None:
    """Simulate frontal chest radiographs with ground-truth labels, reports and masks.

    Writes DIR/metadata.csv and DIR/images/*.png (unicxr layout) or the MIMIC-CXR-JPG / CheXpert
    folder and CSV structure. Labels: 1 present, -1 subtle (hedged in the report), 0 negated in the
    report, blank not mentioned.
    """
    import time

    import numpy as np

    from unicxr.phantom.config import PhantomConfig, parse_prevalence
    from unicxr.phantom.preview import caption_for, contact_sheet
    from unicxr.phantom.writer import write_dataset

    cfg = PhantomConfig().with_prevalence(parse_prevalence(prevalence))
    t0 = time.perf_counter()
    rows = write_dataset(out, n, size, seed, cfg, layout=layout, masks=masks, bit_depth=bit_depth, workers=workers)
    dt = time.perf_counter() - t0
    typer.echo(f"wrote {len(rows)} images to {out} ({layout}) in {dt:.1f} s ({len(rows) / max(dt, 1e-9):.1f} images/s)")
    if preview is not None:
        from PIL import Image

        k = min(16, len(rows))
        imgs = [np.asarray(Image.open(out / str(r["image_path"])).convert("L")) for r in rows[:k]]
        caps = [caption_for(r["_labels"]) for r in rows[:k]]  # type: ignore[arg-type]
        contact_sheet(imgs, caps, preview)
        typer.echo(f"preview: {preview}")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> set[str]:
    """Add ``unicxr phantom`` to the root app."""
    app.command("phantom")(phantom)
    return set()
