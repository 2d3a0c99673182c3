"""``unicxr bench ...``: side-by-side benchmarks (ratios against baselines)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]

bench_app = typer.Typer(help="Side-by-side benchmarks (JSON + Markdown tables).", no_args_is_help=True,
                        pretty_exceptions_enable=False)


@bench_app.command("generators")
def generators_command(
    cache: Path = typer.Option(..., "--cache", help="Image cache (train/validate/test splits) all families train on."),
    features: str = typer.Option(..., "--features", help="Feature space for FD/alignment, e.g. own:RUN."),
    out: Path = typer.Option(..., "--out", "-o", help="Bench folder (runs, images, eval, bench.json, bench.md)."),
    recipe: list[str] = typer.Option([], "--recipe", help="Recipes to compare (repeatable; default: all four)."),
    set_: list[str] = typer.Option([], "--set", help="Override for every recipe, e.g. --set model.autoencoder=AE."),
    max_minutes: float = typer.Option(None, "--max-minutes", min=0.0, help="Same wall-clock training budget per family."),
    split: str = typer.Option("test", "--split", help="Prompts and real images: this split of the cache."),
    max_prompts: int = typer.Option(None, "--max-prompts", min=1, help="At most this many test prompts."),
    n_boot: int = typer.Option(200, "--n-boot", min=0),
    baseline: str = typer.Option("ddpm_baseline_phantom", "--baseline", help="Recipe the ratios are taken against."),
    seed: int = typer.Option(0, "--seed", min=0),
    snapshots: str = typer.Option(
        "", "--snapshots",
        help="Comma-separated fractions of --max-minutes (e.g. 0.1667,0.3333,0.6667): the non-baseline families "
             "also save and score their weights then (FD against training time, time to reach the baseline's FD)."),
    diversity_prompts: int = typer.Option(
        0, "--diversity-prompts", min=0,
        help="K > 0: MS-SSIM among 8 samples of each of K test prompts vs 8 real images with the same findings."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train every generator family on the same cache and budget, sample the same test prompts, and
    compare FD (with CIs), alignment AUROC, sampling NFE and time against the DDPM baseline. Families whose
    OUT/<recipe>/row.json exists are not run again (run families in parallel with --recipe into one OUT)."""
    from unicxr.bench.generators import DEFAULT_RECIPES, render_table, run_bench
    from unicxr.utils.errors import UnicxrError

    try:
        fracs = tuple(float(x) for x in snapshots.split(",") if x.strip())
    except ValueError:
        raise UnicxrError(f"--snapshots {snapshots!r}: expected comma-separated fractions, e.g. 0.3333") from None
    res = run_bench(cache, features, out, recipes=tuple(recipe) or DEFAULT_RECIPES, overrides=list(set_),
                    max_minutes=max_minutes, split=split, max_prompts=max_prompts, n_boot=n_boot, seed=seed,
                    baseline=baseline, snapshots=fracs, diversity_prompts=diversity_prompts, progress=progress)
    typer.echo(render_table(res))


@bench_app.command("guidance")
def guidance_command(
    model: list[Path] = typer.Option(..., "--model", help="Trained generator run or model dir (repeatable: one curve each)."),
    cache: Path = typer.Option(..., "--cache", help="Image cache: prompts and real images come from its split."),
    features: str = typer.Option(..., "--features", help="Feature space for FD/alignment, e.g. own:RUN."),
    out: Path = typer.Option(..., "--out", "-o", help="Sweep folder (images, sweep.json, sweep.md, pareto.png)."),
    guidance: str = typer.Option("1,1.5,2,3,4,6,8", "--guidance", help="Comma-separated guidance scales."),
    split: str = typer.Option("test", "--split", help="Prompts and real images: this split of the cache."),
    max_prompts: int = typer.Option(128, "--max-prompts", min=1, help="The first N reports of the split."),
    steps: int = typer.Option(None, "--steps", min=1, help="Sampling steps (default: each model's own)."),
    sampler: str = typer.Option(None, "--sampler", help="Sampler (default: each model's own)."),
    n_boot: int = typer.Option(200, "--n-boot", min=0),
    seed: int = typer.Option(0, "--seed", min=0),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Sweep the classifier-free guidance scale of trained generators on the same prompts and seeds:
    FD (with CIs) against alignment AUROC per scale, as a table and a Pareto plot per model."""
    from unicxr.bench.guidance import render_sweep, run_sweep
    from unicxr.utils.errors import UnicxrError

    try:
        scales = tuple(float(g) for g in guidance.split(",") if g.strip())
    except ValueError:
        raise UnicxrError(f"--guidance {guidance!r}: expected comma-separated numbers, e.g. 1,2,4") from None
    res = run_sweep(list(model), cache, features, out, guidances=scales, split=split, max_prompts=max_prompts,
                    steps=steps, sampler=sampler, n_boot=n_boot, seed=seed, progress=progress)
    typer.echo(render_sweep(res))


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> list[str]:
    app.add_typer(bench_app, name="bench")
    return []
