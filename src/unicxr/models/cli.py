"""``unicxr encode``: a latent cache of a ``unicxr prepare`` cache, written by a trained autoencoder."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "encode_command"]


def encode_command(
    model: Path = typer.Option(..., "--model", help="Autoencoder run folder (uses model/) or model directory."),
    cache: Path = typer.Option(..., "--cache", help="A `unicxr prepare` cache."),
    out: Path = typer.Option(..., "--out", "-o", help="Latent cache folder (resumes when it holds a partial one)."),
    split: str = typer.Option(None, "--split", help="Encode only this split (default: all)."),
    size: int = typer.Option(None, "--size", min=8, help="Resize the images to this side before encoding "
                             "(default: the cache's size), e.g. for a generator's low-resolution phase."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per encoder call."),
    shard_size: int = typer.Option(0, "--shard-size", min=0, help="Items per shard (0: automatic)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a latent cache made with other settings."),
    num_threads: int = typer.Option(None, "--num-threads", min=1, help="torch intra-op threads."),
    device: str = typer.Option("cpu", "--device", help="Torch device (cpu, cuda)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Encode every image of a cache with a trained autoencoder into a latent cache.

    KL models store posterior means and log-variances, VQ models code indices (+ the codebook); every
    item keeps its labels, report, path and split. Read it with `from unicxr.data import LatentCache`.
    Atomic and resumable like `unicxr prepare`; the manifest records the autoencoder and its hashes.
    """
    import torch

    from unicxr.data.latent_cache import write_latent_cache
    from unicxr.models.autoencoder import load_autoencoder

    if num_threads:
        torch.set_num_threads(num_threads)
    ae, model_dir = load_autoencoder(model, device=device)
    if ae.config.scale_factor is None:
        typer.echo(f"warning: {model_dir}: no latent scale factor in config.json; using 1.0", err=True)
    write_latent_cache(ae, model_dir, cache, out, split=split, size=size, batch_size=batch_size, shard_size=shard_size,
                       overwrite=overwrite, log=lambda m: typer.echo(m, err=True), progress=progress)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> set[str]:
    """Add ``unicxr encode``."""
    app.command("encode")(encode_command)
    return set()
