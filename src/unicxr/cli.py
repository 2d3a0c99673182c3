"""The ``unicxr`` command line (typer).

Each feature package owns its commands in ``unicxr/<package>/cli.py`` with a function
``register(app, groups)`` that adds commands to the root app or to a group (``groups["eval"]``).
Feature CLIs import heavy libraries (torch, pandas) inside the command bodies so that
``unicxr --help`` stays fast.

Errors caused by user input are raised as :class:`unicxr.utils.UnicxrError` and printed as one line
(``error: ...``) with exit code 2; other exceptions keep their traceback (exit 1).
"""

from __future__ import annotations

import importlib
import sys

import typer

from unicxr import __version__
from unicxr.utils.errors import UnicxrError

__all__ = ["app", "main", "groups"]

app = typer.Typer(
    name="unicxr",
    help="Unified chest X-ray understanding and generation: data, models, training, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

eval_app = typer.Typer(
    help="Evaluate generated images, reports and models (JSON + HTML/markdown output).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
groups: dict[str, typer.Typer] = {"eval": eval_app}

# Feature modules, in the order their commands should appear in --help.
_COMMAND_MODULES = (
    "unicxr.phantom.cli",
    "unicxr.data.cli",
    "unicxr.text.cli",
    "unicxr.models.cli",
    "unicxr.train.cli",
    "unicxr.pipelines.cli",
    "unicxr.eval.cli",
    "unicxr.understanding.cli",
    "unicxr.bench.cli",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"unicxr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """unicxr: read and draw chest X-rays."""
    # every command reuses freed image and activation buffers instead of page-faulting fresh ones
    # (a third of a CPU training step's time was system time); UNICXR_MALLOC_TUNING=0 turns it off
    from unicxr.utils.memory import tune_malloc

    tune_malloc()


def _register_all() -> None:
    used_groups: set[str] = set()
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A feature that does not exist yet is simply absent from --help.
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        used = module.register(app, groups)
        used_groups.update(used or ())
    for gname, group in groups.items():
        if gname in used_groups:
            app.add_typer(group, name=gname)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unicxr`` console script."""
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:  # typer/click exit
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return code
    except UnicxrError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


def _console_main() -> None:  # pragma: no cover - thin wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _console_main()
