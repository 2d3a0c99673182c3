"""``unicxr train``: run a recipe (shipped name or YAML path) into a run folder, resuming if possible."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]


def train_command(
    recipe: str = typer.Argument(None, help="Recipe name shipped with unicxr (see --list) or a YAML path."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (checkpoints, logs, final model)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a recipe value, e.g. --set train.lr=1e-4 (repeatable)."
    ),
    resume_from: Path = typer.Option(None, "--resume-from", help="Resume from this checkpoint folder."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start from scratch even if RUN has checkpoints."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    list_: bool = typer.Option(False, "--list", help="List the shipped recipes and exit."),
) -> None:
    """Train a model from a recipe (YAML: task, model, data, train).

    Resumes automatically from the newest checkpoint in --out, bit-exactly on CPU. Multi-process:
    `torchrun --nproc_per_node 2 --no-python unicxr train RECIPE --out RUN`.
    """
    from unicxr.utils.errors import UnicxrError

    if list_:
        from unicxr.train.config import shipped_recipes

        for name in shipped_recipes():
            typer.echo(name)
        return
    if recipe is None or out is None:
        raise UnicxrError("train: give a RECIPE and --out RUN (see unicxr train --help)")
    from unicxr.train.config import load_recipe
    from unicxr.train.trainer import train

    loaded = load_recipe(recipe, list(set_))
    final = train(loaded, out, resume=not no_resume, resume_from=resume_from, progress=progress)
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # Tear the process group down before the interpreter exits: leaving it to process teardown
        # intermittently aborted a gloo rank ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()

    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"model saved to {final}")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> set[str]:
    app.command("train")(train_command)
    return set()
