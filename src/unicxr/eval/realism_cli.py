"""``unicxr eval realism``: global image statistics of fake vs real images (no network needed)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["realism_command"]


def realism_command(
    real: Path = typer.Option(..., "--real", help="Real images: a `unicxr prepare` cache or an image folder."),
    fake: Path = typer.Option(..., "--fake", help="Fake images (phantom or generated): a cache or an image folder."),
    out: Path = typer.Option(Path("eval_realism"), "--out", "-o", help="Output folder (realism.json, report.md/html)."),
    real_split: str = typer.Option("all", "--real-split", help="Split of --real to use ('all' for everything)."),
    fake_split: str = typer.Option("all", "--fake-split", help="Split of --fake to use ('all' for everything)."),
    size: int = typer.Option(256, "--size", min=32, help="Square side every image is resized to."),
    max_images: int = typer.Option(None, "--max-images", min=1, help="Use a seeded random subset of each set."),
    tolerance: float = typer.Option(
        0.5, "--tolerance", min=0.0, help="Widen the real min..max by this x max(real spread, floor) per side."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of --max-images subsampling."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Compare fake images with real ones by global statistics (intensity quantiles, power-spectrum slope,
    edge density, symmetry, regional contrasts ...): fraction of fakes inside the real range, histograms.

    Writes OUT/realism.json, OUT/report.md, OUT/report.html and histogram plots.
    """
    import json

    from unicxr.eval.realism import evaluate_realism

    res = evaluate_realism(real, fake, out, real_split=real_split, fake_split=fake_split, max_images=max_images,
                           size=size, tolerance=tolerance, seed=seed, progress=progress,
                           log=lambda s: typer.echo(s, err=True))
    c = res["comparison"]
    summary = {"n_real": res["n_real"], "n_fake": res["n_fake"],
               "mean_inside": round(c["_summary"]["mean_inside"], 4),
               "inside": {k: round(v["inside"], 3) for k, v in c.items() if not k.startswith("_")}}
    typer.echo(json.dumps(summary))
