"""``unicxr report`` (images or a cache split → reports, labels, probabilities) and ``unicxr eval findings``
(per-finding AUROC/AUPRC/F1/ECE of a classifier or a report generator's auxiliary head)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "report_command", "findings_command"]


def report_command(
    images: list[Path] = typer.Argument(None, help="PNG/JPEG/DICOM files (or use --cache/--split)."),
    model: Path = typer.Option(..., "--model", "-m", help="Run folder (model_ema/ or model/) or model directory."),
    cache: Path = typer.Option(None, "--cache", help="A `unicxr prepare` cache to read instead of files."),
    split: str = typer.Option("test", "--split", help="Split of --cache ('all' for everything)."),
    max_items: int = typer.Option(None, "--max-items", min=1, help="Only the first N cache items."),
    out: Path = typer.Option(None, "--out", "-o", help="CSV: path, study_id, report, the 14 label columns, p_<finding>."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (a list of results) to stdout."),
    method: str = typer.Option("greedy", "--method", help="Decoding: greedy, beam or nucleus."),
    num_beams: int = typer.Option(4, "--beams", min=1, help="Beams (--method beam)."),
    max_tokens: int = typer.Option(160, "--max-tokens", min=1, help="Most new tokens per report."),
    min_tokens: int = typer.Option(0, "--min-tokens", min=0, help="End of report banned before this many tokens."),
    length_penalty: float = typer.Option(1.0, "--length-penalty", help="Beam ranking: log p / length^this."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", min=0.01, help=">1 discourages repeats."),
    no_repeat_ngram: int = typer.Option(0, "--no-repeat-ngram", min=0, help="Never repeat an n-gram of this size."),
    top_p: float = typer.Option(0.9, "--top-p", min=0.01, max=1.0, help="Nucleus mass (--method nucleus)."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.01, help="Sampling temperature."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of nucleus sampling."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
    device: str = typer.Option("cpu", "--device", help="Torch device."),
) -> None:
    """Write reports for radiographs: FINDINGS/IMPRESSION text, the 14 labels the rule labeler reads
    in it, and per-finding probabilities when the model has a classifier head.

    A classifier-only model writes the template report of its thresholded labels (the template
    baseline). A file that cannot be read is reported on one stderr line and skipped; the exit code
    is 0 when at least one image was read.
    """
    import json
    import sys

    from unicxr.labels import FINDINGS, format_label
    from unicxr.sampling.decoding import DecodeConfig
    from unicxr.understanding.pipeline import ReportPipeline, result_record
    from unicxr.utils.errors import UnicxrError

    if not images and cache is None:
        raise UnicxrError("give image files or --cache (with --split)")
    if images and cache is not None:
        raise UnicxrError("give image files or --cache, not both")
    try:
        dcfg = DecodeConfig(
            method=method, max_new_tokens=max_tokens, min_new_tokens=min_tokens, num_beams=num_beams,
            length_penalty=length_penalty, repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram, top_p=top_p, temperature=temperature,
        )
    except ValueError as exc:
        raise UnicxrError(f"decoding options: {exc}") from None
    pipe = ReportPipeline(model, device=device, decode=dcfg, seed=seed)
    rejects: list[tuple[str, str]] = []

    def file_items():
        from unicxr.data.io import DecodeError

        for p in images:
            try:
                yield (str(p), ""), pipe.load_file(p)
            except DecodeError as exc:
                typer.echo(f"{p}: skipped: {exc.reason}", err=True)
                rejects.append((str(p), exc.reason))

    def cache_items():
        from unicxr.data.dataset import CXRDataset

        ds = CXRDataset(cache, None if split == "all" else split, size=pipe.image_size, max_items=max_items,
                        fields=("image", "path", "study_id"))
        for i in range(len(ds)):
            it = ds[i]
            yield (it["path"], it["study_id"]), it["image"]

    source = cache_items() if cache is not None else file_items()
    from tqdm.auto import tqdm

    records = []
    bar = tqdm(desc="report", unit="img", disable=as_json or not sys.stderr.isatty())
    for (path, study), res in pipe.read_batches(source, batch_size=batch_size):
        rec = result_record(path, study, res)
        records.append(rec)
        bar.update(1)
        if not as_json:
            pos = [n for n, v in rec["labels"].items() if v == 1]
            unc = [n for n, v in rec["labels"].items() if v == -1]
            typer.echo(f"== {path}" + (f" (study {study})" if study else ""))
            typer.echo(rec["report"].replace(" IMPRESSION:", "\nIMPRESSION:"))
            typer.echo(f"labels: positive [{', '.join(pos) or 'none'}]; uncertain [{', '.join(unc) or 'none'}]")
            if "probabilities" in rec:
                top = sorted(rec["probabilities"].items(), key=lambda kv: -kv[1])[:5]
                typer.echo("probabilities: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
            typer.echo("")
    bar.close()
    if as_json:
        typer.echo(json.dumps(records, indent=2))
    if out is not None:
        import pandas as pd

        from unicxr.utils.io import atomic_write_text

        rows = []
        for rec in records:
            row = {"path": rec["path"], "study_id": rec["study_id"], "report": rec["report"]}
            row.update({n: format_label(float("nan") if v is None else v) for n, v in rec["labels"].items()})
            for n, v in rec.get("probabilities", {}).items():
                row[f"p_{n}"] = v
            rows.append(row)
        cols = ["path", "study_id", "report", *FINDINGS]
        df = pd.DataFrame(rows, columns=cols + [c for c in (rows[0] if rows else {}) if c not in cols])
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, df.to_csv(index=False))
        typer.echo(f"wrote {len(rows)} reports to {out}", err=True)
    if rejects:
        typer.echo(f"{len(rejects)} file(s) skipped", err=True)
    if not records:
        typer.echo("error: no image could be read", err=True)
        raise typer.Exit(1)


def findings_command(
    model: Path = typer.Option(..., "--model", "-m", help="Run folder or model directory (classifier or report generator)."),
    cache: Path = typer.Option(..., "--cache", help="A `unicxr prepare` cache."),
    split: str = typer.Option("test", "--split", help="Split to evaluate ('all' for everything)."),
    policy: str = typer.Option("ignore", "--policy", help="Uncertain labels: ignore, uncertain_as_positive, uncertain_as_negative."),
    min_count: int = typer.Option(20, "--min-count", min=1, help="Macro scores over findings with this many positives (and negatives)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the JSON here too."),
) -> None:
    """Per-finding AUROC, AUPRC, F1 at the model's stored thresholds and calibration (ECE, 10 bins),
    plus macro scores: prints a Markdown table and JSON."""
    import json
    import math

    import numpy as np
    import torch

    from unicxr.data.dataset import CXRDataset
    from unicxr.labels import UncertainPolicy
    from unicxr.models import load_model
    from unicxr.models.finding_metrics import finding_table, summary_metrics
    from unicxr.understanding.pipeline import resolve_model_dir
    from unicxr.utils.errors import UnicxrError
    from unicxr.utils.io import atomic_write_text

    try:
        pol = UncertainPolicy(policy)
    except ValueError:
        raise UnicxrError(f"--policy: {policy!r} is not one of ignore, uncertain_as_positive, uncertain_as_negative") from None
    mdir = resolve_model_dir(model)
    net = load_model(mdir).eval()
    if net.model_type == "cxr_finding_classifier":
        def probs_of(x: torch.Tensor) -> torch.Tensor:
            return net.probabilities(x)
        thresholds = net.config.thresholds
    elif net.model_type == "cxr_report_generator" and net.aux_head is not None:
        def probs_of(x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(net.aux_head(net.encoder(x)[1]).float())
        thresholds = None
    else:
        raise UnicxrError(f"--model {mdir}: {net.model_type!r} has no finding classifier head")
    ds = CXRDataset(cache, None if split == "all" else split, size=net.config.image_size, policy=pol, fields=("image",))
    probs, targets = [], []
    with torch.no_grad():
        for s in range(0, len(ds), 64):
            items = [ds[i] for i in range(s, min(len(ds), s + 64))]
            probs.append(probs_of(torch.stack([it["image"] for it in items])).numpy())
            targets.append(torch.stack([it["target"] for it in items]).numpy())
    p, t = np.concatenate(probs), np.concatenate(targets)
    rows = finding_table(p, t, thresholds)
    summ = summary_metrics(p, t, thresholds, min_count=min_count)

    def f(v: float) -> str:
        return "—" if not math.isfinite(v) else f"{v:.3f}"

    lines = ["| finding | n | positives | AUROC | AUPRC | F1 @ thr | thr | ECE | in macro |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        used = min(r["positives"], r["n"] - r["positives"]) >= min_count and math.isfinite(r["auroc"])
        lines.append(f"| {r['finding']} | {r['n']} | {r['positives']} | {f(r['auroc'])} | {f(r['auprc'])} | "
                     f"{f(r['f1'])} | {r['threshold']:.2f} | {f(r['ece'])} | {'yes' if used else ''} |")
    lines.append(f"| **macro ({int(summ['n_macro_findings'])} findings)** | | | {f(summ['macro_auroc'])} | "
                 f"{f(summ['macro_auprc'])} | {f(summ['macro_f1'])} | | {f(summ['macro_ece'])} | |")
    lines.append(f"\nECE over all finding entries: {f(summ['ece'])}")
    res = {"model": str(mdir), "cache": str(cache), "split": split, "policy": pol.value, "n": len(ds),
           "per_finding": rows, **{k: summ[k] for k in ("macro_auroc", "macro_auprc", "macro_f1", "macro_ece", "ece", "n_macro_findings")}}
    text = json.dumps(res, indent=2, default=lambda v: None)
    text = text.replace("NaN", "null")
    if out is not None:
        atomic_write_text(out, text + "\n")
    typer.echo("\n".join(lines))


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> set[str]:
    """Add ``report`` to the root app and ``findings`` to the ``eval`` group."""
    app.command("report")(report_command)
    groups["eval"].command("findings")(findings_command)
    return {"eval"}
