"""``unicxr label``: reports → 14 labels (``unicxr eval reports`` lives in :mod:`unicxr.eval.cli`)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "label_command", "section_option"]

_SECTIONS = "full | impression | findings_impression | raw"


def section_option(value: str) -> str:
    """Validate a ``--section`` value (shared with ``unicxr eval reports``)."""
    from unicxr.text.labeler import Section
    from unicxr.utils import UnicxrError

    try:
        return Section(value.strip().lower()).value
    except ValueError:
        raise UnicxrError(f"--section: {value!r} is not one of {_SECTIONS}") from None


def label_command(
    in_csv: Path = typer.Argument(..., help="Input CSV with one report per row."),
    text_column: str = typer.Option("report", "--text-column", "-c", help="Column holding the report text."),
    out: Path = typer.Option(..., "--out", "-o", help="Output CSV: IN's columns + the 14 label columns."),
    section: str = typer.Option(
        "full", "--section", "-s",
        help="Part of the report to label: full (findings + impression + unnamed text; indication, history, "
        "comparison and technique are skipped), impression, findings_impression, or raw (whole text).",
    ),
    convention: str = typer.Option(
        "chexpert", "--convention",
        help="Output convention of the rule labeler: chexpert (the CheXpert labeler's: unmentioned findings "
        "blank, e.g. 'lungs are clear' sets nothing; No Finding 1 or blank) or unicxr (earlier output: 'lungs "
        "are clear' negates Lung Opacity, Consolidation, Pneumonia; No Finding 1 or 0).",
    ),
    backend: str = typer.Option("rule", "--backend", help="rule (built-in rule labeler) or chexbert."),
    chexbert: Path = typer.Option(None, "--chexbert", help="Local CheXbert checkpoint directory (--backend chexbert)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Label reports with the 14 CheXpert findings (1 positive, 0 negative, -1 uncertain, blank = not mentioned).

    The rule labeler handles synonyms, negation ("no", "without", "resolved", "removed"), uncertainty
    ("possible", "cannot be excluded", "versus") with clause scope, normal statements ("heart size is
    normal") and CheXpert's No Finding rule. Existing label columns in IN are overwritten. The output
    is written atomically.
    """
    import time

    from unicxr.utils import UnicxrError

    sec = section_option(section)
    if convention not in ("chexpert", "unicxr"):
        raise UnicxrError(f"--convention: {convention!r} is not one of chexpert, unicxr")
    if not in_csv.is_file():
        raise UnicxrError(f"{in_csv}: file not found")
    t0 = time.perf_counter()
    if backend == "rule":
        from unicxr.text.labeler import label_csv

        n = label_csv(in_csv, out, text_column, section=sec, progress=progress, convention=convention)
    elif backend == "chexbert":
        if chexbert is None:
            raise UnicxrError("--backend chexbert needs --chexbert DIR (a local checkpoint directory)")
        n = _label_csv_chexbert(in_csv, out, text_column, sec, chexbert)
    else:
        raise UnicxrError(f"--backend: {backend!r} is not one of rule, chexbert")
    dt = time.perf_counter() - t0
    typer.echo(f"labelled {n} reports in {dt:.1f} s -> {out}")


def _label_csv_chexbert(in_csv: Path, out: Path, text_column: str, section: str, ckpt: Path) -> int:
    import pandas as pd

    from unicxr.labels import FINDINGS, format_label
    from unicxr.text.chexbert import CheXbertLabeler
    from unicxr.text.labeler import select_section
    from unicxr.utils import UnicxrError, atomic_write

    df = pd.read_csv(in_csv, dtype=str, keep_default_na=False)
    if text_column not in df.columns:
        raise UnicxrError(f"{in_csv}: text column {text_column!r} not found; columns are: {', '.join(df.columns)}")
    model = CheXbertLabeler.from_pretrained(ckpt)
    labels = model.label_reports([select_section(t, section) for t in df[text_column]])
    for i, name in enumerate(FINDINGS):
        df[name] = [format_label(float(v)) for v in labels[:, i]]
    with atomic_write(out, "w", encoding="utf-8", newline="") as fh:
        df.to_csv(fh, index=False)
    return len(df)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> set[str]:
    """Add ``label`` to the root app."""
    app.command("label")(label_command)
    return set()
