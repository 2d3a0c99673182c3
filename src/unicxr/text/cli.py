"""``unicxr label`` (reports → 14 labels) and ``unicxr eval reports`` (NLG + clinical-efficacy metrics)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "label_command", "eval_reports_command"]

_SECTIONS = "full | impression | findings_impression | raw"


def _section(value: str) -> str:
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

    sec = _section(section)
    if not in_csv.is_file():
        raise UnicxrError(f"{in_csv}: file not found")
    t0 = time.perf_counter()
    if backend == "rule":
        from unicxr.text.labeler import label_csv

        n = label_csv(in_csv, out, text_column, section=sec, progress=progress)
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


def _read(path: Path, what: str):
    import pandas as pd

    from unicxr.utils import UnicxrError

    if not path.is_file():
        raise UnicxrError(f"{what} {path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UnicxrError(f"{what} {path}: cannot read CSV: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def eval_reports_command(
    pred: Path = typer.Option(..., "--pred", "-p", help="CSV of generated reports."),
    ref: Path = typer.Option(..., "--ref", "-r", help="CSV of reference reports."),
    id_column: str = typer.Option(
        "study_id", "--id-column", help="Column joining PRED and REF rows; when neither file has it, rows are "
        "matched by order (equal row counts required)."
    ),
    text_column: str = typer.Option("report", "--text-column", help="Report text column (both files)."),
    pred_text_column: str = typer.Option(None, "--pred-text-column", help="Text column of PRED if it differs."),
    out: Path = typer.Option(Path("report_metrics"), "--out", "-o", help="Output folder for metrics.json + metrics.md."),
    labels: str = typer.Option(
        "text", "--labels",
        help="text: label both report sets with the rule labeler (reproducible CE); columns: use the 14 label "
        "columns present in each CSV.",
    ),
    section: str = typer.Option("full", "--section", help=f"Section given to the labeler ({_SECTIONS})."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for 95% CIs (0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Score generated reports against references: BLEU-1..4, ROUGE-L, CIDEr-D and clinical efficacy.

    CE precision/recall/F1 (micro and macro, 14 findings and the CE5 subset) are given with
    uncertain-as-negative and uncertain-as-positive, plus a per-finding table and bootstrap 95% CIs.
    Writes OUT/metrics.json and OUT/metrics.md.
    """
    import json

    import numpy as np

    from unicxr.eval.report_metrics import evaluate_reports, metrics_markdown
    from unicxr.labels import FINDINGS, labels_from_row
    from unicxr.utils import UnicxrError, atomic_write_text

    sec = _section(section)
    if labels not in ("text", "columns"):
        raise UnicxrError(f"--labels: {labels!r} is not one of text, columns")
    pdf, rdf = _read(pred, "--pred"), _read(ref, "--ref")
    ptext = pred_text_column or text_column
    for df, col, path in ((pdf, ptext, pred), (rdf, text_column, ref)):
        if col not in df.columns:
            raise UnicxrError(f"{path}: text column {col!r} not found; columns are: {', '.join(df.columns)}")
    if id_column in pdf.columns and id_column in rdf.columns:
        for df, path in ((pdf, pred), (rdf, ref)):
            dup = df[id_column][df[id_column].duplicated()]
            if len(dup):
                raise UnicxrError(f"{path}: {id_column} {dup.iloc[0]!r} appears more than once")
        merged = pdf.merge(rdf, on=id_column, how="inner", suffixes=("_pred", "_ref"))
        if merged.empty:
            raise UnicxrError(f"no {id_column} value is shared by {pred} and {ref}")
        missing = len(rdf) - len(merged)
        if missing:
            typer.echo(f"warning: {missing} reference reports have no generated report and are skipped", err=True)
        pidx = pdf.set_index(id_column).loc[merged[id_column]]
        ridx = rdf.set_index(id_column).loc[merged[id_column]]
        pdf, rdf = pidx.reset_index(), ridx.reset_index()
    elif id_column in pdf.columns or id_column in rdf.columns:
        which = ref if id_column in pdf.columns else pred
        raise UnicxrError(f"{which}: id column {id_column!r} not found (it is in the other file)")
    elif len(pdf) != len(rdf):
        raise UnicxrError(f"no {id_column!r} column to join on and {len(pdf)} != {len(rdf)} rows")
    pl = rl = None
    if labels == "columns":
        for df, path in ((pdf, pred), (rdf, ref)):
            miss = [f for f in FINDINGS if f not in df.columns]
            if miss:
                raise UnicxrError(f"{path}: --labels columns needs the 14 label columns; missing {', '.join(miss)}")
        try:
            pl = np.stack([labels_from_row(r) for r in pdf[list(FINDINGS)].to_dict("records")])
            rl = np.stack([labels_from_row(r) for r in rdf[list(FINDINGS)].to_dict("records")])
        except ValueError as exc:
            raise UnicxrError(f"label columns: {exc}") from None
    result = evaluate_reports(
        pdf[ptext].tolist(), rdf[text_column].tolist(), pred_labels=pl, ref_labels=rl,
        n_boot=bootstrap, seed=seed, section=sec,
    )
    result["settings"].update({"pred": str(pred), "ref": str(ref), "labels": labels})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "metrics.md", metrics_markdown(result))
    nlg, ce = result["nlg"], result["ce"]
    typer.echo(
        f"{result['n']} reports: BLEU-4 {nlg['BLEU-4']:.4f}  ROUGE-L {nlg['ROUGE-L']:.4f}  CIDEr-D {nlg['CIDEr-D']:.4f}  "
        f"CE5 micro-F1 {ce['uncertain_as_negative']['ce5']['micro_f1']:.4f} (U-neg) / "
        f"{ce['uncertain_as_positive']['ce5']['micro_f1']:.4f} (U-pos) -> {out}/metrics.json, metrics.md"
    )


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> set[str]:
    """Add ``label`` to the root app and ``reports`` to the ``eval`` group."""
    app.command("label")(label_command)
    groups["eval"].command("reports")(eval_reports_command)
    return {"eval"}
